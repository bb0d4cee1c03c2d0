"""Generations that outlive their HTTP request: async jobs and durable vendor jobs.

`Jobs` is the generator's `Durability` (generation/durability.py) and the job API's use
case (docs/jobs.md):

- `submit` runs the first half of a generation (validation happened before; plan, hold:
  every refusal) and answers at once: the job row is written, the rest runs in a task.
- A resumable vendor's reference (`Job.on_submitted`) is written to the job row before the
  adapter waits on it, for async and synchronous requests alike; so is the owner's lease,
  which this process renews while it waits (`run_periodically`).
- Every process runs the resumer (`run_periodically`): it claims the jobs whose lease
  expired (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite has one serving process) and
  resumes them through the adapter, or gives them up honestly (`Generator.resume`).
- `cancel` closes the usage row (the hold goes back) and marks the job cancelled in one
  transaction, then stops the vendor job: through the task when it runs here, else from
  the reference. `detach` keeps a synchronous generation whose client hung up running,
  with a job row so it can be fetched or cancelled.
- `stop` (graceful shutdown) never cancels a vendor job on record: its task is cut, the
  hold stays, the lease is dropped, and another process resumes it at once.

The usage row stays the authority on money and outcome; settle and release are
conditional on it being `processing`, so whichever process closes it, it closes once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy import insert as insert_into
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.personal_data import Vault
from image_router.account.service import Caller
from image_router.db.session import autocommit, unit_of_work
from image_router.db.tables import Generation, GenerationJob
from image_router.errors import Conflict, NotFound
from image_router.generation.durability import JobCancelled
from image_router.generation.service import INTERRUPTED, Accepted, Generator, Resumed
from image_router.generation.validation import GenerationRequest
from image_router.jobs.views import ACTIVE_STATES, CANCELLED, job_object
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id
from image_router.kit.shielding import shielded
from image_router.ledger import service as ledger
from image_router.providers.contract import Job, Target
from image_router.usage import service as usage

log = logging.getLogger(__name__)

#: How often expired answers are dropped from job rows (their outputs expired too), and
#: rows whose usage row is gone (retention, erasure) deleted. The job API hides both
#: already; this only frees the space.
PURGE_EVERY_S = 3600.0
#: Jobs one resumer pass claims at most.
CLAIM_BATCH = 50
#: The error codes of a generation whose task was cancelled (generation/service.py).
_CUT_CODES = frozenset({"client_disconnected", "server_shutting_down"})


class JobFinished(Conflict):
    """A job that is no longer queued or running cannot be cancelled."""

    code = "job_not_cancellable"


@dataclass(frozen=True)
class JobsPolicy:
    lease_s: float  # how long a job's owner may go without renewing before others take it
    resume_interval_s: float  # between two resumer passes (lease renewals, claims)
    shutdown_wait_s: float  # how long a stop waits for jobs that cannot be resumed
    outputs_hours: int  # RETENTION_OUTPUTS_HOURS: how long a job's outputs are kept


class _Tracker:
    """One generation's job state in this process (generation/durability.Tracker)."""

    durable = True

    def __init__(
        self,
        jobs: Jobs,
        generation_id: str,
        account_id: str,
        *,
        modality: str,
        model: str,
        deadline_at: datetime,
        row: bool = False,
        ref_saved: bool = False,
    ) -> None:
        self.jobs = jobs
        self.generation_id = generation_id
        self.account_id = account_id
        self.modality = modality
        self.model = model
        self.deadline_at = deadline_at
        self.row = row  # a job row exists (async, vendor accepted, or detached)
        self.ref_saved = ref_saved  # the vendor's reference is on record
        self.ended = False  # keep() or failed() ran: the outcome is known
        self._cancelled = False
        self.task = asyncio.current_task()

    async def submitted(self, spec: Mapping[str, Any], ref: Mapping[str, Any]) -> None:
        await self.jobs._record_ref(self, spec, ref)
        self.row = self.ref_saved = True

    async def keep(self, answer: Mapping[str, Any], expires_at: datetime | None) -> None:
        self.ended = True
        if self.row:
            await self.jobs._keep(self, answer, expires_at)

    async def failed(self, error: Mapping[str, Any]) -> Mapping[str, Any]:
        self.ended = True
        if self._cancelled:
            error = CANCELLED
        elif self.row and error.get("code") in _CUT_CODES:
            # No client waits on a job: its task was cut (the process is stopping).
            error = INTERRUPTED
        if self.row:
            await self.jobs._record_error(self, error)
        return error

    def suspended(self) -> bool:
        # Only a stopping process hands a job over: a cancellation otherwise is the
        # deadline's (cancel at the vendor, release) or the client's (`cancel`).
        return self.ref_saved and not self._cancelled and self.jobs.stopping

    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def done(self) -> None:
        self.jobs._done(self)


class Jobs:
    def __init__(
        self, engine: AsyncEngine, vault: Vault, policy: JobsPolicy, owner: str | None = None
    ) -> None:
        self.engine = engine
        self.vault = vault
        self.policy = policy
        # Who holds a lease: unique per process start, readable in an operator's query.
        self.owner = owner or f"{socket.gethostname()[:30]}:{os.getpid()}:{new_id()[:8]}"
        self._generator: Generator | None = None
        self._live: dict[str, _Tracker] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self._purged_at = 0.0

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
    ) -> _Tracker:
        """`Durability.track`: an in-memory registration only (no database round trip)."""
        tracker = _Tracker(
            self,
            generation_id,
            account_id,
            modality=modality,
            model=model,
            deadline_at=utcnow() + timedelta(seconds=deadline_s),
        )
        self._live[generation_id] = tracker
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
        tracker = _Tracker(
            self,
            generation_id,
            caller.account_id,
            modality=request.modality,
            model=request.model,
            deadline_at=now + timedelta(seconds=accepted.deadline_s),
            row=True,
        )
        try:
            await shielded(self._insert(tracker, accepted, now))
        except BaseException as exc:
            # No job on record: nobody could fetch or finish it, so nothing stays held.
            await self.generator.release_accepted(accepted, exc)
            raise
        self._live[generation_id] = tracker
        self._spawn(self._run(accepted, tracker), tracker)
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
        async with autocommit(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_BOTH)
                    .select_from(Generation)
                    .outerjoin(GenerationJob, GenerationJob.id == Generation.id)
                    .where(Generation.id == job_id, Generation.account_id == account_id)
                )
            ).first()
        if row is None:
            raise NotFound(f"No job '{job_id}' in this account", code="job_not_found")
        return await self._object(*_split(row))

    async def listing(
        self,
        account_id: str,
        *,
        limit: int,
        after: str | None = None,
        status: str | None = None,
    ) -> dict[str, Any]:
        """The account's jobs, newest first: `limit` of them after the job `after`."""
        query = (
            select(*_BOTH)
            .select_from(GenerationJob)
            .join(Generation, Generation.id == GenerationJob.id)
            .where(GenerationJob.account_id == account_id)
        )
        if status is not None:
            query = query.where(_status_is(status))
        async with autocommit(self.engine) as conn:
            if after is not None:
                cursor = (
                    await conn.execute(
                        select(GenerationJob.created_at).where(
                            GenerationJob.id == after, GenerationJob.account_id == account_id
                        )
                    )
                ).scalar_one_or_none()
                if cursor is None:
                    raise NotFound(
                        f"No job '{after}' in this account", param="after", code="job_not_found"
                    )
                query = query.where(
                    or_(
                        GenerationJob.created_at < cursor,
                        and_(GenerationJob.created_at == cursor, GenerationJob.id < after),
                    )
                )
            rows = (
                await conn.execute(
                    query.order_by(GenerationJob.created_at.desc(), GenerationJob.id.desc()).limit(
                        limit + 1
                    )
                )
            ).all()
        data = [await self._object(*_split(row)) for row in rows[:limit]]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": len(rows) > limit,
        }

    async def cancel(self, account_id: str, job_id: str) -> dict[str, Any]:
        """Close the usage row (the hold goes back) and mark the job cancelled, in one
        transaction; then stop the vendor job. 409 once it has finished."""
        async with autocommit(self.engine) as conn:
            found = (
                await conn.execute(
                    select(*_BOTH)
                    .select_from(Generation)
                    .outerjoin(GenerationJob, GenerationJob.id == Generation.id)
                    .where(Generation.id == job_id, Generation.account_id == account_id)
                )
            ).first()
        if found is None:
            raise NotFound(f"No job '{job_id}' in this account", code="job_not_found")
        generation, job = _split(found)
        if generation["status"] != "processing" or not await self._close_cancelled(generation):
            raise JobFinished(
                f"Job '{job_id}' has already finished; only a queued or running job can be "
                "cancelled",
                code="job_not_cancellable",
            )
        tracker = self._live.get(job_id)
        if tracker is not None:
            tracker.cancel()
            if tracker.task is not None and not tracker.task.done():
                # The attempt, cancelled, asks its vendor to stop the job (attempts.py).
                tracker.task.cancel()
        elif job is not None and job["vendor_ref"] is not None:
            await self._cancel_elsewhere(job)
        log.info("job %s cancelled by its client", job_id)
        return await self.get(account_id, job_id)

    def begin_stop(self) -> None:
        """The process begins to drain (SIGTERM): claim no more jobs, and hand the jobs
        whose vendor job is on record over at once (their waits cut, their holds kept,
        their leases dropped) rather than after the drain."""
        if self.stopping:
            return
        self.stopping = True
        self._keep_task(asyncio.ensure_future(self._hand_over()))

    async def _hand_over(self) -> None:
        handed = [t for t in self._live.values() if t.suspended() and t.task in self._tasks]
        for tracker in handed:
            if tracker.task is not None:
                tracker.task.cancel()
        tasks = [t.task for t in handed if t.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        try:
            await self._drop_leases([t.generation_id for t in handed])
        except Exception:
            log.exception("dropping the leases of handed-over jobs failed")

    def holding(self, generation_id: str) -> bool:
        """Whether a generation of this process has its credit held (and runs on)."""
        return generation_id in self._live

    async def detach(self, generation_id: str, task: asyncio.Future[Any]) -> bool:
        """A synchronous generation's client hung up: it runs on and becomes a job (one
        row, so it can be fetched and cancelled). False when it is not running here."""
        tracker = self._live.get(generation_id)
        if tracker is None:
            return False
        self._keep_task(task)
        if not tracker.row:
            try:
                await shielded(self._insert_detached(tracker))
                tracker.row = True
            except Exception:
                # It still finishes and lands in the usage log; only the job view is lost.
                log.exception("recording the detached generation %s failed", generation_id)
        log.info("generation %s: client disconnected; it runs on as a job", generation_id)
        return True

    # ------------------------------------------------------------- the resumer

    async def run_periodically(self, stop: asyncio.Event) -> None:
        """Renew this process's leases and resume expired jobs until `stop`; then `stop`
        this process's jobs (docs/jobs.md). Errors are logged and the loop goes on."""
        while not stop.is_set():
            try:
                await self.pass_once()
            except Exception:
                log.exception("the job resumer's pass failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.policy.resume_interval_s)

    async def pass_once(self) -> int:
        """One pass: renew leases, claim and start expired jobs; returns how many."""
        await self._renew()
        if self.stopping:
            return 0
        claimed = await self._claim()
        for row in claimed:
            tracker = _Tracker(
                self,
                row.id,
                row.account_id,
                modality=row.modality,
                model=row.model,
                deadline_at=row.deadline_at,
                row=True,
                ref_saved=row.vendor_ref is not None,
            )
            self._live[row.id] = tracker
            self._spawn(self._resume(row, tracker), tracker)
        if time.monotonic() - self._purged_at > PURGE_EVERY_S:
            await self._purge_answers()
            self._purged_at = time.monotonic()
        return len(claimed)

    async def stop(self) -> None:
        """Graceful shutdown: stop claiming; jobs the vendor accepted (on record) are left
        for another process, their leases dropped so it takes them at once; the rest get
        `shutdown_wait_s` to finish, then are released (`job_interrupted`)."""
        self.stopping = True
        for tracker in list(self._live.values()):
            if tracker.suspended() and tracker.task is not None and tracker.task in self._tasks:
                tracker.task.cancel()
        left = [t for t in self._tasks if not t.done()]
        if left:
            _, pending = await asyncio.wait(left, timeout=self.policy.shutdown_wait_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)
        await self._drop_leases()

    async def _drop_leases(self, ids: list[str] | None = None) -> None:
        """Drop this process's leases (of `ids`, or all), so another process resumes those
        jobs at its next pass instead of after the lease."""
        mine = [GenerationJob.owner == self.owner, GenerationJob.state.in_(ACTIVE_STATES)]
        if ids is not None:
            if not ids:
                return
            mine.append(GenerationJob.id.in_(ids))
        async with unit_of_work(self.engine) as conn:
            dropped = await conn.execute(
                update(GenerationJob).where(*mine).values(owner=None, lease_until=None)
            )
        if dropped.rowcount:
            log.info("left %d job(s) to be resumed by another process", dropped.rowcount)

    # ------------------------------------------------------------- tasks

    def _spawn(self, work: Any, tracker: _Tracker) -> None:
        task = asyncio.ensure_future(work)
        tracker.task = task
        self._keep_task(task)

    def _keep_task(self, task: asyncio.Future[Any]) -> None:
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)

    async def _run(self, accepted: Accepted, tracker: _Tracker) -> None:
        try:
            # Like a synchronous generation, cut off by the drain (kit/drain.py) when the
            # process stops; one whose vendor job is on record is then only suspended.
            with self.generator.drain.track():
                await self._set_running(tracker.generation_id)
                await self.generator.complete(accepted, tracker)
        except (JobCancelled, asyncio.CancelledError):
            pass  # the hold went back or stays on record; nobody waits for this task
        except Exception:
            # Released and recorded by the generator (a GatewayError) or a bug: logged.
            log.debug("job %s failed", tracker.generation_id, exc_info=True)

    async def _resume(self, row: Any, tracker: _Tracker) -> None:
        try:
            if row.status != "processing":
                # Closed already (settled or released, maybe by a process that died
                # before it marked the job): only the job row is left to finish.
                tracker.ended = True
                tracker.done()
                return
            with self.generator.drain.track():
                await self.generator.resume(
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

    def _done(self, tracker: _Tracker) -> None:
        """The generation ended here: finish its job row, or drop its lease (suspended)."""
        if self._live.get(tracker.generation_id) is tracker:
            del self._live[tracker.generation_id]
        if tracker.row:
            task = asyncio.ensure_future(self._finish_row(tracker))
            self._keep_task(task)

    # ------------------------------------------------------------- rows

    async def _insert(self, tracker: _Tracker, accepted: Accepted, now: datetime) -> None:
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                insert_into(GenerationJob).values(
                    id=tracker.generation_id,
                    account_id=tracker.account_id,
                    origin="async",
                    modality=tracker.modality,
                    model=tracker.model,
                    state="queued",
                    spec=accepted.spec(),
                    provider=None,
                    vendor_ref=None,
                    owner=self.owner,
                    lease_until=now + timedelta(seconds=self.policy.lease_s),
                    deadline_at=tracker.deadline_at,
                    created_at=now,
                )
            )

    async def _insert_detached(self, tracker: _Tracker) -> None:
        now = utcnow()
        values = self._sync_row(tracker, now) | {"state": "running", "spec": {}}
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                self._insert_stmt().values(**values).on_conflict_do_nothing(index_elements=["id"])
            )

    def _sync_row(self, tracker: _Tracker, now: datetime) -> dict[str, Any]:
        return {
            "id": tracker.generation_id,
            "account_id": tracker.account_id,
            "origin": "sync",
            "modality": tracker.modality,
            "model": tracker.model,
            "owner": self.owner,
            "lease_until": now + timedelta(seconds=self.policy.lease_s),
            "deadline_at": tracker.deadline_at,
            "created_at": now,
        }

    def _insert_stmt(self) -> Any:
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        return insert(GenerationJob)

    async def _record_ref(
        self, tracker: _Tracker, spec: Mapping[str, Any], ref: Mapping[str, Any]
    ) -> None:
        """The vendor accepted the job: its reference (and the route's spec) on record,
        with this process's lease. An async job's row exists; a synchronous one's is made."""
        now = utcnow()
        accepted = {
            "spec": dict(spec),
            "provider": str(spec.get("provider") or "") or None,
            "vendor_ref": dict(ref),
            "vendor_accepted_at": now,
            "state": "running",
            "owner": self.owner,
            "lease_until": now + timedelta(seconds=self.policy.lease_s),
        }
        statement = (
            self._insert_stmt()
            .values(**(self._sync_row(tracker, now) | accepted))
            .on_conflict_do_update(index_elements=["id"], set_=accepted)
        )
        async with unit_of_work(self.engine) as conn:
            await conn.execute(statement)

    async def _set_running(self, job_id: str) -> None:
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id, GenerationJob.state == "queued")
                .values(state="running")
            )

    async def _keep(
        self, tracker: _Tracker, answer: Mapping[str, Any], expires_at: datetime | None
    ) -> None:
        """Seal and store the answer before the settle (docs/jobs.md). An answer whose
        outputs are not stored (b64_ephemeral) is not kept either."""
        if expires_at is None:
            return
        sealed = await self.vault.seal(tracker.account_id, orjson.dumps(answer).decode())
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(GenerationJob)
                .where(GenerationJob.id == tracker.generation_id)
                .values(result_enc=sealed, result_expires_at=expires_at)
            )

    async def _record_error(self, tracker: _Tracker, error: Mapping[str, Any]) -> None:
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(GenerationJob)
                .where(
                    GenerationJob.id == tracker.generation_id,
                    GenerationJob.state.in_(ACTIVE_STATES),
                )
                .values(error=dict(error))
            )

    async def _finish_row(self, tracker: _Tracker) -> None:
        """Mark a job row final (its outcome is the usage row's) and drop the lease; a
        suspended one only drops the lease, for the next process to take it at once."""
        try:
            async with unit_of_work(self.engine) as conn:
                if not tracker.ended:
                    await conn.execute(
                        update(GenerationJob)
                        .where(
                            GenerationJob.id == tracker.generation_id,
                            GenerationJob.owner == self.owner,
                        )
                        .values(owner=None, lease_until=None)
                    )
                    return
                status = (
                    await conn.execute(
                        select(Generation.status).where(Generation.id == tracker.generation_id)
                    )
                ).scalar_one_or_none()
                if status == "processing":
                    # Not closed (the settle failed): the lease lapses and the resumer or
                    # the reconciler finishes it.
                    return
                await conn.execute(
                    update(GenerationJob)
                    .where(
                        GenerationJob.id == tracker.generation_id,
                        GenerationJob.state.in_(ACTIVE_STATES),
                    )
                    .values(
                        state="succeeded" if status == "success" else "failed",
                        owner=None,
                        lease_until=None,
                        finished_at=utcnow(),
                    )
                )
        except Exception:
            log.exception("finishing the job row of %s failed", tracker.generation_id)

    async def _close_cancelled(self, generation: Mapping[str, Any]) -> bool:
        """The usage row closed as cancelled, its hold given back and the job marked, in
        one transaction; False when it was closed already."""
        now = utcnow()
        async with unit_of_work(self.engine) as conn:
            held = await usage.finish(
                conn,
                generation["id"],
                "error",
                usage.Finish(
                    provider=generation["provider"], error="cancelled by the client (job API)"
                ),
            )
            if held is None:
                return False
            await ledger.release(
                conn, generation["account_id"], held, generation_id=generation["id"]
            )
            marked = {
                "state": "cancelled",
                "error": dict(CANCELLED),
                "owner": None,
                "lease_until": None,
                "finished_at": now,
            }
            await conn.execute(
                self._insert_stmt()
                .values(
                    id=generation["id"],
                    account_id=generation["account_id"],
                    origin="sync",
                    modality=generation["modality"],
                    model=generation["model"],
                    spec={},
                    deadline_at=generation["deadline_at"],
                    created_at=generation["created_at"],
                    **marked,
                )
                .on_conflict_do_update(index_elements=["id"], set_=marked)
            )
        return True

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

    async def _renew(self) -> None:
        ids = [t.generation_id for t in self._live.values() if t.row]
        if not ids:
            return
        until = utcnow() + timedelta(seconds=self.policy.lease_s)
        async with unit_of_work(self.engine) as conn:
            for chunk in _chunks(ids, 500):
                await conn.execute(
                    update(GenerationJob)
                    .where(GenerationJob.owner == self.owner, GenerationJob.id.in_(chunk))
                    .values(lease_until=until)
                )

    async def _claim(self) -> Sequence[Any]:
        """Jobs whose owner's lease expired, now this process's (SKIP LOCKED: each job is
        claimed by one process however many look at once)."""
        now = utcnow()
        expired = and_(
            GenerationJob.state.in_(ACTIVE_STATES),
            or_(GenerationJob.lease_until.is_(None), GenerationJob.lease_until < now),
        )
        async with unit_of_work(self.engine) as conn:
            query = (
                select(GenerationJob.id)
                .where(expired)
                .order_by(GenerationJob.created_at)
                .limit(CLAIM_BATCH)
            )
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = list((await conn.execute(query)).scalars())
            if not ids:
                return []
            await conn.execute(
                update(GenerationJob)
                .where(GenerationJob.id.in_(ids), expired)
                .values(owner=self.owner, lease_until=now + timedelta(seconds=self.policy.lease_s))
            )
            rows = (
                await conn.execute(
                    select(
                        GenerationJob.id,
                        GenerationJob.account_id,
                        GenerationJob.modality,
                        GenerationJob.model,
                        GenerationJob.spec,
                        GenerationJob.vendor_ref,
                        GenerationJob.deadline_at,
                        Generation.status,
                        Generation.held,
                    )
                    .join(Generation, Generation.id == GenerationJob.id)
                    .where(GenerationJob.id.in_(ids), GenerationJob.owner == self.owner)
                )
            ).all()
        if rows:
            log.info("claimed %d job(s) whose process stopped", len(rows))
        return rows

    async def _purge_answers(self) -> None:
        """Drop stored answers whose outputs expired (the job then says so), and the job
        rows of generations the usage-log retention or an erasure deleted."""
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(GenerationJob)
                .where(GenerationJob.result_expires_at < utcnow())
                .values(result_enc=None, result_expires_at=None)
            )
            await conn.execute(
                delete(GenerationJob).where(
                    ~exists().where(Generation.id == GenerationJob.id),
                    GenerationJob.state.not_in(ACTIVE_STATES),
                )
            )

    async def _object(
        self, generation: Mapping[str, Any], job: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        answer = None
        if job is not None and job["result_enc"] is not None:
            opened = await self.vault.open(generation["account_id"], job["result_enc"])
            answer = orjson.loads(opened) if opened else None
        return job_object(
            generation, job, answer, now=utcnow(), outputs_hours=self.policy.outputs_hours
        )


# Both rows in one select, their columns told apart by a prefix.
_BOTH = [
    *(c.label(f"g_{c.key}") for c in Generation.__table__.columns),
    *(c.label(f"j_{c.key}") for c in GenerationJob.__table__.columns),
]


def _split(row: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(usage row, job row or None) of a `_BOTH` row."""
    values = row._mapping
    generation = {k[2:]: v for k, v in values.items() if k.startswith("g_")}
    job = {k[2:]: v for k, v in values.items() if k.startswith("j_")}
    return generation, job if job["id"] is not None else None


def _status_is(status: str) -> Any:
    processing = Generation.status == "processing"
    cancelled = GenerationJob.state == "cancelled"
    return {
        "queued": and_(processing, GenerationJob.state == "queued"),
        "running": and_(processing, GenerationJob.state != "queued"),
        "succeeded": Generation.status == "success",
        "failed": and_(Generation.status == "error", ~cancelled),
        "cancelled": and_(Generation.status == "error", cancelled),
    }[status]


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


__all__ = ["JobFinished", "Jobs", "JobsPolicy"]
