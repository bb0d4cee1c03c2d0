"""Deleting what a person asked for, short of closing the account (privacy-payments.md DSR-7).

One usage row, or all of them (optionally only those created before a moment), lose their
content: the sealed prompt, the stored outputs (the files too) and their URLs, and the
vendors' error texts (which may quote the prompt). What billing needs stays: model, size,
status, cost, latency, the API key id and the time. The row gets
`content_deleted_at`, so deleting again finds nothing more to do.

Files are deleted before the row is updated: a crash in between leaves a row naming files
that are already gone (deleting them again is harmless), never files no row names any more.
A generation still running is left alone (its outputs are not written yet): the single-row
delete says so, the bulk delete skips it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.db.session import unit_of_work
from image_router.db.tables import Generation
from image_router.kit.clock import utcnow
from image_router.storage.base import Store

_BATCH = 200

#: What "content" means for a usage row, as the values that erase it. The vendors' error
#: texts go too: a refusal often quotes the prompt ("'<prompt>' is not allowed").
CLEARED: dict[str, Any] = {
    "prompt_enc": None,
    "content_expires_at": None,
    "output_keys": [],
    "output_urls": [],
    "outputs_expire_at": None,
    "error": None,
    "attempts": [],
}


class GenerationRunning(ValueError):
    """The generation has not finished; its outputs can be deleted once it has."""


async def delete_generation_content(
    engine: AsyncEngine, store: Store, account_id: str, generation_id: str
) -> bool:
    """Delete one usage row's content; False when the account has no such row."""
    async with unit_of_work(engine) as conn:
        row = (
            await conn.execute(
                select(Generation.status, Generation.output_keys).where(
                    Generation.id == generation_id, Generation.account_id == account_id
                )
            )
        ).first()
    if row is None:
        return False
    if row.status == "processing":
        raise GenerationRunning(
            f"Generation {generation_id} is still running; delete it once it has finished"
        )
    await delete_files(store, row.output_keys)
    async with unit_of_work(engine) as conn:
        await clear_rows(conn, [generation_id])
    return True


async def delete_all_content(
    engine: AsyncEngine, store: Store, account_id: str, *, before: datetime | None = None
) -> int:
    """Delete the content of every finished usage row of the account (created before
    `before` when given), in batches; returns how many rows had content."""
    deleted = 0
    while True:
        query = (
            select(
                Generation.id,
                Generation.output_keys,
                Generation.output_urls,
                Generation.prompt_enc.is_not(None).label("has_prompt"),
                Generation.error.is_not(None).label("has_error"),
            )
            .where(
                Generation.account_id == account_id,
                Generation.content_deleted_at.is_(None),
                Generation.status != "processing",
            )
            .order_by(Generation.created_at, Generation.id)
            .limit(_BATCH)
        )
        if before is not None:
            query = query.where(Generation.created_at < before)
        async with unit_of_work(engine) as conn:
            rows = (await conn.execute(query)).all()
        for row in rows:
            await delete_files(store, row.output_keys)
        async with unit_of_work(engine) as conn:
            await clear_rows(conn, [row.id for row in rows])
        deleted += sum(
            1 for r in rows if r.has_prompt or r.has_error or r.output_keys or r.output_urls
        )
        if len(rows) < _BATCH:
            return deleted


async def delete_files(store: Store, names: Sequence[str] | None) -> None:
    """Remove stored outputs; a file already gone is not an error (`Store.delete`)."""
    for name in names or ():
        await store.delete(name)


async def clear_rows(conn: AsyncConnection, generation_ids: Sequence[str]) -> None:
    """Null the content columns of these rows."""
    if not generation_ids:
        return
    await conn.execute(
        update(Generation)
        .where(Generation.id.in_(list(generation_ids)))
        .values(**CLEARED, content_deleted_at=utcnow())
    )


async def clear_rows_of_account(conn: AsyncConnection, account_id: str) -> None:
    """Erasure: every usage row of the account loses its content and its IP address;
    billing metadata stays. Events not yet recorded (the webhook outbox's mark, and the
    request's own `webhook_url`) are dropped: nothing is told of an erased account."""
    await conn.execute(
        update(Generation)
        .where(Generation.account_id == account_id)
        .values(
            **CLEARED, ip=None, events_pending=None, webhook_url=None, content_deleted_at=utcnow()
        )
    )
