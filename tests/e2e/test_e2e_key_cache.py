"""Two real servers sharing PostgreSQL: a key revoked on one is refused by the other at once,
although both remember authenticated keys (AUTH_CACHE_TTL_S, here far longer than the test).

`redis`: the servers have separate DATA_DIRs (as on two machines), so only Redis can tell
the other one. `file`: no Redis, one DATA_DIR (two processes on one machine).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import _recreate_pg
from tests.e2e.conftest import BIN, base_env, free_port, start_server
from tests.fakes.openai import FakeOpenAI
from tests.fakes.upstream import serve_in_thread

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IMAGE = {"model": "test/test", "prompt": "a lighthouse", "size": "64x64"}
ROUNDS = 5


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@contextlib.contextmanager
def _servers(envs: list[dict[str, str]]) -> Iterator[list[str]]:
    started: list[subprocess.Popen[str]] = []
    urls = []
    try:
        for env in envs:
            port = free_port()
            started.append(start_server(env, port)[0])
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in started:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
            if process.stdout:
                process.stdout.close()


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _auth(client: httpx.Client, url: str, key: str) -> int:
    response = client.post(f"{url}/v1/auth/test", headers={"Authorization": f"Bearer {key}"})
    return response.status_code


@pytest.mark.postgres
@pytest.mark.parametrize("channel", ["redis", "file"])
def test_a_key_revoked_on_one_server_is_refused_by_the_other_at_once(
    tmp_path: Path, channel: str
) -> None:
    database = f"{os.environ.get('TEST_PG_DB_PREFIX', 'ir_test')}_e2e_keys"
    asyncio.run(_recreate_pg(database))
    namespace = f"e2e-keys-{os.urandom(4).hex()}"
    with serve_in_thread(FakeOpenAI().app) as openai_url:
        env = base_env(tmp_path / "a", openai_url) | {
            "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
            "AUTH_CACHE_TTL_S": "60",  # nothing in this test may pass by expiring
            # Shared by every server of one database (README: several machines).
            "PII_KEK": _key(),
            "BLIND_INDEX_KEY": _key(),
            "JWT_SECRET": _key(),
        }
        if channel == "redis":
            env |= {"REDIS_URL": REDIS_URL, "REDIS_NAMESPACE": namespace}
            envs = [env, env | {"DATA_DIR": str(tmp_path / "b")}]
        else:
            envs = [env, env]
        try:
            with _servers(envs) as (first, second), httpx.Client(timeout=30) as client:
                _cli(env, "users", "create", "keys@example.com")
                _cli(env, "credits", "grant", "keys@example.com", "1", "--reason", "e2e")
                created = _cli(env, "keys", "create", "keys@example.com", "--management")
                manager = {"Authorization": f"Bearer {created.strip().splitlines()[-1]}"}
                for round_ in range(ROUNDS):
                    made = client.post(
                        f"{first}/v1/api-keys", headers=manager, json={"name": f"k{round_}"}
                    )
                    assert made.status_code == 201, made.text
                    key_id, key = made.json()["id"], made.json()["key"]
                    # Both servers now remember the key (each asked twice).
                    assert [_auth(client, u, key) for u in (first, second) * 2] == [200] * 4
                    revoke_on, other = (first, second) if round_ % 2 == 0 else (second, first)
                    deleted = client.delete(f"{revoke_on}/v1/api-keys/{key_id}", headers=manager)
                    assert deleted.status_code == 200, deleted.text
                    # Immediately, on the other server and on this one.
                    assert _auth(client, other, key) == 401
                    refused = client.post(
                        f"{other}/v1/openai/images/generations",
                        headers={"Authorization": f"Bearer {key}"},
                        json=IMAGE,
                    )
                    assert refused.status_code == 401, refused.text
                    assert _auth(client, revoke_on, key) == 401

                # The operator's CLI, a third process, revokes too.
                made = client.post(f"{first}/v1/api-keys", headers=manager, json={"name": "cli"})
                key_id, key = made.json()["id"], made.json()["key"]
                assert [_auth(client, u, key) for u in (first, second) * 2] == [200] * 4
                _cli(envs[1], "keys", "revoke", key_id)
                assert [_auth(client, u, key) for u in (first, second)] == [401, 401]
        finally:
            client_ = redis.Redis.from_url(REDIS_URL)
            stale = list(client_.scan_iter(f"{namespace}:*"))
            if stale:
                client_.delete(*stale)
            client_.close()
