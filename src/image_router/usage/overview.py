"""Usage across every account, for the operator: requests, errors and spend per UTC day,
model and vendor. Only model ids, vendor ids and counts leave this module, no account.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.calendar import utc_day
from image_router.db.tables import Generation


@dataclass(frozen=True)
class DailyUsage:
    day: str  # YYYY-MM-DD (UTC)
    model: str
    provider: str
    requests: int
    errors: int
    spend: int  # credits charged


async def daily_usage(conn: AsyncConnection, since: datetime) -> list[DailyUsage]:
    """One row per day, model and vendor since `since`: newest day first, then most used."""
    day = utc_day(Generation.created_at, conn.dialect.name).label("day")
    requests = func.count().label("requests")
    errors = func.coalesce(func.sum(case((Generation.status == "error", 1), else_=0)), 0)
    spend = func.coalesce(func.sum(Generation.cost), 0)
    rows = (
        await conn.execute(
            select(day, Generation.model, Generation.provider, requests, errors, spend)
            .where(Generation.created_at >= since)
            .group_by(day, Generation.model, Generation.provider)
            .order_by(day.desc(), requests.desc(), Generation.model, Generation.provider)
        )
    ).all()
    return [
        DailyUsage(str(d), str(m), str(p or ""), int(r), int(e), int(s))
        for d, m, p, r, e, s in rows
    ]
