"""Accounts and API keys.

Keys are shown once and stored as a SHA-256 hash with a display prefix and last four
characters. A revoked, disabled or expired key stops working at the next request: the
API edge remembers a key for a few seconds at most (`key_cache.py`), and every change to
keys or accounts clears that cache in every process before the change's call returns.
`last_used_at` is written at most once a minute per key. Management keys manage an
account's keys (`/v1/api-keys`) and cannot generate; any key may carry a spend limit
(`spend_limits.py`) and an expiry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account.personal_data import Vault
from image_router.account.spend_limits import PERIODS
from image_router.db.driver import PgConnection, pg_statement
from image_router.db.tables import API_KEYS, Account, ApiKey
from image_router.kit.clock import utcnow
from image_router.kit.ids import hash_secret, new_api_key, new_id

LAST_USED_RESOLUTION = timedelta(minutes=1)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


class AccountError(ValueError):
    """Bad input to an account operation; the message is meant for the person."""


@dataclass(frozen=True)
class Caller:
    """Who is making an API request."""

    account_id: str
    balance: int
    api_key_id: str | None
    via_web_token: bool = False
    allow_routing_improvement: bool = True
    is_management: bool = False
    # Credits per period; the period and the spend are read when a request is held.
    spend_limit: int | None = None
    store_prompts: bool = True  # may this account's prompts be stored (sealed)?
    restricted: bool = False  # processing restricted (Art. 18): no generation
    guest: bool = False  # the shared guest account of website tokens (per-IP free cap only)


@dataclass(frozen=True)
class AccountView:
    id: str
    email: str
    name: str | None
    role: str
    balance: int
    created_at: datetime
    status: str = "active"


@dataclass(frozen=True)
class KeyView:
    id: str
    name: str
    prefix: str
    last_four: str
    is_active: bool
    created_at: datetime
    last_used_at: datetime | None
    is_management: bool = False
    spend_limit: int | None = None  # credits
    spend_limit_period: str | None = None  # day | week | month | None (lifetime)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


async def create_account(
    conn: AsyncConnection,
    vault: Vault,
    email: str,
    *,
    name: str | None = None,
    role: str = "user",
    store_prompts: bool = True,
) -> AccountView:
    """Create an account with its own data key; e-mail and name are stored sealed."""
    email = normalise_email(email)
    account = AccountView(
        id=new_id(), email=email, name=name, role=role, balance=0, created_at=utcnow()
    )
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(Account).values(
                    id=account.id,
                    email_bidx=vault.email_index(email),
                    role=role,
                    balance=0,
                    created_at=account.created_at,
                    store_prompts=store_prompts,
                )
            )
    except IntegrityError as exc:
        raise AccountError(f"an account with e-mail {email} already exists") from exc
    await vault.create_key(account.id)
    await conn.execute(
        update(Account)
        .where(Account.id == account.id)
        .values(
            email_enc=await vault.seal(account.id, email),
            name_enc=await vault.seal(account.id, name),
        )
    )
    return account


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise AccountError(f"'{email}' is not an e-mail address")
    return email


async def find_account_id(conn: AsyncConnection, vault: Vault, email: str) -> str | None:
    """The id of the live account with this e-mail (looked up by its blind index)."""
    found: str | None = await conn.scalar(
        select(Account.id).where(Account.email_bidx == vault.email_index(normalise_email(email)))
    )
    return found


async def find_account(conn: AsyncConnection, vault: Vault, email: str) -> AccountView | None:
    account_id = await find_account_id(conn, vault, email)
    return None if account_id is None else await get_account(conn, vault, account_id)


async def get_account(conn: AsyncConnection, vault: Vault, account_id: str) -> AccountView | None:
    row = (await conn.execute(select(Account).where(Account.id == account_id))).first()
    if row is None:
        return None
    return await _view(conn, vault, row)


async def _view(conn: AsyncConnection, vault: Vault, row: Any) -> AccountView:
    return AccountView(
        id=row.id,
        email=await vault.open(row.id, row.email_enc) or "",
        name=await vault.open(row.id, row.name_enc),
        role=row.role,
        balance=row.balance,
        created_at=row.created_at,
        status=row.status,
    )


async def require_account(conn: AsyncConnection, vault: Vault, email: str) -> AccountView:
    account = await find_account(conn, vault, email)
    if account is None:
        raise AccountError(f"no account with e-mail {normalise_email(email)}")
    return account


async def list_accounts(conn: AsyncConnection, vault: Vault) -> list[AccountView]:
    rows = (await conn.execute(select(Account).order_by(Account.created_at))).all()
    return [await _view(conn, vault, r) for r in rows]


async def create_key(
    conn: AsyncConnection,
    account_id: str,
    name: str,
    *,
    management: bool = False,
    spend_limit: int | None = None,
    spend_limit_period: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[KeyView, str]:
    """Create a key; returns its view and the secret, which is never stored or shown again.

    `spend_limit` is in credits per `spend_limit_period` (None: over the key's lifetime).
    """
    name = name.strip()
    if not name or len(name) > 200:
        raise AccountError("a key name must be 1 to 200 characters")
    check_limit(spend_limit, spend_limit_period)
    secret = new_api_key()
    view = KeyView(
        id=new_id(),
        name=name,
        prefix=secret[:8],
        last_four=secret[-4:],
        is_active=True,
        created_at=utcnow(),
        last_used_at=None,
        is_management=management,
        spend_limit=spend_limit,
        spend_limit_period=spend_limit_period,
        expires_at=expires_at,
    )
    await conn.execute(
        insert(ApiKey).values(
            id=view.id,
            account_id=account_id,
            name=view.name,
            key_hash=hash_secret(secret),
            prefix=view.prefix,
            last_four=view.last_four,
            is_active=True,
            created_at=view.created_at,
            is_management=management,
            spend_limit=spend_limit,
            spend_limit_period=spend_limit_period,
            expires_at=expires_at,
        )
    )
    return view, secret


def check_limit(spend_limit: int | None, period: str | None) -> None:
    """A limit is whole credits, not negative; a period only qualifies a limit."""
    if period is not None and period not in PERIODS:
        raise AccountError(
            f"spend_limit_period must be one of {', '.join(PERIODS)} or null (lifetime)"
        )
    if spend_limit is None:
        if period is not None:
            raise AccountError("spend_limit_period needs a spend_limit")
        return
    if spend_limit < 0:
        raise AccountError("spend_limit must not be negative")


async def list_keys(conn: AsyncConnection, account_id: str) -> list[KeyView]:
    rows = (
        await conn.execute(
            select(ApiKey).where(ApiKey.account_id == account_id).order_by(ApiKey.created_at)
        )
    ).all()
    return [
        KeyView(
            id=r.id,
            name=r.name,
            prefix=r.prefix,
            last_four=r.last_four,
            is_active=r.is_active and r.revoked_at is None,
            created_at=r.created_at,
            last_used_at=r.last_used_at,
            is_management=r.is_management,
            spend_limit=r.spend_limit,
            spend_limit_period=r.spend_limit_period,
            expires_at=r.expires_at,
            revoked_at=r.revoked_at,
        )
        for r in rows
    ]


async def revoke_key(conn: AsyncConnection, key_id: str) -> None:
    result = await conn.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
        .values(is_active=False, revoked_at=utcnow())
    )
    if result.rowcount != 1:
        exists = await conn.scalar(select(ApiKey.id).where(ApiKey.id == key_id))
        raise AccountError(
            f"key {key_id} is already revoked" if exists else f"no key with id {key_id}"
        )


_ACTIVE = "active"  # the account status that may call; both lookups below bind it
_AUTHENTICATE = (
    select(
        ApiKey.id,
        ApiKey.account_id,
        ApiKey.last_used_at,
        ApiKey.is_management,
        ApiKey.spend_limit,
        ApiKey.expires_at,
        Account.balance,
        Account.allow_routing_improvement,
        Account.store_prompts,
        Account.processing_restricted,
    )
    .join(Account, Account.id == ApiKey.account_id)
    .where(
        ApiKey.key_hash == bindparam("key_hash"),
        Account.status == _ACTIVE,
        ApiKey.is_active.is_(True),
        ApiKey.revoked_at.is_(None),
        or_(
            ApiKey.expires_at.is_(None),
            ApiKey.expires_at > bindparam("now", type_=API_KEYS.c.expires_at.type),
        ),
    )
)
_TOUCH = (
    update(API_KEYS)
    .where(API_KEYS.c.id == bindparam("key_id"))
    .values(last_used_at=bindparam("now", type_=API_KEYS.c.last_used_at.type))
)


async def authenticate_key(conn: AsyncConnection, secret: str) -> Caller | None:
    """The caller owning an active, unexpired key, or None.

    Touches `last_used_at` at most once a minute.
    """
    found = await authenticate_key_hash(conn, hash_secret(secret))
    return None if found is None else found[0]


async def authenticate_key_hash(
    conn: AsyncConnection, key_hash: str
) -> tuple[Caller, datetime | None] | None:
    """`authenticate_key` by the secret's hash, with the key's `expires_at` (for a cache)."""
    now = utcnow()
    row = (await conn.execute(_AUTHENTICATE, {"key_hash": key_hash, "now": now})).first()
    if row is None:
        return None
    if _touch_due(row.last_used_at, now):
        await conn.execute(_TOUCH, {"key_id": row.id, "now": now})
    return _caller_of(row._mapping), row.expires_at


# The same two statements for asyncpg itself (`db.driver`), compiled once from the ones
# above; the arguments go in the order named.
_PG_AUTHENTICATE = pg_statement(_AUTHENTICATE, ("key_hash", "status_1", "now"))
_PG_TOUCH = pg_statement(_TOUCH, ("now", "key_id"))


async def authenticate_key_hash_pg(
    pg: PgConnection, key_hash: str
) -> tuple[Caller, datetime | None] | None:
    """`authenticate_key_hash` through asyncpg, without SQLAlchemy's per-statement cost.

    A key cache miss takes this path: with many keys in use, most requests of a key that
    was not seen for a few seconds do (issue #12's 1,000-key case)."""
    now = utcnow()
    row = await pg.fetchrow(_PG_AUTHENTICATE, key_hash, _ACTIVE, now)
    if row is None:
        return None
    if _touch_due(row["last_used_at"], now):
        await pg.fetchval(_PG_TOUCH, now, row["id"])
    return _caller_of(row), row["expires_at"]


def _touch_due(last_used_at: datetime | None, now: datetime) -> bool:
    return last_used_at is None or now - last_used_at >= LAST_USED_RESOLUTION


def _caller_of(row: Mapping[Any, Any]) -> Caller:
    """The caller of a key's row, as either lookup reads it (an asyncpg record, or a
    SQLAlchemy row's mapping)."""
    spend_limit = row["spend_limit"]
    return Caller(
        account_id=row["account_id"],
        balance=int(row["balance"]),
        api_key_id=row["id"],
        allow_routing_improvement=bool(row["allow_routing_improvement"]),
        is_management=bool(row["is_management"]),
        spend_limit=None if spend_limit is None else int(spend_limit),
        store_prompts=bool(row["store_prompts"]),
        restricted=bool(row["processing_restricted"]),
    )
