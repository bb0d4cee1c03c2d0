"""Limits between real processes: two servers sharing one Redis count one account's
requests together, and bans made with the real CLI reach a running server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from tests.e2e.conftest import BIN, base_env, free_port, start_server
from tests.fakes.openai import FakeOpenAI
from tests.fakes.upstream import serve_in_thread

pytestmark = pytest.mark.e2e

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_IMAGE = {"model": "test/test", "prompt": "a lighthouse"}
ACCOUNT = "API key rate limit exceeded, please try again later."
GENERAL = "Too many requests, please try again later."


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=60)


def new_key(env: dict[str, str], email: str) -> str:
    assert cli(env, "users", "create", email).returncode == 0
    created = cli(env, "keys", "create", email)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


@contextmanager
def servers(env: dict[str, str], count: int) -> Iterator[list[str]]:
    """`count` servers on one data directory, started one after the other."""
    ports = [free_port() for _ in range(count)]
    processes = []
    try:
        for port in ports:
            processes.append(start_server(env, port)[0])
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
            if process.stdout:
                process.stdout.close()


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"e2e-limits-{os.urandom(4).hex()}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


async def _burst(urls: list[str], key: str, per_server: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(
                    f"{url}/v1/openai/images/generations",
                    headers={"Authorization": f"Bearer {key}"},
                    json=TEST_IMAGE,
                )
                for url in urls
                for _ in range(per_server)
            )
        )


def test_two_servers_share_one_account_limit_through_redis(tmp_path: Path, namespace: str) -> None:
    with serve_in_thread(FakeOpenAI().app) as openai_url:
        env = base_env(tmp_path, openai_url)
        env.update(
            RATE_LIMITS_ENABLED="true",
            REDIS_URL=REDIS_URL,
            REDIS_NAMESPACE=namespace,
            RATE_LIMIT_ACCOUNT_IMAGE_MIN="3",
            RATE_LIMIT_ACCOUNT_IMAGE_MAX="3",
        )
        with servers(env, 2) as urls:
            key = new_key(env, "shared-limit@example.com")
            answers = asyncio.run(_burst(urls, key, per_server=3))
            # Each server alone would allow 3: together they allowed 3.
            assert sorted(r.status_code for r in answers) == [200] * 3 + [429] * 3
            for refused in (r for r in answers if r.status_code == 429):
                assert refused.json()["error"]["message"] == ACCOUNT
                assert refused.headers["ratelimit-policy"] == "3;w=1"
                assert refused.headers["retry-after"] == "1"
            ok = next(r for r in answers if r.status_code == 200)
            assert ok.headers["ratelimit-policy"] == "3;w=1"
            assert list(redis.Redis.from_url(REDIS_URL).scan_iter(f"{namespace}:limits:*"))

            time.sleep(1.1)  # the next window
            again = httpx.post(
                f"{urls[1]}/v1/openai/images/generations",
                headers={"Authorization": f"Bearer {key}"},
                json=TEST_IMAGE,
                timeout=30,
            )
            assert again.status_code == 200, again.text


def _generate(url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/openai/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json=TEST_IMAGE,
        timeout=30,
    )


def _eventually(url: str, key: str, status: int) -> httpx.Response:
    deadline = time.monotonic() + 10
    while True:
        response = _generate(url, key)
        if response.status_code == status or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_bans_from_the_cli_reach_a_running_server(tmp_path: Path) -> None:
    with serve_in_thread(FakeOpenAI().app) as openai_url:
        env = base_env(tmp_path, openai_url)
        env.update(RATE_LIMITS_ENABLED="true", BANS_REFRESH_S="0.5")
        with servers(env, 1) as [url]:
            key = new_key(env, "banned@example.com")
            assert _generate(url, key).status_code == 200

            added = cli(env, "bans", "add", "127.0.0.0/8", "--reason", "e2e abuse")
            assert added.returncode == 0, added.stderr
            refused = _eventually(url, key, 403)
            assert refused.status_code == 403
            assert refused.json()["error"]["message"] == "Access denied"
            assert refused.json()["error"]["type"] == "access_denied"
            assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 200

            assert cli(env, "bans", "add", "2001:DB8:0::/32", "--reason", "v6").returncode == 0
            listed = cli(env, "bans", "list").stdout
            assert "127.0.0.0/8" in listed and "e2e abuse" in listed
            assert "2001:db8::/32" in listed

            removed = cli(env, "bans", "remove", "127.0.0.0/8")
            assert removed.returncode == 0, removed.stderr
            assert _eventually(url, key, 200).status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "300.1.1.1", "--reason", "x"), "'300.1.1.1' is not an IP address or network"),
        (("add", "10.0.0.1/8", "--reason", "x"), "has host bits set"),
        (("add", "10.0.0.0/8", "--reason", " "), "--reason must not be empty"),
        (("remove", "192.0.2.1"), "192.0.2.1 is not banned"),
    ],
)
def test_bad_ban_commands_fail_with_a_message(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    env = base_env(tmp_path, "http://unused")
    done = cli(env, "bans", *args)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_a_duplicate_ban_is_refused(tmp_path: Path) -> None:
    env = base_env(tmp_path, "http://unused")
    assert cli(env, "bans", "add", "2001:db8::1", "--reason", "first").returncode == 0
    again = cli(env, "bans", "add", "2001:DB8:0:0::1", "--reason", "again")
    assert again.returncode == 1
    assert "2001:db8::1 is already banned" in again.stderr


def test_the_general_limiter_answers_429_from_a_real_server(tmp_path: Path) -> None:
    with serve_in_thread(FakeOpenAI().app) as openai_url:
        env = base_env(tmp_path, openai_url)
        env.update(RATE_LIMITS_ENABLED="true", RATE_LIMIT_GENERAL="5/minute")
        with servers(env, 1) as [url]:
            # start_server's health probe was counted too: go until the first refusal.
            answers = [httpx.get(f"{url}/health", timeout=10)]
            while answers[-1].status_code == 200 and len(answers) < 6:
                answers.append(httpx.get(f"{url}/health", timeout=10))
            *allowed, refused = answers
            remaining = [int(r.headers["ratelimit-remaining"]) for r in allowed]
            assert remaining == list(range(remaining[0], -1, -1))  # down to 0, one by one
            assert allowed[0].headers["ratelimit-policy"] == "5;w=60"
            assert refused.status_code == 429
            assert refused.json()["error"]["message"] == GENERAL
            assert refused.headers["ratelimit-remaining"] == "0"
            assert 1 <= int(refused.headers["retry-after"]) <= 60
