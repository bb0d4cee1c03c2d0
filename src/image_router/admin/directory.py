"""The accounts directory of the operator: list and search, e-mails masked unless a reason is
given. Showing them in full appends an `operator_list` audit entry (the fields shown, the
reason, never the values), exactly as `image-router users list --reason` does.

Search: an e-mail address finds its account through the blind index (nothing decrypted but
the page shown); anything else matches the start of an account id. With a reason, a search
also matches any part of an e-mail, which decrypts every address (and is audited).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account.personal_data import Vault
from image_router.account.service import AccountError, normalise_email
from image_router.admin.credits import Operator, checked_reason
from image_router.db.tables import Account
from image_router.privacy import audit

LIST_ACTION = "operator_list"


@dataclass(frozen=True)
class Listed:
    id: str
    email: str  # masked unless the listing was given a reason
    role: str
    status: str
    balance: int
    created_at: datetime


@dataclass(frozen=True)
class Listing:
    accounts: list[Listed]
    total: int  # matching accounts, all pages
    unmasked: bool


def masked(email: str) -> str:
    """`a***@example.com`: enough to recognise an account, not to read the address."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else ("***" if email else "(erased)")


_COLUMNS = (
    Account.id,
    Account.email_enc,
    Account.role,
    Account.status,
    Account.balance,
    Account.created_at,
)


def _matching(vault: Vault, query: str) -> ColumnElement[bool]:
    query = query.strip()
    if not query:
        return true()
    if "@" in query:
        try:
            return Account.email_bidx == vault.email_index(normalise_email(query))
        except AccountError:
            return Account.id == ""  # not an address: matches nothing
    return Account.id.startswith(query.lower(), autoescape=True)


async def _listed(vault: Vault, row: Any, *, unmasked: bool) -> Listed:
    email = await vault.open(row.id, row.email_enc) or ""
    return Listed(
        id=row.id,
        email=email if unmasked else masked(email),
        role=row.role,
        status=row.status,
        balance=int(row.balance),
        created_at=row.created_at,
    )


async def list_accounts(
    conn: AsyncConnection,
    vault: Vault,
    *,
    by: Operator,
    query: str = "",
    reason: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> Listing:
    """Accounts, newest first, matching `query`; e-mails in full only with a `reason`."""
    why = None if reason is None else checked_reason(reason)
    newest = select(*_COLUMNS).order_by(Account.created_at.desc(), Account.id)
    if why is not None and query.strip() and "@" not in query:
        # Part of an address, or of an id: every address is opened to look.
        needle = query.strip().lower()
        found = []
        for row in (await conn.execute(newest)).all():
            shown = await _listed(vault, row, unmasked=True)
            if needle in shown.email.lower() or row.id.startswith(needle):
                found.append(shown)
        page = found[offset : None if limit is None else offset + limit]
        total = len(found)
    else:
        where = _matching(vault, query)
        total = int(await conn.scalar(select(func.count()).select_from(Account).where(where)) or 0)
        rows = (await conn.execute(newest.where(where).offset(offset).limit(limit))).all()
        page = [await _listed(vault, row, unmasked=why is not None) for row in rows]
    if why is not None:
        await audit.record(
            conn,
            actor_type="operator",
            actor_id=by.actor_id,
            subject_account_id=None,
            action=LIST_ACTION,
            fields=("email",),
            reason=why,
            request_id=by.request_id,
        )
    return Listing(page, total, unmasked=why is not None)


async def get_listed(conn: AsyncConnection, vault: Vault, account_id: str) -> Listed | None:
    """One account as the directory shows it (e-mail masked)."""
    row = (await conn.execute(select(*_COLUMNS).where(Account.id == account_id))).first()
    return None if row is None else await _listed(vault, row, unmasked=False)
