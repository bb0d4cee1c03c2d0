"""Every balance movement of an account, as its owner reads them (the `/billing` page).

Money in and out (grants, top-ups, refunds, disputes, forfeits, operator deductions) is
listed entry by entry, newest first. Generations move the balance twice each (the hold,
then the release of what was not spent), so they are summed per UTC day instead: the net
is what the day's requests cost. Together the two add up to the balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.calendar import utc_day
from image_router.db.tables import LedgerEntry

#: The entries a generation writes; everything else is money in or out.
GENERATION_KINDS = ("hold", "release")


@dataclass(frozen=True)
class Movement:
    id: int
    kind: str
    amount: int  # credits, signed: positive adds to the balance
    reason: str | None
    created_at: datetime


@dataclass(frozen=True)
class MovementPage:
    movements: list[Movement]
    next_before: int | None  # the id to pass as `before` for the next (older) page


async def money_movements(
    conn: AsyncConnection, account_id: str, *, limit: int, before: int | None = None
) -> MovementPage:
    """The account's entries other than generations' holds and releases, newest first."""
    e = LedgerEntry
    query = select(e.id, e.kind, e.amount, e.reason, e.created_at).where(
        e.account_id == account_id, e.kind.not_in(GENERATION_KINDS)
    )
    if before is not None:
        query = query.where(e.id < before)
    rows = (await conn.execute(query.order_by(e.id.desc()).limit(limit + 1))).all()
    found = [
        Movement(int(r.id), str(r.kind), int(r.amount), r.reason, r.created_at)
        for r in rows[:limit]
    ]
    return MovementPage(found, found[-1].id if len(rows) > limit else None)


async def entry_time(conn: AsyncConnection, account_id: str, entry_id: int) -> datetime | None:
    """When the account's entry `entry_id` was written (None: no such entry of theirs)."""
    value = await conn.scalar(
        select(LedgerEntry.created_at).where(
            LedgerEntry.account_id == account_id, LedgerEntry.id == entry_id
        )
    )
    return value


async def generation_spend_by_day(
    conn: AsyncConnection,
    account_id: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[date, int]:
    """Credits spent on generations per UTC day (holds net of releases), for the entries
    written in [since, until); days with a zero net are left out."""
    e = LedgerEntry
    day = utc_day(e.created_at, conn.dialect.name).label("day")
    query = select(day, func.coalesce(func.sum(e.amount), 0)).where(
        e.account_id == account_id, e.kind.in_(GENERATION_KINDS)
    )
    if since is not None:
        query = query.where(e.created_at >= since)
    if until is not None:
        query = query.where(e.created_at < until)
    rows = (await conn.execute(query.group_by(day))).all()
    return {date.fromisoformat(str(r[0])): -int(r[1]) for r in rows if int(r[1]) != 0}


def start_of_day(moment: datetime | date) -> datetime:
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


async def generation_spend_total(conn: AsyncConnection, account_id: str) -> int:
    """Credits spent on generations since the account opened (holds net of releases)."""
    total = await conn.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id, LedgerEntry.kind.in_(GENERATION_KINDS)
        )
    )
    return -int(total or 0)
