"""Generations that outlive their HTTP request: the job API's use case (docs/jobs.md).

`Jobs` is the generator's `Durability` (generation/durability.py) and what the job routes
call:

- `submit` runs the first half of a generation (validation happened before; plan, hold:
  every refusal) and answers at once: the job row is written, the rest runs in a task.
- `track` registers every other generation in memory (`JobTracker`, jobs/tracker.py): a
  resumable vendor's reference (`Job.on_submitted`) is written to the job row before the
  adapter waits on it, for async and synchronous requests alike; so is the owner's lease,
  which the resumer (jobs/resumer.py) renews while it waits.
- `get` and `listing` read a job: its usage row and job row (jobs/store.py), the answer
  opened from the vault, shaped by jobs/views.py.
- `cancel` closes the usage row (the hold goes back) and marks the job cancelled in one
  transaction, then stops the vendor job: through the task when it runs here, else from
  the reference. `detach` keeps a synchronous generation whose client hung up running,
  with a job row so it can be fetched or cancelled.

The usage row stays the authority on money and outcome; settle and release are
conditional on it being `processing`, so whichever process closes it, it closes once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.personal_data import Vault
from image_router.account.service import Caller
from image_router.errors import Conflict, NotFound
from image_router.generation.durability import JobCancelled
from image_router.generation.service import Accepted, Generator
from image_router.generation.validation import GenerationRequest
from image_router.jobs.store import Found, JobStore
from image_router.jobs.tracker import JobTracker
from image_router.jobs.views import job_object
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id
from image_router.kit.shielding import shielded
from image_router.providers.contract import Job, Target

log = logging.getLogger(__name__)


class JobFinished(Conflict):
    """A job that is no longer queued or running cannot be cancelled."""

    code = "job_not_cancellable"


@dataclass(frozen=True)
class JobsPolicy:
    lease_s: float  # how long a job's owner may go without renewing before others take it
    resume_interval_s: float  # between two resumer passes (lease renewals, claims)
    shutdown_wait_s: float  # how long a stop waits for jobs that cannot be resumed
    outputs_hours: int  # RETENTION_OUTPUTS_HOURS: how long a job's outputs are kept


class Jobs:
    def __init__(
        self, engine: AsyncEngine, vault: Vault, policy: JobsPolicy, owner: str | None = None
    ) -> None:
        self.vault = vault
        self.policy = policy
        # Who holds a lease: unique per process start, readable in an operator's query.
        self.owner = owner or f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id()[:8]}"
        self.store = JobStore(engine, self.owner, policy.lease_s)
        self._generator: Generator | None = None
        self.live: dict[str, JobTracker] = {}  # this process's generations, by id
        self.tasks: set[asyncio.Future[Any]] = set()  # the ones nobody awaits
        # The process is stopping (jobs/resumer.py): trackers with a vendor job on record
        # are then suspended rather than given up.
        self.stopping = False

    # ------------------------------------------------------------- wiring

    def attach(self, generator: Generator) -> None:
        """The generator this runs jobs with (it is built with `self` as its durability)."""
        self._generator = generator

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            raise RuntimeError("Jobs.attach(generator) was not called")
        return self._generator

    def track(
        self, generation_id: str, account_id: str, *, modality: str, model: str, deadline_s: float
    ) -> JobTracker:
        """`Durability.track`: an in-memory registration only (no database round trip)."""
        tracker = JobTracker(
            self,
            generation_id,
            account_id,
            modality=modality,
            model=model,
            deadline_at=utcnow() + timedelta(seconds=deadline_s),
        )
        self.live[generation_id] = tracker
        return tracker

    # ------------------------------------------------------------- the API's use cases

    async def submit(
        self,
        caller: Caller,
        request: GenerationRequest,
        *,
        client_ip: str | None,
        store_prompt: bool,
        generation_id: str,
    ) -> dict[str, Any]:
        """Hold the credit (every refusal is raised here), write the job, start it; the
        job object (queued)."""
        accepted = await self.generator.accept(
            caller,
            request,
            client_ip=client_ip,
            store_prompt=store_prompt,
            generation_id=generation_id,
        )
        now = utcnow()
        tracker = JobTracker(
            self,
            generation_id,
            caller.account_id,
            modality=request.modality,
            model=request.model,
            deadline_at=now + timedelta(seconds=accepted.deadline_s),
            row=True,
        )
        try:
            await shielded(self.store.insert_async(tracker, accepted.spec(), now))
        except BaseException as exc:
            # No job on record: nobody could fetch or finish it, so nothing stays held.
            await self.generator.release_accepted(accepted, exc)
            raise
        self.live[generation_id] = tracker
        self.spawn(self._run(accepted, tracker), tracker)
        return job_object(
            {
                "id": generation_id,
                "status": "processing",
                "model": request.model,
                "modality": request.modality,
                "created_at": now,
                "finished_at": None,
            },
            {"state": "queued", "progress": None, "error": None},
            None,
            now=now,
            outputs_hours=self.policy.outputs_hours,
        )

    async def get(self, account_id: str, job_id: str) -> dict[str, Any]:
        """The job object of any generation of the account; 404 for anything else."""
        return await self._object(await self._find(account_id, job_id))

    async def listing(
        self,
        account_id: str,
        *,
        limit: int,
        after: str | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        """The account's jobs, newest first: `limit` of them after the job `after`."""
        found, more = await self.store.page(account_id, limit=limit, after=after, status=status)
        data = [await self._object(one) for one in found]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": more,
        }

    async def cancel(self, account_id: str, job_id: str) -> dict[str, Any]:
        """Close the usage row (the hold goes back) and mark the job cancelled, in one
        transaction; then stop the vendor job. 409 once it has finished."""
        generation, job = await self._find(account_id, job_id)
        if generation["status"] != "processing" or not await self.store.close_cancelled(generation):
            raise JobFinished(
                f"Job '{job_id}' has already finished; only a queued or running job can be "
                "cancelled",
                code="job_not_cancellable",
            )
        tracker = self.live.get(job_id)
        if tracker is not None:
            tracker.cancel()
            if tracker.task is not None and not tracker.task.done():
                # The attempt, cancelled, asks its vendor to stop the job (attempts.py).
                tracker.task.cancel()
        elif job is not None and job["vendor_ref"] is not None:
            await self._cancel_elsewhere(job)
        log.info("job %s cancelled by its client", job_id)
        return await self.get(account_id, job_id)

    def holding(self, generation_id: str) -> bool:
        """Whether a generation of this process has its credit held (and runs on)."""
        return generation_id in self.live

    async def detach(self, generation_id: str, task: asyncio.Future[Any]) -> bool:
        """A synchronous generation's client hung up: it runs on and becomes a job (one
        row, so it can be fetched and cancelled). False when it is not running here."""
        tracker = self.live.get(generation_id)
        if tracker is None:
            return False
        self.keep_task(task)
        if not tracker.row:
            try:
                await shielded(self.store.insert_detached(tracker))
                tracker.row = True
            except Exception:
                # It still finishes and lands in the usage log; only the job view is lost.
                log.exception("recording the detached generation %s failed", generation_id)
        log.info("generation %s: client disconnected; it runs on as a job", generation_id)
        return True

    # ------------------------------------------------------------- tasks

    def spawn(self, work: Coroutine[Any, Any, None], tracker: JobTracker) -> None:
        """Run a job's generation in a task of its own, kept until it ends."""
        task = asyncio.ensure_future(work)
        tracker.task = task
        self.keep_task(task)

    def keep_task(self, task: asyncio.Future[Any]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def done(self, tracker: JobTracker) -> None:
        """The generation ended here: finish its job row, or drop its lease (suspended)."""
        if self.live.get(tracker.generation_id) is tracker:
            del self.live[tracker.generation_id]
        if tracker.row:
            self.keep_task(asyncio.ensure_future(self._finish_row(tracker)))

    async def _run(self, accepted: Accepted, tracker: JobTracker) -> None:
        try:
            # Like a synchronous generation, cut off by the drain (kit/drain.py) when the
            # process stops; one whose vendor job is on record is then only suspended.
            with self.generator.drain.track():
                await self.store.set_running(tracker.generation_id)
                await self.generator.complete(accepted, tracker)
        except (JobCancelled, asyncio.CancelledError):
            pass  # the hold went back or stays on record; nobody waits for this task
        except Exception:
            # Released and recorded by the generator (a GatewayError) or a bug: logged.
            log.debug("job %s failed", tracker.generation_id, exc_info=True)

    async def _finish_row(self, tracker: JobTracker) -> None:
        try:
            await self.store.finish(tracker.generation_id, ended=tracker.ended)
        except Exception:
            log.exception("finishing the job row of %s failed", tracker.generation_id)

    # ------------------------------------------------------------- reads

    async def _find(self, account_id: str, job_id: str) -> Found:
        found = await self.store.find(account_id, job_id)
        if found is None:
            raise NotFound(f"No job '{job_id}' in this account", code="job_not_found")
        return found

    async def _object(self, found: Found) -> dict[str, Any]:
        generation, job = found
        answer = None
        if job is not None and job["result_enc"] is not None:
            opened = await self.vault.open(generation["account_id"], job["result_enc"])
            answer = orjson.loads(opened) if opened else None
        return job_object(
            generation, job, answer, now=utcnow(), outputs_hours=self.policy.outputs_hours
        )

    async def _cancel_elsewhere(self, job: Mapping[str, Any]) -> None:
        """Stop a vendor job no task of this process waits on, from its reference."""
        spec = job["spec"] or {}
        provider = self.generator.providers.get(str(spec.get("provider")))
        if provider is None:
            log.warning("job %s: its vendor %s is not configured here", job["id"], job["provider"])
            return
        target = spec.get("target") or {}
        vendor_job = Job(
            modality=job["modality"],
            model=job["model"],
            prompt="",
            job_id=job["id"],
            vendor_ref=job["vendor_ref"],
        )
        try:
            async with asyncio.timeout(10):
                await provider.cancel(
                    vendor_job,
                    Target(str(target.get("upstream", "")), dict(target.get("options") or {})),
                )
        except Exception as exc:  # cancelled at the gateway either way; the log keeps it
            log.warning("job %s: the vendor did not confirm its cancel: %s", job["id"], exc)


__all__ = ["JobFinished", "Jobs", "JobsPolicy"]
