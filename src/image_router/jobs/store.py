"""The job rows (`generation_jobs`): every statement the jobs run, and nothing else.

A job row sits beside its generation's usage row (`generations`), which stays the
authority on money and outcome: reads join the two, and the only statement that touches
the usage row is `close_cancelled`, which closes it and gives its hold back in the same
transaction that marks the job. Leases carry this process's `owner` name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, delete, exists, or_, select, update
from sqlalchemy import insert as insert_into
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db.session import autocommit, unit_of_work
from image_router.db.tables import Generation, GenerationJob
from image_router.errors import NotFound
from image_router.jobs.views import ACTIVE_STATES, CANCELLED
from image_router.kit.clock import utcnow
from image_router.ledger import service as ledger
from image_router.usage import service as usage

log = logging.getLogger(__name__)

#: Jobs one resumer pass claims at most.
CLAIM_BATCH = 50

#: (usage row, job row or None): a generation and its job as the job API reads them.
Found = tuple[dict[str, Any], dict[str, Any] | None]


class Tracked(Protocol):
    """What the store reads of a generation this process tracks (jobs/tracker.py)."""

    @property
    def generation_id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def modality(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def deadline_at(self) -> datetime: ...


class JobStore:
    def __init__(self, engine: AsyncEngine, owner: str, lease_s: float) -> None:
        self.engine = engine
        self.owner = owner  # whose leases this store takes, renews and drops
        self.lease_s = lease_s

    # ------------------------------------------------------------- reads

    async def find(self, account_id: str, job_id: str) -> Found | None:
        """Any generation of the account, with its job row if it has one."""
        async with autocommit(self.engine) as conn:
            row = (
                await conn.execute(
                    select(*_BOTH)
                    .select_from(Generation)
                    .outerjoin(GenerationJob, GenerationJob.id == Generation.id)
                    .where(Generation.id == job_id, Generation.account_id == account_id)
                )
            ).first()
        return None if row is None else _split(row)

    async def page(
        self, account_id: str, *, limit: int, after: str | None, status: str | None
    ) -> tuple[list[Found], bool]:
        """The account's jobs, newest first: `limit` of them after the job `after`, and
        whether there are more."""
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
        return [_split(row) for row in rows[:limit]], len(rows) > limit

    # ------------------------------------------------------------- one job's life

    async def insert_async(self, job: Tracked, spec: Mapping[str, Any], now: datetime) -> None:
        """The row of an async job, queued, leased to this process."""
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                insert_into(GenerationJob).values(
                    id=job.generation_id,
                    account_id=job.account_id,
                    origin="async",
                    modality=job.modality,
                    model=job.model,
                    state="queued",
                    spec=dict(spec),
                    provider=None,
                    vendor_ref=None,
                    owner=self.owner,
                    lease_until=now + timedelta(seconds=self.lease_s),
                    deadline_at=job.deadline_at,
                    created_at=now,
                )
            )

    async def insert_detached(self, job: Tracked) -> None:
        """The row of a synchronous generation whose client hung up (it runs on)."""
        now = utcnow()
        values = self._sync_row(job, now) | {"state": "running", "spec": {}}
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                self._insert_stmt().values(**values).on_conflict_do_nothing(index_elements=["id"])
            )

    async def record_ref(
        self, job: Tracked, spec: Mapping[str, Any], ref: Mapping[str, Any]
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
            "lease_until": now + timedelta(seconds=self.lease_s),
        }
        statement = (
            self._insert_stmt()
            .values(**(self._sync_row(job, now) | accepted))
            .on_conflict_do_update(index_elements=["id"], set_=accepted)
        )
        async with unit_of_work(self.engine) as conn:
            await conn.execute(statement)

    async def set_running(self, job_id: str) -> None:
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id, GenerationJob.state == "queued")
                .values(state="running")
            )

    async def keep(self, job_id: str, sealed: bytes | None, expires_at: datetime) -> None:
        """The job's answer, sealed, until its outputs expire."""
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id)
                .values(result_enc=sealed, result_expires_at=expires_at)
            )

    async def record_error(self, job_id: str, error: Mapping[str, Any]) -> None:
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id, GenerationJob.state.in_(ACTIVE_STATES))
                .values(error=dict(error))
            )

    async def finish(self, job_id: str, *, ended: bool) -> None:
        """Mark a job row final (its outcome is the usage row's) and drop the lease; one
        not `ended` (suspended) only drops the lease, for the next process to take it at
        once."""
        async with unit_of_work(self.engine) as conn:
            if not ended:
                await conn.execute(
                    update(GenerationJob)
                    .where(GenerationJob.id == job_id, GenerationJob.owner == self.owner)
                    .values(owner=None, lease_until=None)
                )
                return
            status = (
                await conn.execute(select(Generation.status).where(Generation.id == job_id))
            ).scalar_one_or_none()
            if status == "processing":
                # Not closed (the settle failed): the lease lapses and the resumer or
                # the reconciler finishes it.
                return
            await conn.execute(
                update(GenerationJob)
                .where(GenerationJob.id == job_id, GenerationJob.state.in_(ACTIVE_STATES))
                .values(
                    state="succeeded" if status == "success" else "failed",
                    owner=None,
                    lease_until=None,
                    finished_at=utcnow(),
                )
            )

    async def close_cancelled(self, generation: Mapping[str, Any]) -> bool:
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

    # ------------------------------------------------------------- leases

    async def renew(self, ids: list[str]) -> None:
        """Extend this process's leases of `ids`."""
        if not ids:
            return
        until = utcnow() + timedelta(seconds=self.lease_s)
        async with unit_of_work(self.engine) as conn:
            for chunk in _chunks(ids, 500):
                await conn.execute(
                    update(GenerationJob)
                    .where(GenerationJob.owner == self.owner, GenerationJob.id.in_(chunk))
                    .values(lease_until=until)
                )

    async def claim(self) -> Sequence[Any]:
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
                .values(owner=self.owner, lease_until=now + timedelta(seconds=self.lease_s))
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

    async def drop_leases(self, ids: list[str] | None = None) -> None:
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

    async def purge_answers(self) -> None:
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

    # ------------------------------------------------------------- statements

    def _sync_row(self, job: Tracked, now: datetime) -> dict[str, Any]:
        return {
            "id": job.generation_id,
            "account_id": job.account_id,
            "origin": "sync",
            "modality": job.modality,
            "model": job.model,
            "owner": self.owner,
            "lease_until": now + timedelta(seconds=self.lease_s),
            "deadline_at": job.deadline_at,
            "created_at": now,
        }

    def _insert_stmt(self) -> Any:
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        return insert(GenerationJob)


# Both rows in one select, their columns told apart by a prefix.
_BOTH = [
    *(c.label(f"g_{c.key}") for c in Generation.__table__.columns),
    *(c.label(f"j_{c.key}") for c in GenerationJob.__table__.columns),
]


def _split(row: Any) -> Found:
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
