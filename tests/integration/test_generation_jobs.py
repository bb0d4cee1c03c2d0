"""Async and durable generations (issue #14 §2–3): `Prefer: respond-async`, the job routes,
cancel, pagination, idempotency, the resumer and the hold reconciler's respect for leases.

The gateway runs in-process with its vendors served by fakes; SQLite and PostgreSQL.
The real-server tests (plain HTTP, the `openai` SDK, kill -9) are in
tests/e2e/test_e2e_jobs.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from image_router.db.session import unit_of_work
from image_router.db.tables import GenerationJob
from image_router.generation.recovery import release_expired_holds
from image_router.jobs.resumer import JobResumer
from image_router.jobs.service import Jobs
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id
from image_router.ledger import service as ledger
from image_router.usage import service as usage
from tests.conftest import Gateway, _vendors_gateway, processing_row
from tests.fakes.fal import FakeFal
from tests.fakes.fal_video import FAL_VIDEO, FAL_VIDEO_PRICE, fal_video_catalog
from tests.integration.webhook_helpers import HOOK, Hooks, hooks_gateway

IMAGE = "/v1/openai/images/generations"
VIDEO = "/v1/openai/videos/generations"
ASYNC = {"Prefer": "respond-async"}
DALLE2 = {"model": "openai/dall-e-2", "size": "1024x1024", "prompt": "a lighthouse"}
DALLE2_PRICE = 160  # credits: $0.016


async def poll(gw: Gateway, key: str, job_id: str, *, until: str, within_s: float = 20) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        response = await gw.client.get(
            f"/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text
        job = response.json()
        if job["status"] == until:
            return job
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, f"job stayed {job['status']}"
        await asyncio.sleep(0.05)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def until_rows(
    gw: Gateway, sql: str, *, present: bool = True, failing: str, **params: Any
) -> None:
    """Wait (10 s at most) until `sql` finds rows, or (`present=False`) none."""
    for _ in range(500):
        if bool(await gw.rows(sql, **params)) == present:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(failing)


async def test_an_async_image_is_a_job_with_the_synchronous_answers_data(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    account, key = await gw.account("1.00")

    sync = await gw.post(IMAGE, key, json=DALLE2)
    assert sync.status_code == 200
    accepted = await gw.post(IMAGE, key, json=DALLE2, headers=ASYNC)

    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    job_id = accepted.headers["X-Generation-Id"]
    assert accepted.headers["Location"] == f"/v1/jobs/{job_id}"
    assert accepted.headers["Preference-Applied"] == "respond-async"
    assert job == {
        "id": job_id,
        "object": "job",
        "status": "queued",
        "model": "openai/dall-e-2",
        "modality": "image",
        "created": job["created"],
        "finished": None,
        "progress": None,
        "data": None,
        "latency": None,
        "cost": None,
        "error": None,
    }
    done = await poll(gw, key, job_id, until="succeeded")
    assert done["finished"] >= done["created"]
    assert done["cost"] == 0.016 and isinstance(done["latency"], int)
    assert done["error"] is None
    # The same shape as the synchronous answer's data: url + revised_prompt per item.
    [item] = done["data"]
    [sync_item] = sync.json()["data"]
    assert item.keys() == sync_item.keys()
    assert item["url"].startswith("http://gateway.test/files/") and job_id in item["url"]
    # Charged once per generation; the ledger explains the balance.
    assert await gw.balance(account) == 10_000 - 2 * DALLE2_PRICE == await gw.ledger_sum(account)
    [row] = await gw.rows("SELECT status, cost FROM generations WHERE id = :id", id=job_id)
    assert row == {"status": "success", "cost": DALLE2_PRICE}


async def test_an_async_video_job(any_gateway: Gateway) -> None:
    gw = any_gateway
    _, key = await gw.account("1.00")
    accepted = await gw.post(
        VIDEO, key, json={"model": "ir/test-video", "prompt": "waves"}, headers=ASYNC
    )
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["modality"] == "video"
    done = await poll(gw, key, accepted.json()["id"], until="succeeded")
    [item] = done["data"]
    video = await gw.client.get(item["url"].removeprefix("http://gateway.test"))
    assert video.headers["content-type"] == "video/mp4"


async def test_refusals_happen_before_any_job(gateway: Gateway) -> None:
    _, key = await gateway.account()  # no credit
    refused = await gateway.post(IMAGE, key, json=DALLE2, headers=ASYNC)
    assert refused.status_code == 402
    ephemeral = await gateway.post(
        IMAGE, key, json={**DALLE2, "response_format": "b64_ephemeral"}, headers=ASYNC
    )
    assert ephemeral.status_code == 400
    assert ephemeral.json()["error"]["code"] == "async_ephemeral_output"
    assert await gateway.rows("SELECT id FROM generation_jobs") == []
    assert gateway.openai.requests == []


async def test_cancel_releases_the_hold_and_a_finished_job_refuses(any_gateway: Gateway) -> None:
    gw = any_gateway
    account, key = await gw.account("1.00")
    gw.openai.hang_next(30)
    accepted = await gw.post(IMAGE, key, json=DALLE2, headers=ASYNC)
    job_id = accepted.json()["id"]
    await poll(gw, key, job_id, until="running")
    for _ in range(500):
        if gw.openai.requests:
            break
        await asyncio.sleep(0.01)
    assert await gw.balance(account) == 10_000 - DALLE2_PRICE  # held

    cancelled = await gw.client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["error"]["code"] == "job_cancelled"
    assert body["data"] is None and body["cost"] is None
    assert await gw.balance(account) == 10_000 == await gw.ledger_sum(account)
    again = await gw.client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_not_cancellable"
    # The job's task ends without charging anything, however late the vendor answers.
    await asyncio.sleep(0.2)
    assert (await poll(gw, key, job_id, until="cancelled"))["status"] == "cancelled"
    assert await gw.balance(account) == 10_000 == await gw.ledger_sum(account)


async def test_another_accounts_job_is_not_found(gateway: Gateway) -> None:
    _, key = await gateway.account("1.00")
    _, other = await gateway.account("1.00")
    job_id = (await gateway.post(IMAGE, key, json=DALLE2, headers=ASYNC)).json()["id"]
    await poll(gateway, key, job_id, until="succeeded")
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/cancel")):
        response = await gateway.client.request(method, path, headers=auth(other))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"
    missing = await gateway.client.get("/v1/jobs/nope", headers=auth(key))
    assert missing.status_code == 404
    unauthenticated = await gateway.client.get(f"/v1/jobs/{job_id}")
    assert unauthenticated.status_code == 401


async def test_the_list_is_newest_first_paginated_and_filtered(any_gateway: Gateway) -> None:
    gw = any_gateway
    _, key = await gw.account("1.00")
    _, other = await gw.account("1.00")
    await gw.post(IMAGE, other, json=DALLE2, headers=ASYNC)  # never listed for `key`
    ids = []
    for index in range(5):
        accepted = await gw.post(
            IMAGE, key, json={**DALLE2, "prompt": f"image {index}"}, headers=ASYNC
        )
        ids.append(accepted.json()["id"])
        await poll(gw, key, ids[-1], until="succeeded")
    gw.openai.hang_next(30)
    running = (await gw.post(IMAGE, key, json=DALLE2, headers=ASYNC)).json()["id"]
    await poll(gw, key, running, until="running")
    newest_first = [running, *reversed(ids)]

    seen, after = [], None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"after": after} if after else {})
        page = (await gw.client.get("/v1/jobs", params=params, headers=auth(key))).json()
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [job["id"] for job in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
        assert after == page["data"][-1]["id"]
    assert seen == newest_first

    succeeded = (
        await gw.client.get("/v1/jobs", params={"status": "succeeded"}, headers=auth(key))
    ).json()
    assert [job["id"] for job in succeeded["data"]] == list(reversed(ids))
    assert all(job["status"] == "succeeded" for job in succeeded["data"])
    only_running = (
        await gw.client.get("/v1/jobs", params={"status": "running"}, headers=auth(key))
    ).json()
    assert [job["id"] for job in only_running["data"]] == [running]
    bad = await gw.client.get("/v1/jobs", params={"status": "done"}, headers=auth(key))
    assert bad.status_code == 400
    unknown_cursor = await gw.client.get("/v1/jobs", params={"after": "x"}, headers=auth(key))
    assert unknown_cursor.status_code == 404
    await gw.client.post(f"/v1/jobs/{running}/cancel", headers=auth(key))


async def test_an_idempotent_async_request_answers_the_same_job(gateway: Gateway) -> None:
    account, key = await gateway.account("1.00")
    headers = ASYNC | {"Idempotency-Key": "job-key-1"}
    first = await gateway.post(IMAGE, key, json=DALLE2, headers=headers)
    second = await gateway.post(IMAGE, key, json=DALLE2, headers=headers)

    assert first.status_code == second.status_code == 202
    assert second.json()["id"] == first.json()["id"]
    assert second.headers["Location"] == first.headers["Location"]
    assert second.headers["Idempotent-Replayed"] == "true"
    await poll(gateway, key, first.json()["id"], until="succeeded")
    assert len(await gateway.rows("SELECT id FROM generations")) == 1
    assert await gateway.balance(account) == 10_000 - DALLE2_PRICE


async def test_a_synchronous_generation_reads_as_a_job(gateway: Gateway) -> None:
    _, key = await gateway.account("1.00")
    sync = await gateway.post(IMAGE, key, json=DALLE2)
    job_id = sync.headers["X-Generation-Id"]
    job = (await gateway.client.get(f"/v1/jobs/{job_id}", headers=auth(key))).json()
    assert job["status"] == "succeeded"
    assert job["data"] == [{"url": sync.json()["data"][0]["url"]}]
    # Only jobs are listed: a synchronous request answered to its client is not one.
    listed = (await gateway.client.get("/v1/jobs", headers=auth(key))).json()
    assert listed["data"] == []


async def test_a_job_whose_outputs_expired_says_so(gateway: Gateway) -> None:
    _, key = await gateway.account("1.00")
    job_id = (await gateway.post(IMAGE, key, json=DALLE2, headers=ASYNC)).json()["id"]
    await poll(gateway, key, job_id, until="succeeded")
    await gateway.execute(
        "UPDATE generations SET outputs_expire_at = :past WHERE id = :id",
        past=utcnow() - timedelta(minutes=1),
        id=job_id,
    )
    job = (await gateway.client.get(f"/v1/jobs/{job_id}", headers=auth(key))).json()
    assert job["status"] == "succeeded" and job["data"] is None
    assert job["error"]["code"] == "job_outputs_expired"


# ----------------------------------------------------------------- the resumer


async def _orphan(gw: Gateway, account: str, *, vendor_ref: dict[str, Any] | None) -> str:
    """A processing generation with its hold, and a job row whose process died."""
    gid = new_id()
    row = processing_row(
        gid, account, DALLE2_PRICE, utcnow() + timedelta(minutes=5), model="openai/dall-e-2"
    )
    async with unit_of_work(gw.res.engine) as conn:
        assert await ledger.hold(conn, account, DALLE2_PRICE, generation_id=gid)
        await usage.start(conn, row)
    now = utcnow()
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(
            GenerationJob.__table__.insert().values(
                id=gid,
                account_id=account,
                origin="async",
                modality="image",
                model="openai/dall-e-2",
                state="running",
                spec={},
                vendor_ref=vendor_ref,
                vendor_accepted_at=now if vendor_ref is not None else None,
                owner="dead-process",
                lease_until=now - timedelta(seconds=1),
                deadline_at=now + timedelta(minutes=5),
                created_at=now,
            )
        )
    return gid


async def test_a_job_the_vendor_never_accepted_fails_honestly(any_gateway: Gateway) -> None:
    gw = any_gateway
    account, key = await gw.account("1.00")
    gid = await _orphan(gw, account, vendor_ref=None)
    assert await gw.balance(account) == 10_000 - DALLE2_PRICE

    resumer = gw.res.job_resumer
    assert resumer is not None
    assert await resumer.pass_once() == 1

    job = await poll(gw, key, gid, until="failed")
    assert job["error"]["code"] == "job_interrupted"
    assert await gw.balance(account) == 10_000 == await gw.ledger_sum(account)
    assert await resumer.pass_once() == 0  # finished: never claimed again


async def test_the_reconciler_leaves_a_job_on_record_to_the_resumer(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    account, _ = await gw.account("1.00")
    gid = await _orphan(gw, account, vendor_ref={"provider": "openai", "v": 1})
    past = utcnow() - timedelta(hours=1)
    await gw.execute("UPDATE generations SET deadline_at = :past WHERE id = :id", past=past, id=gid)

    assert await release_expired_holds(gw.res.engine) == 0
    assert await gw.balance(account) == 10_000 - DALLE2_PRICE

    # Without a vendor job on record and with its lease lapsed, it is the reconciler's.
    await gw.execute(
        "UPDATE generation_jobs SET vendor_ref = NULL, vendor_accepted_at = NULL WHERE id = :id",
        id=gid,
    )
    assert await release_expired_holds(gw.res.engine) == 1
    assert await gw.balance(account) == 10_000 == await gw.ledger_sum(account)


# ----------------------------------------------------------------- durable vendor jobs


@pytest.fixture
async def fal_gateway(any_db_url: str, tmp_path: Path) -> AsyncIterator[Gateway]:
    """Every vendor at its fake, and a video model served by fal's queue (resumable)."""
    overrides = {
        "catalog_paths": [fal_video_catalog(tmp_path)],
        "poll_interval_s": 0.02,
        "job_lease_s": 1.0,
    }
    async for gw in _vendors_gateway(any_db_url, tmp_path, overrides):
        yield gw


async def _accepted_by_fal(gw: Gateway, key: str) -> tuple[str, FakeFal]:
    """An async fal video job, once fal accepted it and its reference is on record."""
    fal = gw.fakes["fal"]
    assert isinstance(fal, FakeFal)
    fal.polls_before_done = 10**6  # the vendor is slow: it runs until the test says
    accepted = await gw.post(
        VIDEO, key, json={"model": FAL_VIDEO, "prompt": "a slow wave"}, headers=ASYNC
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    await until_rows(
        gw,
        "SELECT id FROM generation_jobs WHERE id = :id AND vendor_ref IS NOT NULL",
        failing="the vendor's reference was never recorded",
        id=job_id,
    )
    return job_id, fal


def _second_process(gw: Gateway) -> JobResumer:
    """Another worker's job resumer, sharing the database and the vendors."""
    first = gw.res.generation_jobs
    assert first is not None
    other = Jobs(gw.res.engine, gw.res.vault, first.policy, owner="another-process")
    other.attach(gw.res.generator)
    return JobResumer(other)


async def _handed_over(gw: Gateway) -> tuple[str, str, str, FakeFal]:
    """(account, key, job id, fal) of a job fal accepted, whose worker then stopped: its
    job on record handed over, never cancelled."""
    account, key = await gw.account("1.00")
    job_id, fal = await _accepted_by_fal(gw, key)
    resumer = gw.res.job_resumer
    assert resumer is not None
    resumer.begin_stop()
    await until_rows(
        gw,
        "SELECT id FROM generation_jobs WHERE owner IS NOT NULL",
        present=False,
        failing="the leases were never dropped",
    )
    return account, key, job_id, fal


async def test_a_vendor_job_on_record_is_resumed_not_resubmitted(
    fal_gateway: Gateway,
) -> None:
    gw = fal_gateway
    account, key, job_id, fal = await _handed_over(gw)

    # Handed over, not abandoned: the vendor job runs on and the credit stays held.
    assert fal.cancelled == []
    assert await gw.balance(account) == 10_000 - FAL_VIDEO_PRICE
    [row] = await gw.rows("SELECT status FROM generations WHERE id = :id", id=job_id)
    assert row["status"] == "processing"

    other = _second_process(gw)
    for queued in fal.jobs.values():
        queued.pending_polls = queued.polls + 2  # the vendor finishes soon
    assert await other.pass_once() == 1
    done = await poll(gw, key, job_id, until="succeeded")

    assert len(fal.jobs) == 1  # submitted once, waited on by two processes
    [item] = done["data"]
    video = await gw.client.get(item["url"].removeprefix("http://gateway.test"))
    assert video.headers["content-type"] == "video/mp4"
    assert await gw.balance(account) == 10_000 - FAL_VIDEO_PRICE == await gw.ledger_sum(account)
    [row] = await gw.rows("SELECT status, cost FROM generations WHERE id = :id", id=job_id)
    assert row == {"status": "success", "cost": FAL_VIDEO_PRICE}
    assert await other.pass_once() == 0


async def test_cancelling_a_job_no_task_here_waits_on_stops_it_at_the_vendor(
    fal_gateway: Gateway,
) -> None:
    gw = fal_gateway
    account, key, job_id, fal = await _handed_over(gw)

    cancelled = await gw.client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key))

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert fal.cancelled == list(fal.jobs)  # stopped at fal from the reference
    assert await gw.balance(account) == 10_000 == await gw.ledger_sum(account)
    assert await _second_process(gw).pass_once() == 0  # nothing left to resume


async def test_a_resumed_job_past_its_deadline_is_cancelled_and_released(
    fal_gateway: Gateway,
) -> None:
    gw = fal_gateway
    account, key, job_id, fal = await _handed_over(gw)
    past = utcnow() - timedelta(seconds=1)
    await gw.execute(
        "UPDATE generation_jobs SET deadline_at = :past WHERE id = :id", past=past, id=job_id
    )

    assert await _second_process(gw).pass_once() == 1
    job = await poll(gw, key, job_id, until="failed")

    assert job["error"]["code"] == "upstream_timeout"
    assert fal.cancelled == list(fal.jobs)
    assert await gw.balance(account) == 10_000 == await gw.ledger_sum(account)


# ----------------------------------------------------------------- webhooks


@pytest.fixture
async def hooks(db_url: str, tmp_path: Path) -> AsyncIterator[Hooks]:
    async for found in hooks_gateway(db_url, tmp_path):
        jobs = found.gw.res.generation_jobs
        assert jobs is not None
        jobs.attach(found.gw.res.generator)  # the generator telling the test's webhooks
        yield found


async def test_an_async_request_with_a_webhook_url_gets_its_webhook(hooks: Hooks) -> None:
    gw = hooks.gw
    _, key = await gw.account("1.00")
    accepted = await gw.post(
        VIDEO,
        key,
        json={"model": "ir/test-video", "prompt": "waves", "webhook_url": HOOK},
        headers=ASYNC,
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    await poll(gw, key, job_id, until="succeeded")
    assert await hooks.run() == 1
    secret = (await gw.client.get("/v1/webhooks/default/secret", headers=auth(key))).json()["key"]
    [request] = hooks.receiver.requests
    event = hooks.receiver.verified(secret, request)
    assert event["type"] == "video.completed" and event["data"]["id"] == job_id


async def test_a_synchronous_request_cut_by_a_restart_is_told_where_its_job_is(
    fal_gateway: Gateway,
) -> None:
    gw = fal_gateway
    account, key = await gw.account("1.00")
    fal = gw.fakes["fal"]
    assert isinstance(fal, FakeFal)
    fal.polls_before_done = 10**6
    waiting = asyncio.ensure_future(
        gw.post(VIDEO, key, json={"model": FAL_VIDEO, "prompt": "a synchronous wave"})
    )
    await until_rows(
        gw,
        "SELECT id FROM generation_jobs WHERE vendor_ref IS NOT NULL",
        failing="the synchronous request's vendor job was never recorded",
    )

    gw.res.drain.cut_off()  # the drain time of a SIGTERM is up
    answer = await waiting

    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "job_continues"
    assert answer.headers["x-should-retry"] == "false"
    job_id = answer.headers["x-generation-id"]
    assert job_id in answer.json()["error"]["message"]
    assert fal.cancelled == []
    assert await gw.balance(account) == 10_000 - FAL_VIDEO_PRICE  # still held
    for queued in fal.jobs.values():
        queued.pending_polls = queued.polls + 2
    await until_rows(  # the stopping worker drops the lease once the task has ended
        gw,
        "SELECT id FROM generation_jobs WHERE owner IS NOT NULL",
        present=False,
        failing="the leases were never dropped",
    )
    assert await _second_process(gw).pass_once() == 1
    done = await poll(gw, key, job_id, until="succeeded")
    assert done["cost"] == 0.05 and len(fal.jobs) == 1
    assert await gw.balance(account) == 10_000 - FAL_VIDEO_PRICE == await gw.ledger_sum(account)


async def test_the_purge_drops_expired_answers_and_rows_whose_generation_is_gone(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    _, key = await gw.account("1.00")
    kept = (await gw.post(IMAGE, key, json=DALLE2, headers=ASYNC)).json()["id"]
    gone = (await gw.post(IMAGE, key, json=DALLE2, headers=ASYNC)).json()["id"]
    for job_id in (kept, gone):
        await poll(gw, key, job_id, until="succeeded")
    past = utcnow() - timedelta(minutes=1)
    await gw.execute(
        "UPDATE generation_jobs SET result_expires_at = :past WHERE id = :id", past=past, id=kept
    )
    await gw.execute("DELETE FROM ledger_entries WHERE generation_id = :id", id=gone)
    await gw.execute("DELETE FROM generations WHERE id = :id", id=gone)
    jobs = gw.res.generation_jobs
    assert jobs is not None

    await jobs.store.purge_answers()

    rows = await gw.rows("SELECT id, result_enc FROM generation_jobs")
    assert rows == [{"id": kept, "result_enc": None}]
