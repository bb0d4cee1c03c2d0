"""The background job queue (privacy/jobs.py) on SQLite and PostgreSQL: each job runs once
however many workers race for it, failures are retried with back-off and then given up,
and a job whose worker stopped is claimed again after its lease, without the stale worker
being able to overwrite the outcome."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from image_router.db.session import unit_of_work
from image_router.db.tables import Job
from image_router.kit.clock import utcnow
from image_router.privacy import jobs
from image_router.resources import Resources, build_resources
from tests.conftest import gateway_settings

ran: Counter[str] = Counter()


@pytest.fixture(autouse=True)
def _fresh_counts() -> None:
    ran.clear()


async def _resources(db: str, data_dir: Path) -> Resources:
    return build_resources(gateway_settings(db, data_dir))


@pytest.fixture
async def workers(any_db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Resources, Resources]]:
    """Two workers (separate engines, as two processes have) on one database."""
    first = await _resources(any_db_url, tmp_path / "a")
    second = await _resources(any_db_url, tmp_path / "b")
    yield first, second
    await first.close()
    await second.close()


async def _queue(res: Resources, kind: str, count: int = 1, **payload: Any) -> list[str]:
    async with unit_of_work(res.engine) as conn:
        return [
            await jobs.enqueue(conn, kind, account_id=None, payload=dict(payload, n=i))
            for i in range(count)
        ]


def _runner(res: Resources, kind: str, handler: jobs.Handler) -> jobs.JobRunner:
    """A worker that runs only `kind` (the server's runner in resources.py has every kind)."""
    return jobs.JobRunner(res.engine, {kind: handler})


async def _job(res: Resources, job_id: str) -> Any:
    async with unit_of_work(res.engine) as conn:
        return (await conn.execute(select(Job).where(Job.id == job_id))).one()


async def counting(job: jobs.JobRow) -> None:
    await asyncio.sleep(0.005)  # let the other worker interleave
    ran[job.id] += 1


async def test_two_workers_run_each_job_exactly_once(
    workers: tuple[Resources, Resources],
) -> None:
    a, b = workers
    run_a, run_b = _runner(a, "t_count", counting), _runner(b, "t_count", counting)
    queued = await _queue(a, "t_count", 12)
    done = await asyncio.gather(run_a.run_due(limit=50), run_b.run_due(limit=50))
    assert sum(done) == 12
    assert ran == Counter(dict.fromkeys(queued, 1))
    assert {(await _job(a, j)).status for j in queued} == {"done"}
    # Nothing left: another pass runs nothing again.
    assert await run_b.run_due() == 0
    assert sum(ran.values()) == 12


async def flaky(job: jobs.JobRow) -> None:
    ran[job.id] += 1
    if ran[job.id] < int(job.payload["succeed_on"]):
        raise RuntimeError(f"vendor down (attempt {job.attempts})")


async def test_a_failed_attempt_is_retried_after_the_back_off(
    workers: tuple[Resources, Resources],
) -> None:
    res = workers[0]
    runner = _runner(res, "t_flaky", flaky)
    [job_id] = await _queue(res, "t_flaky", succeed_on=2)
    t0 = utcnow()
    assert await runner.run_due(now=t0) == 1
    row = await _job(res, job_id)
    assert (row.status, row.attempts) == ("queued", 1)
    assert row.error == "RuntimeError: vendor down (attempt 1)"
    assert row.run_after == t0 + jobs.backoff(1)
    # Not due yet within the back-off.
    assert await runner.run_due(now=t0 + jobs.backoff(1) - timedelta(seconds=1)) == 0
    assert await runner.run_due(now=t0 + jobs.backoff(1)) == 1
    row = await _job(res, job_id)
    assert (row.status, row.attempts, row.error) == ("done", 2, None)
    assert ran[job_id] == 2


async def test_a_job_that_keeps_failing_is_given_up_with_its_error(
    workers: tuple[Resources, Resources],
) -> None:
    res = workers[0]
    runner = _runner(res, "t_flaky", flaky)
    [job_id] = await _queue(res, "t_flaky", succeed_on=99)
    now = utcnow()
    for _ in range(3):
        assert await runner.run_due(now=now, max_attempts=3) == 1
        now += jobs.BACKOFF_MAX
    row = await _job(res, job_id)
    assert (row.status, row.attempts) == ("failed", 3)
    assert row.error == "RuntimeError: vendor down (attempt 3)"
    assert row.finished_at is not None
    assert await runner.run_due(now=now + timedelta(days=1), max_attempts=3) == 0
    assert jobs.backoff(1) < jobs.backoff(2) < jobs.backoff(3) <= jobs.BACKOFF_MAX


async def test_an_expired_lease_is_claimed_again_and_the_stale_worker_cannot_finish(
    workers: tuple[Resources, Resources],
) -> None:
    hung, release = asyncio.Event(), asyncio.Event()

    async def hanging_once(job: jobs.JobRow) -> None:
        ran[job.id] += 1
        if job.attempts == 1:  # the first worker hangs until released
            hung.set()
            await release.wait()

    a, b = workers
    run_a, run_b = _runner(a, "t_hang", hanging_once), _runner(b, "t_hang", hanging_once)
    [job_id] = await _queue(a, "t_hang")
    t0 = utcnow()
    lease = timedelta(minutes=1)
    stale = asyncio.create_task(run_a.run_due(now=t0, lease=lease))
    await asyncio.wait_for(hung.wait(), timeout=10)
    # Within the lease nobody else takes it.
    assert await run_b.run_due(now=t0 + timedelta(seconds=59), lease=lease) == 0
    # After it, the second worker does, and finishes it.
    assert await run_b.run_due(now=t0 + timedelta(seconds=61), lease=lease) == 1
    row = await _job(a, job_id)
    assert (row.status, row.attempts) == ("done", 2)
    # The first worker wakes up: its outcome does not overwrite the newer attempt's.
    release.set()
    assert await stale == 1
    row = await _job(a, job_id)
    assert (row.status, row.attempts) == ("done", 2)
    assert ran[job_id] == 2  # hence handlers must be idempotent


async def test_a_worker_dying_on_the_last_attempt_fails_the_job(
    workers: tuple[Resources, Resources],
) -> None:
    res = workers[0]
    runner = _runner(res, "t_count", counting)
    [job_id] = await _queue(res, "t_count")
    now = utcnow()
    async with unit_of_work(res.engine) as conn:
        await conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status="running", attempts=3, locked_until=now - timedelta(seconds=1))
        )
    assert await runner.run_due(now=now, max_attempts=3) == 0
    row = await _job(res, job_id)
    assert row.status == "failed"
    assert "stopped" in row.error
    assert ran[job_id] == 0


async def test_jobs_of_unknown_kinds_and_of_rolled_back_requests_never_run(
    workers: tuple[Resources, Resources],
) -> None:
    res = workers[0]
    runner = _runner(res, "t_count", counting)
    [orphan] = await _queue(res, "t_nobody")  # no handler in this process

    async def failing_request() -> None:
        async with unit_of_work(res.engine) as conn:
            await jobs.enqueue(conn, "t_count", account_id=None, payload={})
            raise RuntimeError("the request failed after queueing")

    with pytest.raises(RuntimeError):
        await failing_request()
    assert await runner.run_due() == 0
    assert (await _job(res, orphan)).status == "queued"
    async with unit_of_work(res.engine) as conn:
        assert (await conn.execute(select(Job.id).where(Job.kind == "t_count"))).all() == []


async def test_the_background_loop_runs_due_jobs_until_stopped(
    workers: tuple[Resources, Resources],
) -> None:
    res = workers[0]
    stop = asyncio.Event()
    loop = asyncio.create_task(_runner(res, "t_count", counting).run_periodically(0.01, stop))
    [job_id] = await _queue(res, "t_count")
    for _ in range(500):
        if ran[job_id]:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(loop, timeout=10)
    assert ran[job_id] == 1
    assert (await _job(res, job_id)).status == "done"
