"""Which models people use: successful generations per model over a recent window.

Read by the website (home page, `/models?sort=popular`), never per account: only model ids
and counts leave this module. The query scans the window's rows, so callers cache it
(`web/catalog.py` keeps it for a few minutes).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import Generation


async def model_counts(conn: AsyncConnection, since: datetime) -> dict[str, int]:
    """Successful generations per model since `since`, most used first."""
    count = func.count().label("uses")
    rows = (
        await conn.execute(
            select(Generation.model, count)
            .where(Generation.created_at >= since, Generation.status == "success")
            .group_by(Generation.model)
            .order_by(count.desc(), Generation.model)
        )
    ).all()
    return {str(model): int(uses) for model, uses in rows}
