"""An account's latest generations whose outputs are still stored: the playground's gallery.

Only successful rows with stored outputs (not yet past `outputs_expire_at`, not deleted by
the person) are returned; the prompt stays sealed here (the gallery shows none).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import Generation


@dataclass(frozen=True)
class RecentOutput:
    id: str
    model: str
    modality: str
    urls: tuple[str, ...]
    cost: int  # credits
    latency_ms: int | None
    created_at: datetime


async def recent_outputs(
    conn: AsyncConnection, account_id: str, now: datetime, limit: int = 12
) -> list[RecentOutput]:
    """The account's newest successful generations with outputs still stored, newest first."""
    g = Generation
    rows = (
        await conn.execute(
            select(g.id, g.model, g.modality, g.output_urls, g.cost, g.latency_ms, g.created_at)
            .where(
                g.account_id == account_id,
                g.status == "success",
                g.content_deleted_at.is_(None),
                or_(g.outputs_expire_at.is_(None), g.outputs_expire_at > now),
            )
            .order_by(g.created_at.desc())
            .limit(limit)
        )
    ).all()
    return [
        RecentOutput(
            id=str(row.id),
            model=str(row.model),
            modality=str(row.modality),
            urls=tuple(str(u) for u in row.output_urls or ()),
            cost=int(row.cost),
            latency_ms=row.latency_ms,
            created_at=row.created_at,
        )
        for row in rows
        if row.output_urls
    ]
