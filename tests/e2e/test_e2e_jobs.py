"""Jobs against real server processes (issue #14 §2–3): plain HTTP for the job routes, the
official `openai` SDK for the unchanged synchronous shape, a client that hangs up, and
kill -9 of a PostgreSQL deployment with 20 video jobs in flight at a slow fake fal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import openai
import pytest

from image_router.providers import PROVIDERS
from tests.conftest import PG_ADMIN, _recreate_pg
from tests.e2e.conftest import BIN, Server, base_env, free_port, running_server
from tests.fakes.fal import DEFAULT_API_KEY, FakeFal
from tests.fakes.fal_video import FAL_VIDEO, FAL_VIDEO_PRICE, fal_video_catalog
from tests.fakes.upstream import serve_in_thread

pytestmark = pytest.mark.e2e

ASYNC = {"Prefer": "respond-async"}
DALLE2 = {"model": "openai/dall-e-2", "size": "1024x1024", "prompt": "a lighthouse"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("jobs-server")) as started:
        yield started


def new_key(server: Server, usd: str = "1") -> str:
    email = f"jobs-{os.urandom(4).hex()}@example.com"
    server.cli("users", "create", email)
    server.cli("credits", "grant", email, usd, "--reason", "e2e")
    return server.cli("keys", "create", email).stdout.strip().splitlines()[-1]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def poll(url: str, key: str, job_id: str, *, until: str, within_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        response = httpx.get(f"{url}/v1/jobs/{job_id}", headers=auth(key))
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["status"] == until:
            return job
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, f"job {job_id} stayed {job['status']}"
        time.sleep(0.1)


def balance(server: Server, key: str) -> float:
    return float(httpx.post(f"{server.url}/v1/auth/test", headers=auth(key)).json()["credits"])


def test_async_image_and_video_over_http(server: Server) -> None:
    key = new_key(server)
    sync = httpx.post(
        f"{server.url}/v1/openai/images/generations", headers=auth(key), json=DALLE2
    ).json()
    for path, body in (
        ("/v1/openai/images/generations", DALLE2),
        ("/v1/openai/videos/generations", {"model": "ir/test-video", "prompt": "waves"}),
    ):
        accepted = httpx.post(f"{server.url}{path}", headers=auth(key) | ASYNC, json=body)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        assert accepted.headers["location"] == f"/v1/jobs/{job_id}"
        assert accepted.headers["preference-applied"] == "respond-async"
        assert accepted.headers["x-generation-id"] == job_id
        location = accepted.headers["location"]
        done = poll(server.url, key, location.rsplit("/", 1)[-1], until="succeeded")
        [item] = done["data"]
        assert item.keys() == sync["data"][0].keys()
        output = httpx.get(item["url"])
        assert output.status_code == 200
        assert output.headers["content-type"] == ("image/png" if "images" in path else "video/mp4")
    listed = httpx.get(f"{server.url}/v1/jobs", params={"limit": 1}, headers=auth(key)).json()
    assert listed["has_more"] is True and listed["data"][0]["modality"] == "video"
    rest = httpx.get(
        f"{server.url}/v1/jobs", params={"after": listed["last_id"]}, headers=auth(key)
    ).json()
    assert [j["modality"] for j in rest["data"]] == ["image"] and rest["has_more"] is False
    other = new_key(server)
    assert httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=auth(other)).status_code == 404


def test_cancel_over_http_releases_the_hold(server: Server) -> None:
    key = new_key(server)
    server.openai.hang_next(30)
    accepted = httpx.post(
        f"{server.url}/v1/openai/images/generations", headers=auth(key) | ASYNC, json=DALLE2
    )
    job_id = accepted.json()["id"]
    poll(server.url, key, job_id, until="running")
    assert balance(server, key) == 10_000 - 160

    cancelled = httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", headers=auth(key))

    assert cancelled.json()["status"] == "cancelled"
    assert balance(server, key) == 10_000
    again = httpx.post(f"{server.url}/v1/jobs/{job_id}/cancel", headers=auth(key))
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_not_cancellable"


def test_without_prefer_the_sdk_gets_the_synchronous_answer(server: Server) -> None:
    key = new_key(server)
    client = openai.OpenAI(api_key=key, base_url=f"{server.url}/v1/openai", max_retries=0)
    raw = client.images.with_raw_response.generate(model="openai/dall-e-2", prompt="a fox")
    result = raw.parse()
    assert raw.status_code == 200
    assert result.data is not None and (result.data[0].url or "").startswith(server.url)
    # The synchronous answer's id reads as a job too.
    job = httpx.get(
        f"{server.url}/v1/jobs/{raw.headers['x-generation-id']}", headers=auth(key)
    ).json()
    assert job["status"] == "succeeded" and job["data"][0]["url"] == result.data[0].url


def test_a_client_that_hangs_up_leaves_a_job_that_completes(server: Server) -> None:
    key = new_key(server)
    server.openai.hang_next(2)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{server.url}/v1/openai/images/generations",
            headers=auth(key),
            json=DALLE2,
            timeout=httpx.Timeout(60, read=0.5),
        )
    deadline = time.monotonic() + 10
    while not (jobs := httpx.get(f"{server.url}/v1/jobs", headers=auth(key)).json()["data"]):
        assert time.monotonic() < deadline, "the hung-up request never became a job"
        time.sleep(0.1)
    [job] = jobs
    done = poll(server.url, key, job["id"], until="succeeded")
    assert done["cost"] == 0.016
    assert balance(server, key) == 10_000 - 160


# ------------------------------------------------------------------ kill -9, PostgreSQL

JOBS = 20
PG_DB = "ir_jobs_e2e_kill"


def start_group(env: dict[str, str], port: int, workers: int) -> subprocess.Popen[str]:
    """`image-router serve` in a process group of its own (master and workers), ready."""
    process = subprocess.Popen(
        [str(BIN), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
        assert process.poll() is None, "the server exited"
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("the server did not become healthy")


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _db(sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{PG_DB}")
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def db(sql: str, *args: Any) -> list[asyncpg.Record]:
    return asyncio.run(_db(sql, *args))


@pytest.mark.postgres
def test_kill_9_with_20_video_jobs_at_the_vendor(tmp_path: Path) -> None:
    asyncio.run(_recreate_pg(PG_DB))
    fal = FakeFal()
    fal.polls_before_done = 10**9  # slow: nothing finishes before the kill
    catalog = fal_video_catalog(tmp_path)
    with serve_in_thread(fal.app) as fal_url:
        env = base_env(tmp_path, "http://unused")
        env.update(
            DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{PG_DB}",
            CATALOG_PATHS=str(catalog),
            POLL_INTERVAL_S="0.2",
            JOB_LEASE_S="3",
            JOB_RESUME_INTERVAL_S="0.5",
            LOG_LEVEL="INFO",
        )
        env[PROVIDERS["fal"].key_env] = DEFAULT_API_KEY
        env[PROVIDERS["fal"].base_url_env[0]] = fal_url
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_group(env, port, workers=2)
        try:
            cli(env, "users", "create", "durable@example.com")
            cli(env, "credits", "grant", "durable@example.com", "2", "--reason", "e2e")
            key = cli(env, "keys", "create", "durable@example.com").strip().splitlines()[-1]
            ids = []
            for index in range(JOBS):
                accepted = httpx.post(
                    f"{url}/v1/openai/videos/generations",
                    headers=auth(key) | ASYNC,
                    json={"model": FAL_VIDEO, "prompt": f"slow wave {index}"},
                    timeout=30,
                )
                assert accepted.status_code == 202, accepted.text
                ids.append(accepted.json()["id"])
            deadline = time.monotonic() + 30
            while len(db("SELECT id FROM generation_jobs WHERE vendor_ref IS NOT NULL")) < JOBS:
                assert time.monotonic() < deadline, "fal never accepted all 20 jobs"
                time.sleep(0.2)
            assert len(fal.jobs) == JOBS

            os.killpg(server.pid, signal.SIGKILL)  # master and workers, mid-wait
            server.wait(timeout=10)
            processing = db("SELECT id FROM generations WHERE status = 'processing'")
            assert len(processing) == JOBS
            assert fal.cancelled == []  # a killed process cancels nothing

            for queued in fal.jobs.values():  # the vendor finishes while we are down
                queued.pending_polls = queued.polls + 3
            server = start_group(env, port, workers=2)
            for job_id in ids:
                done = poll(url, key, job_id, until="succeeded", within_s=60)
                assert done["cost"] == 0.05
                assert httpx.get(done["data"][0]["url"]).headers["content-type"] == "video/mp4"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)

    assert len(fal.jobs) == JOBS  # each vendor job submitted exactly once
    assert fal.cancelled == []
    refs = db("SELECT vendor_ref->>'request_id' AS rid FROM generation_jobs")
    assert sorted(r["rid"] for r in refs) == sorted(fal.jobs)
    rows = db("SELECT status, cost FROM generations")
    assert [(r["status"], r["cost"]) for r in rows] == [("success", FAL_VIDEO_PRICE)] * JOBS
    per_generation = db(
        "SELECT generation_id, SUM(amount) AS total FROM ledger_entries "
        "WHERE generation_id IS NOT NULL GROUP BY generation_id"
    )
    assert sorted(r["generation_id"] for r in per_generation) == sorted(ids)
    assert {int(r["total"]) for r in per_generation} == {-FAL_VIDEO_PRICE}  # charged once
    [account] = db(
        "SELECT a.balance, (SELECT SUM(amount) FROM ledger_entries e WHERE e.account_id = a.id)"
        " AS entries FROM accounts a WHERE a.id IN"
        " (SELECT account_id FROM ledger_entries WHERE generation_id IS NOT NULL)"
    )
    assert account["balance"] == account["entries"] == 20_000 - JOBS * FAL_VIDEO_PRICE
