"""The job resumer: leases, resuming the jobs of processes that died, and a clean stop.

Every process runs one (`run_periodically`, started by app.py): each pass renews the
leases of this process's jobs, claims the jobs whose lease expired (PostgreSQL:
`FOR UPDATE SKIP LOCKED`; SQLite has one serving process) and resumes them through the
adapter, or gives them up honestly (generation/resumption.py). Now and then it purges
answers whose outputs expired.

`begin_stop` (the drain's first hook) and `stop` (graceful shutdown) never cancel a vendor
job on record: its task is cut, the hold stays, the lease is dropped, and another process
resumes it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from image_router.db.outage import log_failed_pass
from image_router.generation.resumption import Resumed, resume
from image_router.jobs.service import Jobs
from image_router.jobs.tracker import JobTracker

log = logging.getLogger(__name__)

#: How often expired answers are dropped from job rows (their outputs expired too), and
#: rows whose usage row is gone (retention, erasure) deleted. The job API hides both
#: already; this only frees the space.
PURGE_EVERY_S = 3600.0


class JobResumer:
    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self._purged_at = 0.0

    async def run_periodically(self, stop: asyncio.Event) -> None:
        """Renew this process's leases and resume expired jobs until `stop`; then `stop`
        this process's jobs (docs/jobs.md). Errors are logged and the loop goes on."""
        while not stop.is_set():
            try:
                await self.pass_once()
            except Exception as exc:
                log_failed_pass(log, "the job resumer's pass failed", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.jobs.policy.resume_interval_s)

    async def pass_once(self) -> int:
        """One pass: renew leases, claim and start expired jobs; returns how many."""
        jobs = self.jobs
        await jobs.store.renew([t.generation_id for t in jobs.live.values() if t.row])
        if jobs.stopping:
            return 0
        claimed = await jobs.store.claim()
        for row in claimed:
            tracker = JobTracker(
                jobs,
                row.id,
                row.account_id,
                modality=row.modality,
                model=row.model,
                deadline_at=row.deadline_at,
                row=True,
                ref_saved=row.vendor_ref is not None,
            )
            jobs.live[row.id] = tracker
            jobs.spawn(self._resume(row, tracker), tracker)
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:
            await jobs.store.purge_answers()
            self._purged_at = time.monotonic()
        return len(claimed)

    def begin_stop(self) -> None:
        """The process begins to drain (SIGTERM): claim no more jobs, and hand the jobs
        whose vendor job is on record over at once (their waits cut, their holds kept,
        their leases dropped) rather than after the drain."""
        if self.jobs.stopping:
            return
        self.jobs.stopping = True
        self.jobs.keep_task(asyncio.ensure_future(self._hand_over()))

    async def stop(self) -> None:
        """Graceful shutdown: stop claiming; jobs the vendor accepted (on record) are left
        for another process, their leases dropped so it takes them at once; the rest get
        `shutdown_wait_s` to finish, then are released (`job_interrupted`)."""
        jobs = self.jobs
        jobs.stopping = True
        for tracker in list(jobs.live.values()):
            if tracker.suspended() and tracker.task is not None and tracker.task in jobs.tasks:
                tracker.task.cancel()
        left = [t for t in jobs.tasks if not t.done()]
        if left:
            _, pending = await asyncio.wait(left, timeout=jobs.policy.shutdown_wait_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)
        await jobs.store.drop_leases()

    async def _hand_over(self) -> None:
        jobs = self.jobs
        handed = [t for t in jobs.live.values() if t.suspended() and t.task in jobs.tasks]
        for tracker in handed:
            if tracker.task is not None:
                tracker.task.cancel()
        tasks = [t.task for t in handed if t.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        try:
            await jobs.store.drop_leases([t.generation_id for t in handed])
        except Exception:
            log.exception("dropping the leases of handed-over jobs failed")

    async def _resume(self, row: Any, tracker: JobTracker) -> None:
        try:
            if row.status != "processing":
                # Closed already (settled or released, maybe by a process that died
                # before it marked the job): only the job row is left to finish.
                tracker.ended = True
                tracker.done()
                return
            generator = self.jobs.generator
            with generator.drain.track():
                await resume(
                    generator,
                    Resumed(
                        generation_id=row.id,
                        account_id=row.account_id,
                        held=int(row.held),
                        deadline_at=row.deadline_at,
                        spec=row.spec or {},
                        vendor_ref=row.vendor_ref,
                    ),
                    tracker,
                )
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("resuming job %s failed", row.id)


__all__ = ["PURGE_EVERY_S", "JobResumer"]
