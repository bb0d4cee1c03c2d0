"""Which accounts had activity in a time window (privacy-payments.md SEC-7, breach runbook).

After a breach the operator has 72 hours to tell the supervisory authority (GDPR Art. 33)
how many people are concerned, and must then tell the people themselves (Art. 34). Given the
window the incident covers, this lists every account with a trace in it: generations, ledger
entries (top-ups, charges, grants), browser sessions alive during it, API keys last used in it,
accounts created in it, and audit-log entries about the account. It reads no personal data;
the command line decrypts e-mail addresses only on request, with a reason, and audits that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, literal, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute

from image_router.db.tables import (
    Account,
    ApiKey,
    AuditEntry,
    Generation,
    LedgerEntry,
    WebSession,
)


@dataclass(frozen=True)
class AffectedAccount:
    account_id: str
    status: str
    # Traces found, by source: generations, ledger, sessions, api_keys, signups, audit.
    traces: dict[str, int] = field(default_factory=dict)


async def affected_accounts(
    conn: AsyncConnection, since: datetime, until: datetime
) -> list[AffectedAccount]:
    """Accounts with any activity in `since` ≤ t < `until`, ordered by account id."""
    if until <= since:
        raise ValueError("the window must end after it starts")
    sources = union_all(
        _counted("generations", Generation.account_id, Generation.created_at, since, until),
        _counted("ledger", LedgerEntry.account_id, LedgerEntry.created_at, since, until),
        _counted("api_keys", ApiKey.account_id, ApiKey.last_used_at, since, until),
        _counted("signups", Account.id, Account.created_at, since, until),
        _counted("audit", AuditEntry.subject_account_id, AuditEntry.created_at, since, until),
        # A session is alive during the window if it started before the end and was seen
        # (and not revoked) after the start.
        select(
            literal("sessions").label("source"),
            WebSession.account_id.label("account_id"),
            func.count().label("n"),
        )
        .where(
            WebSession.created_at < until,
            WebSession.last_seen_at >= since,
            or_(WebSession.revoked_at.is_(None), WebSession.revoked_at >= since),
        )
        .group_by(WebSession.account_id),
    ).subquery()
    rows = (
        await conn.execute(
            select(sources.c.source, sources.c.account_id, sources.c.n, Account.status)
            .join(Account, Account.id == sources.c.account_id)
            .order_by(sources.c.account_id, sources.c.source)
        )
    ).all()
    found: dict[str, AffectedAccount] = {}
    for row in rows:
        account = found.setdefault(row.account_id, AffectedAccount(row.account_id, row.status))
        account.traces[row.source] = int(row.n)
    return list(found.values())


def _counted(
    source: str,
    account: InstrumentedAttribute[Any],
    moment: InstrumentedAttribute[Any],
    since: datetime,
    until: datetime,
) -> Select[Any]:
    return (
        select(
            literal(source).label("source"), account.label("account_id"), func.count().label("n")
        )
        .where(moment >= since, moment < until)
        .group_by(account)
    )
