"""A small durable job queue on the `jobs` table (privacy-payments.md §4.6).

`enqueue` inserts a job in the caller's transaction, so the job exists exactly when the
request that asked for it committed. Workers (every server process, and the CLI) call
`run_due`, which claims due jobs one at a time with a conditional UPDATE:

    queued  and run_after    <= now   → running, locked_until = now + lease, attempts + 1
    running and locked_until <  now   → the same (its worker died or hung: claim it again)

The UPDATE is the lock, on PostgreSQL and on SQLite alike: two workers racing for one row
both issue it, and only one sees its condition still true (PostgreSQL re-checks the WHERE
clause after the other's commit; SQLite has a single writer). The handler then runs
*outside* the claiming transaction, so a long job holds no database lock.

`attempts` doubles as a fencing token: a worker whose lease expired and whose job was
claimed again can no longer mark it done or failed (its UPDATE names the old attempt).
A failed attempt is retried after an exponential back-off until `max_attempts`; then the
job is `failed` with the error text. Handlers must be idempotent: a job may run again
after a crash between its work and the UPDATE that records it as done.

A `JobRunner` is given its handlers as an explicit map, kind -> handler (built in
`resources.py`); only those kinds are claimed, so a runner with a subset (a test) never
takes jobs it cannot run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.db.outage import log_failed_pass
from image_router.db.session import unit_of_work
from image_router.db.tables import Job
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
LEASE = timedelta(minutes=15)  # longer than any job should take; then another worker may
MAX_ATTEMPTS = 5
BACKOFF_FIRST = timedelta(seconds=30)  # then 1, 2, 4 minutes ... up to BACKOFF_MAX
BACKOFF_MAX = timedelta(hours=1)
BATCH = 20  # jobs per `run_due` call of the background loop
_ERROR_LIMIT = 2000


@dataclass(frozen=True)
class JobRow:
    """What a handler is given: the job, this attempt's number and the run's clock."""

    id: str
    kind: str
    account_id: str | None
    payload: dict[str, Any]
    attempts: int  # including this one
    max_attempts: int
    now: datetime  # the (possibly injected) time of this run

    @property
    def last_attempt(self) -> bool:
        return self.attempts >= self.max_attempts


Handler = Callable[[JobRow], Awaitable[None]]


async def enqueue(
    conn: AsyncConnection,
    kind: str,
    *,
    account_id: str | None,
    payload: dict[str, Any],
    run_after: datetime | None = None,
    now: datetime | None = None,
    job_id: str | None = None,
) -> str:
    """Queue a job in the caller's transaction; returns its id.

    A `job_id` of the caller's choosing makes queueing idempotent: a second insert of the
    same id fails with IntegrityError.
    """
    now = now or utcnow()
    job_id = job_id or new_id()
    await conn.execute(
        insert(Job).values(
            id=job_id,
            kind=kind,
            account_id=account_id,
            payload=payload,
            status=QUEUED,
            attempts=0,
            run_after=run_after or now,
            created_at=now,
        )
    )
    return job_id


def backoff(attempts: int) -> timedelta:
    """The wait before retrying after the `attempts`-th failed attempt."""
    return min(BACKOFF_FIRST * (1 << min(max(0, attempts - 1), 20)), BACKOFF_MAX)


@dataclass(frozen=True)
class JobRunner:
    """Runs the due jobs of the kinds in `handlers` on `engine` (one per process, built in
    resources.py; tests build their own with test kinds)."""

    engine: AsyncEngine
    handlers: Mapping[str, Handler]

    def __post_init__(self) -> None:
        for kind in self.handlers:
            if not kind or len(kind) > 20:
                raise ValueError(f"a job kind is 1 to 20 characters: {kind!r}")

    async def run_due(
        self,
        *,
        now: datetime | None = None,
        limit: int = BATCH,
        lease: timedelta = LEASE,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> int:
        """Claim and run up to `limit` due jobs, one at a time; returns how many were run
        (successfully or not)."""
        kinds = frozenset(self.handlers)
        if not kinds:
            return 0
        ran = 0
        while ran < limit:
            job = await _claim(self.engine, kinds, now or utcnow(), lease, max_attempts)
            if job is None:
                break
            ran += 1
            try:
                await self.handlers[job.kind](job)
            except Exception as exc:  # a handler's failure is recorded, never propagated
                log.warning(
                    "job %s (%s) attempt %d failed: %s", job.id, job.kind, job.attempts, exc
                )
                error = f"{type(exc).__name__}: {exc}"
                await _record_failure(self.engine, job, error, now or utcnow())
            else:
                await _finish(self.engine, job, now or utcnow(), status=DONE, error=None)
        return ran

    async def run_periodically(self, interval_s: float, stop: asyncio.Event) -> None:
        """The loop a server runs until `stop` is set: run due jobs, then wait `interval_s`
        (less when a pass was full, since more may be waiting). Errors are logged and the
        loop goes on; stopping waits for the current job instead of cancelling it."""
        while not stop.is_set():
            ran = 0
            try:
                ran = await self.run_due()
            except Exception as exc:
                log_failed_pass(log, "running background jobs failed", exc)
            wait = 0.0 if ran >= BATCH else interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)


async def _claim(
    engine: AsyncEngine,
    kinds: frozenset[str],
    now: datetime,
    lease: timedelta,
    max_attempts: int,
) -> JobRow | None:
    due = and_(Job.status == QUEUED, Job.run_after <= now)
    stale = and_(Job.status == RUNNING, Job.locked_until < now)
    while True:
        async with unit_of_work(engine) as conn:
            candidates = (
                await conn.execute(
                    select(Job.id, Job.attempts, Job.status)
                    .where(or_(due, stale), Job.kind.in_(kinds))
                    .order_by(Job.run_after, Job.id)
                    .limit(5)
                )
            ).all()
        if not candidates:
            return None
        for candidate in candidates:
            async with unit_of_work(engine) as conn:
                this_one = and_(Job.id == candidate.id, Job.attempts == candidate.attempts)
                if candidate.status == RUNNING and candidate.attempts >= max_attempts:
                    # Its worker died during the last attempt: give up rather than loop.
                    await conn.execute(
                        update(Job)
                        .where(this_one, stale)
                        .values(status=FAILED, finished_at=now, locked_until=None, error=_LOST)
                    )
                    continue
                claimed = await conn.execute(
                    update(Job)
                    .where(this_one, or_(due, stale))
                    .values(status=RUNNING, locked_until=now + lease, attempts=Job.attempts + 1)
                )
                if claimed.rowcount != 1:
                    continue  # another worker was faster; try the next candidate
                row = (
                    await conn.execute(
                        select(Job.kind, Job.account_id, Job.payload, Job.attempts).where(
                            Job.id == candidate.id
                        )
                    )
                ).one()
            return JobRow(
                id=candidate.id,
                kind=row.kind,
                account_id=row.account_id,
                payload=dict(row.payload or {}),
                attempts=row.attempts,
                max_attempts=max_attempts,
                now=now,
            )
        # Every candidate was taken by others meanwhile: look again.


_LOST = "the worker running the last attempt stopped before it finished"


async def _record_failure(engine: AsyncEngine, job: JobRow, error: str, now: datetime) -> None:
    error = error[:_ERROR_LIMIT]
    if job.last_attempt:
        await _finish(engine, job, now, status=FAILED, error=error)
        log.error("job %s (%s) failed for good after %d attempts", job.id, job.kind, job.attempts)
        return
    await _finish(
        engine, job, None, status=QUEUED, error=error, run_after=now + backoff(job.attempts)
    )


async def _finish(
    engine: AsyncEngine, job: JobRow, finished_at: datetime | None, **values: Any
) -> None:
    """Record the outcome, unless the lease was lost and the job claimed again meanwhile."""
    async with unit_of_work(engine) as conn:
        result = await conn.execute(
            update(Job)
            .where(Job.id == job.id, Job.status == RUNNING, Job.attempts == job.attempts)
            .values(locked_until=None, finished_at=finished_at, **values)
        )
    if result.rowcount != 1:
        log.warning("job %s (%s): lease lost; outcome left to the newer attempt", job.id, job.kind)
