"""`Idempotency-Key` across a kill -9 of a real server process (issue #14 §1).

What holds, exactly (docs/idempotency.md):

- an answer stored before the kill is replayed after the restart — no vendor call, no
  charge;
- a request killed between the vendor's answer and its reply (here: while the gateway
  fetches the vendor's output, before the settle) stored no answer. A retry meets its claim
  (409 `idempotency_key_in_progress`) until the claim's lease passes (the deadline plus
  HOLD_GRACE_S, when the reconciler gives the dead request's hold back), then runs afresh:
  the vendor is called again, and the account is charged once — the killed attempt's hold
  is released, never charged. Handing over the killed attempt's own result needs the
  durable jobs of issue #14 §3.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.e2e.conftest import base_env, free_port, start_server
from tests.e2e.test_e2e_resilience import cli, sqlite_balance
from tests.fakes.openai import FakeOpenAI, image_bytes
from tests.fakes.upstream import serve_in_thread

pytestmark = pytest.mark.e2e

DALLE2 = {"model": "openai/dall-e-2", "prompt": "a lighthouse", "size": "1024x1024"}
PRICE = 160  # credits: $0.016
START = 10_000  # $1
LEASE_S = 20


class SlowOutputVendor:
    """OpenAI's images endpoint answering a URL at once; the download of that URL stalls
    while `slow` is set, and `fetching` says it was asked for."""

    def __init__(self) -> None:
        self.calls = 0
        self.slow = False
        self.fetching = threading.Event()
        self.app = Starlette(
            routes=[
                Route("/v1/images/generations", self._generate, methods=["POST"]),
                Route("/files/{name}", self._file, methods=["GET"]),
            ]
        )

    async def _generate(self, request: Request) -> Response:
        self.calls += 1
        url = f"{str(request.base_url).rstrip('/')}/files/{self.calls}.png"
        return JSONResponse({"created": int(time.time()), "data": [{"url": url}]})

    async def _file(self, request: Request) -> Response:
        self.fetching.set()
        if self.slow:
            await asyncio.sleep(60)  # the server is killed meanwhile
        return Response(image_bytes("png"), media_type="image/png")


def _post(url: str, key: str, idem: str, timeout: float = 30) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": idem}
    return httpx.post(
        f"{url}/v1/openai/images/generations", headers=headers, json=DALLE2, timeout=timeout
    )


def _kill(process: subprocess.Popen[str]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    if process.stdout:
        process.stdout.close()


def test_kill_9_never_charges_a_retry_twice(tmp_path: Path) -> None:
    vendor = SlowOutputVendor()
    with serve_in_thread(vendor.app) as vendor_url:
        env = base_env(tmp_path, vendor_url)
        env.update(
            OPENAI_API_KEY=FakeOpenAI().api_key,
            OPENAI_BASE_URL=f"{vendor_url}/v1",
            # + HOLD_GRACE_S: the lease of a claim, longer than a restart on a busy machine
            IMAGE_DEADLINE_S=str(LEASE_S),
            HOLD_GRACE_S="0",
            HOLD_RECONCILE_INTERVAL_S="1",
            IDEMPOTENCY_WAIT_S="0",  # a retry meeting a claim is answered 409 at once
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process, _ = start_server(env, port)
        try:
            email = "idem@example.com"
            cli(env, "users", "create", email)
            cli(env, "credits", "grant", email, "1", "--reason", "e2e")
            key = cli(env, "keys", "create", email).strip().splitlines()[-1]

            # 1. Answered and stored, then the server dies: the answer survives it.
            stored = _post(url, key, "answered-before-the-kill")
            assert stored.status_code == 200, stored.text
            _kill(process)
            process, _ = start_server(env, port)
            replay = _post(url, key, "answered-before-the-kill")
            assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
            assert replay.content == stored.content
            assert vendor.calls == 1
            assert sqlite_balance(tmp_path, email)[:2] == (START - PRICE, START - PRICE)

            # 2. Killed after the vendor answered, while its output is being fetched.
            vendor.slow = True
            vendor.fetching.clear()
            first = threading.Thread(
                target=lambda: _swallow(lambda: _post(url, key, "killed-mid-way", 60)),
                daemon=True,
            )
            first.start()
            assert vendor.fetching.wait(20), "the gateway never fetched the output"
            assert vendor.calls == 2
            _kill(process)
            claimed_at = time.monotonic()
            first.join(timeout=10)
            assert sqlite_balance(tmp_path, email)[0] == START - 2 * PRICE  # still held

            vendor.slow = False
            process, _ = start_server(env, port)
            assert time.monotonic() - claimed_at < LEASE_S, "the restart outlasted the lease"
            busy = _post(url, key, "killed-mid-way")
            assert busy.status_code == 409, busy.text
            assert busy.json()["error"]["code"] == "idempotency_key_in_progress"
            assert int(busy.headers["retry-after"]) >= 1
            assert vendor.calls == 2

            retried = busy
            deadline = time.monotonic() + LEASE_S + 15
            while retried.status_code == 409:
                assert time.monotonic() < deadline, "the lease was never taken over"
                time.sleep(0.5)
                retried = _post(url, key, "killed-mid-way")
            assert retried.status_code == 200, retried.text
            assert "idempotent-replayed" not in retried.headers  # a fresh attempt
            assert vendor.calls == 3
            again = _post(url, key, "killed-mid-way")
            assert again.content == retried.content and vendor.calls == 3

            # Charged once for each answered request; the killed attempt's hold came back.
            deadline = time.monotonic() + 20
            while sqlite_balance(tmp_path, email)[2]:
                assert time.monotonic() < deadline, "the killed attempt's hold stayed"
                time.sleep(0.2)
            balance, entries, _ = sqlite_balance(tmp_path, email)
            assert balance == entries == START - 2 * PRICE
        finally:
            process.terminate()
            process.wait(timeout=15)
            if process.stdout:
                process.stdout.close()


def _swallow(call: Callable[[], object]) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server is killed under it
        call()
