"""Per-key spend limits (spec §4 [docs]): at most `spend_limit` credits per UTC day, ISO
week (from Monday 00:00 UTC), calendar month (from the 1st), or over the key's lifetime.

A key's spend is read from the usage log rather than kept in a counter, so it can never
drift from what was charged: finished rows count what they cost (nothing for a failure),
rows still processing count what they hold.

`check` runs in the hold's transaction, after the hold's own write. It reads the key's row
`FOR UPDATE` before summing: on PostgreSQL a second request of the same key waits there
until the first commits, and its sum (a fresh snapshot under READ COMMITTED) then includes
the first one's row. SQLite has a single writer, which the hold already is. So concurrent
requests can never together spend past the limit.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import API_KEYS, GENERATIONS
from image_router.errors import GatewayError
from image_router.kit.clock import iso, utcnow
from image_router.kit.money import format_usd

PERIODS: Final = ("day", "week", "month")
_ADJECTIVE = {"day": "daily", "week": "weekly", "month": "monthly", None: "lifetime"}
# A lifetime limit sums every row: the same statement with bounds around any row.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER = datetime(9999, 1, 1, tzinfo=UTC)


class KeySpendLimitExceeded(GatewayError):
    """402: the request would take the key past its spend limit (nothing was charged).

    402 rather than 429: waiting a moment does not help, the window may be a month or
    the key's whole life.
    """

    status = 402
    error_type = "insufficient_credits"
    code = "key_spend_limit"


def window_start(period: str | None, now: datetime) -> datetime | None:
    """The start of the current window (UTC), None for a lifetime limit."""
    if period is None:
        return None
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=day.weekday())  # ISO weeks start on Monday
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown spend limit period {period!r}")


def window_end(period: str | None, now: datetime) -> datetime | None:
    """When the current window closes and the limit starts afresh (None: never)."""
    start = window_start(period, now)
    if start is None:
        return None
    if period == "day":
        return start + timedelta(days=1)
    if period == "week":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


_g = GENERATIONS
_SPEND = select(
    func.coalesce(func.sum(case((_g.c.status == "processing", _g.c.held), else_=_g.c.cost)), 0)
).where(
    _g.c.api_key_id == bindparam("key_id"),
    _g.c.created_at >= bindparam("since", type_=_g.c.created_at.type),
    _g.c.created_at < bindparam("until", type_=_g.c.created_at.type),
)
_LOCK_KEY = (
    select(API_KEYS.c.spend_limit, API_KEYS.c.spend_limit_period)
    .where(API_KEYS.c.id == bindparam("key_id"))
    .with_for_update()
)


async def period_spend(
    conn: AsyncConnection, key_id: str, period: str | None, now: datetime
) -> tuple[int, datetime | None]:
    """(credits spent or held by the key's requests in the window containing `now`, the
    window's start or None for a lifetime limit)."""
    since, until = bounds(period, now)
    value = await conn.scalar(_SPEND, {"key_id": key_id, "since": since, "until": until})
    return int(value or 0), window_start(period, now)


def bounds(period: str | None, now: datetime) -> tuple[datetime, datetime]:
    """[since, until) of the window containing `now`, a lifetime limit's around any row.

    Also what the hot path (`ledger.direct`, the same sum in the hold's unit of work)
    sums over, so both count the same rows.
    """
    return window_start(period, now) or _EPOCH, window_end(period, now) or _NEVER


async def check(
    conn: AsyncConnection,
    key_id: str,
    amount: int,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> KeySpendLimitExceeded | None:
    """The refusal if holding `amount` more would take the key past its limit, else None.

    Call it inside the hold's transaction, after the hold, and raise the refusal there so
    the hold is rolled back. A free request (`amount` 0) spends nothing and is never refused.
    """
    if amount <= 0:
        return None
    row = (await conn.execute(_LOCK_KEY, {"key_id": key_id})).first()
    if row is None or row.spend_limit is None:
        return None
    limit, period = int(row.spend_limit), row.spend_limit_period
    now = clock()
    spent, _ = await period_spend(conn, key_id, period, now)
    if spent + amount <= limit:
        return None
    return KeySpendLimitExceeded(refusal_message(limit, period, spent, amount, now))


def refusal_message(limit: int, period: str | None, spent: int, amount: int, now: datetime) -> str:
    head = (
        f"This API key's {_ADJECTIVE[period]} spend limit of ${format_usd(limit)} would be "
        f"exceeded: ${format_usd(spent)} spent"
    )
    start, end = window_start(period, now), window_end(period, now)
    if start is None or end is None:
        return (
            f"{head}, this request needs ${format_usd(amount)}. Raise the key's limit or use "
            "another key. You were not charged."
        )
    return (
        f"{head} since {iso(start)}, this request needs ${format_usd(amount)}. The limit "
        f"starts afresh at {iso(end)}. You were not charged."
    )
