"""When no gateway is up (a shared database or storage outage fails every /ready at once),
HAProxy answers itself: the deploy configurations make that answer the API's JSON error
with a Retry-After, not HAProxy's HTML page. Runs the Compose configuration for real
(on loopback, its gateways pointed at a closed port); skipped without haproxy."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
CONFIGS = (DEPLOY / "haproxy" / "haproxy.cfg", DEPLOY / "compose" / "haproxy.cfg")

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="no haproxy")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_error_lines(cfg: Path) -> list[str]:
    return [
        ln.strip() for ln in cfg.read_text().splitlines() if ln.strip().startswith("http-error")
    ]


def test_both_configurations_answer_no_backend_alike() -> None:
    production, compose = (http_error_lines(cfg) for cfg in CONFIGS)
    assert production == compose
    assert len(production) == 1 and production[0].startswith("http-error status 503 ")


@pytest.fixture
def haproxy_without_gateways(tmp_path: Path) -> Iterator[str]:
    listen, stats, dead = free_port(), free_port(), free_port()  # nothing listens on `dead`
    cfg = (DEPLOY / "compose" / "haproxy.cfg").read_text()
    cfg = cfg.replace("bind :8080", f"bind 127.0.0.1:{listen}")
    cfg = cfg.replace("bind :8404", f"bind 127.0.0.1:{stats}")
    cfg = re.sub(r"(server gateway-\d) gateway-\d:8000", rf"\1 127.0.0.1:{dead}", cfg)
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=0.2).close()
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "haproxy did not start listening"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{listen}"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_no_gateway_up_answers_json_503_with_retry_after(haproxy_without_gateways: str) -> None:
    answer = httpx.post(
        f"{haproxy_without_gateways}/v1/openai/images/generations", json={}, timeout=20
    )
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["retry-after"]) > 0
    error = answer.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "no_backend"
    assert "try again" in error["message"]
