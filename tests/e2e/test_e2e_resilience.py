"""Real processes misbehaving: a worker killed with 50 paid requests in flight loses no
credit, and a circuit opened by one server is honoured by another sharing PostgreSQL and
Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from image_router.account.personal_data import email_index as blind_email_index
from image_router.kit.crypto import load_or_create_key
from tests.conftest import _recreate_pg
from tests.e2e.conftest import BIN, base_env, free_port, start_server
from tests.fakes.openai import FakeOpenAI
from tests.fakes.upstream import serve_in_thread

pytestmark = pytest.mark.e2e

DALLE2 = {"model": "openai/dall-e-2", "prompt": "slow one", "size": "1024x1024"}


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def email_index(data_dir: Path, email: str) -> str:
    """The blind index the server (with its key files under DATA_DIR) stores for `email`."""
    key = load_or_create_key(data_dir / "keys" / "blind-index.key", "BLIND_INDEX_KEY")
    return blind_email_index(key, email)


def sqlite_balance(data_dir: Path, email: str) -> tuple[int, int, int]:
    with sqlite3.connect(data_dir / "image-router.db") as db:
        (account_id, balance) = db.execute(
            "SELECT id, balance FROM accounts WHERE email_bidx = ?",
            (email_index(data_dir, email),),
        ).fetchone()
        (entries,) = db.execute(
            "SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE account_id = ?",
            (account_id,),
        ).fetchone()
        (processing,) = db.execute(
            "SELECT COUNT(*) FROM generations WHERE status = 'processing'"
        ).fetchone()
    return int(balance), int(entries), int(processing)


async def _fire(url: str, key: str, count: int) -> None:
    async with httpx.AsyncClient(timeout=60) as client:
        tasks = [
            asyncio.ensure_future(
                client.post(url, headers={"Authorization": f"Bearer {key}"}, json=DALLE2)
            )
            for _ in range(count)
        ]
        await asyncio.sleep(20)  # the server is killed meanwhile; the requests then fail
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_kill_9_with_50_requests_in_flight_loses_no_credit(
    tmp_path: Path,
) -> None:
    openai = FakeOpenAI()
    openai.delay = 60.0  # the vendor never answers before the kill
    with serve_in_thread(openai.app) as openai_url:
        env = base_env(tmp_path, f"{openai_url}/openai")
        env.update(OPENAI_BASE_URL=f"{openai_url}/v1", IMAGE_DEADLINE_S="2", HOLD_GRACE_S="0")
        port = free_port()
        process, _ = start_server(env, port)
        email = "crash@example.com"
        cli(env, "users", "create", email)
        cli(env, "credits", "grant", email, "1", "--reason", "crash test")
        key = cli(env, "keys", "create", email).strip().splitlines()[-1]

        runner = asyncio.new_event_loop()
        fire = runner.create_task(
            _fire(f"http://127.0.0.1:{port}/v1/openai/images/generations", key, 50)
        )
        deadline = time.monotonic() + 20
        while sqlite_balance(tmp_path, email)[0] != 10_000 - 50 * 160:
            runner.run_until_complete(asyncio.sleep(0.2))
            assert time.monotonic() < deadline, "the 50 holds were never all taken"
        assert sqlite_balance(tmp_path, email)[2] == 50

        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout:
            process.stdout.close()
        fire.cancel()
        runner.run_until_complete(asyncio.gather(fire, return_exceptions=True))
        runner.close()
        assert sqlite_balance(tmp_path, email)[0] == 10_000 - 50 * 160  # still held

        time.sleep(2.5)  # past the holds' deadline
        process, _ = start_server(env, port)
        try:
            deadline = time.monotonic() + 20
            while sqlite_balance(tmp_path, email)[2]:
                time.sleep(0.2)
                assert time.monotonic() < deadline, "holds were not released after restart"
            balance, entries, _ = sqlite_balance(tmp_path, email)
            assert balance == entries == 10_000
        finally:
            process.terminate()
            process.wait(timeout=15)
            if process.stdout:
                process.stdout.close()


@pytest.mark.postgres
def test_a_circuit_opened_by_one_server_is_honoured_by_another(tmp_path: Path) -> None:
    asyncio.run(_recreate_pg("ir_e2e_shared"))
    openai = FakeOpenAI()
    with serve_in_thread(openai.app) as openai_url:
        env = base_env(tmp_path, openai_url)
        env.update(
            OPENAI_BASE_URL=f"{openai_url}/v1",
            DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:5432/ir_e2e_shared",
            REDIS_URL=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
            REDIS_NAMESPACE=f"e2e-{os.urandom(4).hex()}",
            CIRCUIT_FAILURE_THRESHOLD="2",
            CIRCUIT_COOLDOWN_S="60",
        )
        ports = [free_port(), free_port()]
        servers = [start_server(env, port)[0] for port in ports]
        try:
            cli(env, "users", "create", "shared@example.com")
            cli(env, "credits", "grant", "shared@example.com", "1", "--reason", "e2e")
            key = cli(env, "keys", "create", "shared@example.com").strip().splitlines()[-1]
            headers = {"Authorization": f"Bearer {key}"}
            first, second = (f"http://127.0.0.1:{p}/v1/openai/images/generations" for p in ports)

            openai.fail_next(503, times=2)
            for _ in range(2):
                assert httpx.post(first, headers=headers, json=DALLE2).status_code == 502
            calls = len(openai.requests)

            refused = httpx.post(second, headers=headers, json=DALLE2)
            assert refused.status_code == 503
            assert refused.json()["error"]["code"] == "circuit_open"
            assert len(openai.requests) == calls  # the second server never called the vendor
            status = httpx.get(f"http://127.0.0.1:{ports[1]}/v1/providers/status").json()
            assert status["routes"]["openai/dall-e-2"]["state"] == "open"
            assert status["policy"]["shared"] is True
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=15)
                if server.stdout:
                    server.stdout.close()
