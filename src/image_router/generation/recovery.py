"""Giving back holds that nobody will settle.

A worker that dies mid-request (kill -9, OOM, power loss) leaves its generation row in
`processing` with credits held. Every worker runs `release_expired_holds` at start-up and
then periodically: rows past their deadline (plus a grace period for the request that is
still finishing) are moved to `error` and their hold released. The `status =
'processing'` guard of `usage.finish` makes each release happen exactly once, however
many workers race for the same row. A generation whose job is alive or on record at its
vendor (`generation_jobs`) is the job resumer's to finish or give up (jobs/resumer.py).

Its failed event is not told here: the usage row was opened marked for events
(`events_pending`) when the generation is one, the release leaves the mark, and the
events' sweeper (webhooks/events.py, run by every delivery runner) records it with the
error this release wrote, once, however many workers sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db.outage import log_failed_pass
from image_router.db.session import unit_of_work
from image_router.db.tables import Generation, GenerationJob
from image_router.kit.clock import utcnow
from image_router.ledger import service as ledger
from image_router.usage import service as usage

log = logging.getLogger(__name__)

GRACE = timedelta(seconds=60)
ABANDONED = "abandoned: the generation did not finish before its deadline (the worker stopped)"


async def release_expired_holds(
    engine: AsyncEngine, *, grace: timedelta = GRACE, batch: int = 200
) -> int:
    """Release every expired hold, `batch` rows at a time; returns how many were released."""
    released = 0
    while True:
        async with unit_of_work(engine) as conn:
            rows = (
                await conn.execute(
                    select(Generation.id, Generation.account_id)
                    .where(
                        Generation.status == "processing",
                        Generation.deadline_at < utcnow() - grace,
                        ~_resumable(utcnow()),
                    )
                    .limit(batch)
                )
            ).all()
        for row in rows:
            async with unit_of_work(engine) as conn:
                # The amount comes from the closing statement, not the select above: the
                # request may have extended its hold for a dearer fallback in between.
                held = await usage.finish(
                    conn, row.id, "error", usage.Finish(provider=None, error=ABANDONED)
                )
                if held is not None:
                    await ledger.release(conn, row.account_id, held, generation_id=row.id)
                    released += 1
        if len(rows) < batch:
            break
    if released:
        log.warning("released %d expired holds", released)
    return released


def _resumable(now: datetime) -> Any:
    """A generation whose job a process is waiting on (its lease is alive), or whose vendor
    job is on record: the job resumer finishes it or gives it up itself (cancelling the
    vendor job past its deadline), so the reconciler leaves it alone."""
    return exists().where(
        GenerationJob.id == Generation.id,
        GenerationJob.state.in_(("queued", "running")),
        or_(GenerationJob.lease_until > now, GenerationJob.vendor_accepted_at.is_not(None)),
    )


async def run_periodically(
    engine: AsyncEngine, interval_s: float, grace_s: float, stop: asyncio.Event
) -> None:
    """The background loop a server runs until `stop` is set; errors are logged and the loop
    goes on. Stopping waits for the current pass instead of cancelling it, so a database
    call is never cut off half-way at shutdown."""
    while not stop.is_set():
        try:
            await release_expired_holds(engine, grace=timedelta(seconds=grace_s))
        except Exception as exc:
            log_failed_pass(log, "releasing expired holds failed", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
