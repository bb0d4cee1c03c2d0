"""A real `image-router serve` stopped with SIGTERM (issue #15): it stops accepting at once,
lets the requests in flight finish within SHUTDOWN_DRAIN_S, cuts off what is still running
then (holds released, answered 503 `server_shutting_down`) and exits 0. And with
`--workers 2`, `/metrics` adds up what both workers served.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.conftest import _recreate_pg
from tests.e2e.conftest import BIN, base_env, free_port, start_server
from tests.e2e.test_e2e_resilience import cli, sqlite_balance
from tests.fakes.openai import FakeOpenAI
from tests.fakes.upstream import serve_in_thread

pytestmark = pytest.mark.e2e

DALLE2 = {"model": "openai/dall-e-2", "prompt": "slow one", "size": "1024x1024"}
PRICE = 160  # dall-e-2 1024x1024, in credits


def _account(env: dict[str, str], email: str) -> str:
    cli(env, "users", "create", email)
    cli(env, "credits", "grant", email, "1", "--reason", "drain test")
    return cli(env, "keys", "create", email).strip().splitlines()[-1]


async def _generate(url: str, key: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=60) as client:
        return await asyncio.gather(
            *(
                client.post(url, headers={"Authorization": f"Bearer {key}"}, json=DALLE2)
                for _ in range(count)
            )
        )


def _wait_for_holds(data_dir: Path, email: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while sqlite_balance(data_dir, email)[2] < count:
        assert time.monotonic() < deadline, "the holds were never all taken"
        time.sleep(0.05)


def _refused_soon(port: int) -> bool:
    """Whether new connections are refused within 2 s."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/ready", timeout=0.5)
        except httpx.ConnectError:
            return True
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    return False


def _drain(
    env: dict[str, str], data_dir: Path, *, delay: float, requests: int
) -> tuple[list[httpx.Response], subprocess.Popen[str], str, bool, float]:
    """Start a server, put `requests` generations in flight against a vendor taking
    `delay` seconds, SIGTERM it; the answers, the process, its output, whether new
    connections were refused while the requests were still running, and how long it
    took to exit."""
    openai = FakeOpenAI()
    openai.delay = delay
    with serve_in_thread(openai.app) as openai_url:
        env = env | {"OPENAI_BASE_URL": f"{openai_url}/v1"}
        port = free_port()
        process, _ = start_server(env, port)
        try:
            key = _account(env, "drain@example.com")
            url = f"http://127.0.0.1:{port}/v1/openai/images/generations"
            with ThreadPoolExecutor(1) as pool:
                answers = pool.submit(asyncio.run, _generate(url, key, requests))
                _wait_for_holds(data_dir, "drain@example.com", requests)
                time.sleep(0.3)
                stopped = time.monotonic()
                process.send_signal(signal.SIGTERM)
                refused = _refused_soon(port)
                in_flight = not answers.done()
                responses = answers.result(timeout=60)
            process.wait(timeout=60)
            took = time.monotonic() - stopped
            assert process.stdout is not None
            output = process.stdout.read()
        finally:
            if process.poll() is None:
                process.kill()
            if process.stdout:
                process.stdout.close()
    return responses, process, output, refused and in_flight, took


def test_sigterm_lets_requests_in_flight_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    env = base_env(tmp_path, "http://unused") | {
        "SHUTDOWN_DRAIN_S": "20",
        # Past a second the answers stream (whitespace heartbeats): drained all the same.
        "HEARTBEAT_AFTER_S": "1",
        "HEARTBEAT_INTERVAL_S": "0.3",
        "LOG_LEVEL": "INFO",
    }
    responses, process, output, refused, took = _drain(env, tmp_path, delay=3, requests=4)
    assert refused, "new connections were accepted after SIGTERM"
    assert process.returncode == 0, output[-3000:]
    assert took < 20
    for response in responses:
        assert response.status_code == 200
        assert response.json()["data"], response.text  # the whole answer, not a cut-off
    balance, entries, processing = sqlite_balance(tmp_path, "drain@example.com")
    assert processing == 0
    assert balance == entries == 10_000 - 4 * PRICE
    assert "cut off by the server's shutdown" not in output
    assert "0 generation(s) cut off, 0 hold(s) released" in output


@pytest.mark.parametrize("streaming", [False, True], ids=["json", "heartbeat"])
def test_what_outlives_the_drain_is_cut_off_and_its_holds_released(
    tmp_path: Path, streaming: bool
) -> None:
    env = base_env(tmp_path, "http://unused") | {"SHUTDOWN_DRAIN_S": "1", "LOG_LEVEL": "INFO"}
    if streaming:  # the answers are already streaming whitespace when the drain ends
        env |= {"HEARTBEAT_AFTER_S": "0.2", "HEARTBEAT_INTERVAL_S": "0.2"}
    responses, process, output, refused, took = _drain(env, tmp_path, delay=30, requests=3)
    assert refused
    assert process.returncode == 0, output[-3000:]
    assert took < 15  # the drain (1 s) and the releases, not the vendor's 30 s
    for response in responses:
        # A streaming answer committed its 200 already; its body says what happened.
        assert response.status_code == (200 if streaming else 503), response.text
        error = response.json()["error"]
        assert error["code"] == "server_shutting_down"
        assert error["type"] == "service_unavailable"
        if not streaming:
            assert response.headers["retry-after"] == "1"
    balance, entries, processing = sqlite_balance(tmp_path, "drain@example.com")
    assert processing == 0
    assert balance == entries == 10_000  # every hold went back, in the ledger too
    released = [line for line in output.splitlines() if "cut off by the server's shutdown" in line]
    assert len(released) == 3, output[-3000:]
    assert all(f"released {PRICE} held credits" in line for line in released)
    summary = [line for line in output.splitlines() if "drain finished" in line]
    assert len(summary) == 1
    assert f"3 hold(s) released ({3 * PRICE} credits)" in summary[0]


@pytest.mark.postgres
@pytest.mark.timeout(300)  # two workers starting (and migrating) on a busy machine
def test_metrics_add_up_over_two_workers(tmp_path: Path) -> None:
    asyncio.run(_recreate_pg("ir_resilience_workers"))
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_999999.db").write_bytes(b"stale")  # from an earlier run
    openai = FakeOpenAI()
    with serve_in_thread(openai.app) as openai_url:
        env = base_env(tmp_path, openai_url) | {
            "DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:5432/ir_resilience_workers",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        port = free_port()
        process = subprocess.Popen(
            [str(BIN), "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120  # two workers migrating on a busy machine
            while (answer := _ready(base)) != "ready":
                assert process.poll() is None, "the server exited"
                assert time.monotonic() < deadline, f"the server never became ready: {answer}"
                time.sleep(0.2)
            assert not (metrics_dir / "counter_999999.db").exists()  # emptied at start
            while len(workers := _children(process.pid)) < 2:
                assert time.monotonic() < deadline, f"one worker only: {workers}"
                time.sleep(0.2)
            while _ready(base) != "ready" or _ready(base) != "ready":  # both, likely
                assert time.monotonic() < deadline, "the workers never became ready"
                time.sleep(0.2)

            def batch() -> int:
                with ThreadPoolExecutor(8) as pool:
                    answers = list(pool.map(lambda _: httpx.get(f"{base}/health"), range(16)))
                assert all(r.status_code == 200 for r in answers)
                return len(answers)

            sent = batch()
            # The kernel may hand every connection to one worker; pausing the one that
            # served leaves the next ones to the other.
            served = _servers_of(metrics_dir) & workers
            if len(served) == 1:
                (busy,) = served
                os.kill(busy, signal.SIGSTOP)
                try:
                    sent += batch()
                finally:
                    os.kill(busy, signal.SIGCONT)
            assert workers <= _servers_of(metrics_dir)  # each worker's file counts some
            scraped = httpx.get(f"{base}/metrics").text
            counted = 'image_router_http_requests_total{method="GET",route="/health"'
            assert _sample(scraped, counted) == sent
            process.send_signal(signal.SIGTERM)
            # The supervisor closes its copy of the socket too: refused, not left hanging.
            assert _refused_soon(port)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            if process.stdout:
                process.stdout.close()
    assert process.returncode == 0


def _children(pid: int) -> set[int]:
    """The worker processes of the supervisor `pid` (uvicorn replaces one that does not
    answer its health check in time, so they are read, not assumed)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    children = {int(child) for child in text.split()}
    # Not multiprocessing's resource tracker, a child too.
    return {
        child
        for child in children
        if b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()
    }


def _ready(base: str) -> str:
    """'ready', or what /ready answered instead."""
    try:
        answer = httpx.get(f"{base}/ready", timeout=5)
    except httpx.TransportError as exc:
        return repr(exc)
    return "ready" if answer.status_code == 200 else answer.text


def _servers_of(metrics_dir: Path) -> set[int]:
    """The worker processes (pids) whose counters recorded a /health answered."""
    served = set()
    for path in metrics_dir.glob("counter_*.db"):
        for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
            name, _sample_name, labels, _help = json.loads(key)
            counted = name == "image_router_http_requests" and labels.get("route") == "/health"
            if counted and value and labels.get("status") == "200":
                served.add(int(path.stem.split("_")[1]))
    return served


def _sample(exposition: str, prefix: str) -> float:
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in exposition.splitlines()
        if line.startswith(prefix) and 'status="200"' in line
    ]
    assert values, f"no {prefix} in /metrics"
    return sum(values)


@pytest.fixture(autouse=True)
def _no_inherited_metrics_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # A PROMETHEUS_MULTIPROC_DIR of the test process would leak into the servers' env.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
