"""The long-jobs guide's samples, run as a reader would: copied from the page of a real
server and executed against it — the job routes with httpx and curl, an idempotent retry
with the official `openai` SDK, and a webhook receiver verifying with `standardwebhooks`.

The server allows private webhook targets (`ALLOW_PRIVATE_UPSTREAMS=true`) so that the
guide's receiver can listen on loopback here.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, free_port, running_server

pytestmark = pytest.mark.e2e

SLUG = "long-jobs"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("long-jobs-guide"),
        ALLOW_PRIVATE_UPSTREAMS="true",
        WEBHOOK_INTERVAL_S="0.2",
    ) as started:
        yield started


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    server.cli("users", "create", "long-jobs@example.com")
    done = server.cli("keys", "create", "long-jobs@example.com", "--name", "guide")
    return done.stdout.strip().splitlines()[-1]


def _blocks(server: Server, language: str) -> list[str]:
    page = httpx.get(f"{server.url}/docs/guides/{SLUG}", timeout=30)
    assert page.status_code == 200
    found = re.findall(
        rf'<code id="[^"]+" class="language-{language}">(.*?)</code>', page.text, re.DOTALL
    )
    return [unescape(block) for block in found]


def _python(server: Server) -> dict[str, str]:
    """The Python samples by what they do (so a reordered guide fails by name)."""
    blocks = _blocks(server, "python")
    named = {
        "poll": next(b for b in blocks if 'while job["status"]' in b),
        "cancel": next(b for b in blocks if "/cancel" in b),
        "idempotency": next(b for b in blocks if "Idempotency-Key" in b),
        "receiver": next(b for b in blocks if "standardwebhooks" in b),
        "webhook_url": next(b for b in blocks if "WEBHOOK_URL" in b),
    }
    assert len(blocks) == len(named), "a Python sample of the guide is not run by a test"
    return named


def _run(command: list[str], server: Server, key: str, tmp_path: Path, **env: str) -> str:
    done = subprocess.run(
        command,
        cwd=tmp_path,
        env={**server.env, "IMAGE_ROUTER_API_KEY": key, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _job(server: Server, key: str, job_id: str) -> dict[str, object]:
    answer = httpx.get(
        f"{server.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_the_polling_sample_gets_the_video(server: Server, key: str, tmp_path: Path) -> None:
    sample = _python(server)["poll"]
    assert f'base_url="{server.url}"' in sample
    out = _run([sys.executable, "-c", sample], server, key, tmp_path).splitlines()
    first, last = out[0].split(), out[-1].split()
    assert first[0] == "job" and first[2] in ("queued", "running"), out
    url, cost = last
    assert url.startswith(f"{server.url}/files/") and url.endswith(".mp4"), out
    assert cost == "0", out  # ir/test-video is free
    video = httpx.get(url, timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert _job(server, key, first[1])["status"] == "succeeded"


def test_the_cancel_sample_cancels_or_says_it_was_too_late(
    server: Server, key: str, tmp_path: Path
) -> None:
    out = _run([sys.executable, "-c", _python(server)["cancel"]], server, key, tmp_path)
    verdict, listing = out.splitlines()
    # The test video takes no time, so either outcome is honest; each is checked.
    assert verdict in ("cancelled", "too late: succeeded"), out
    assert re.fullmatch(r"\d+ running, more: (True|False)", listing), out


def test_the_idempotency_sample_replays_the_first_answer(
    server: Server, key: str, tmp_path: Path
) -> None:
    out = _run([sys.executable, "-c", _python(server)["idempotency"]], server, key, tmp_path)
    assert out.strip() == "true True", out


def test_the_receiver_verifies_the_event_of_a_webhook_url(
    server: Server, key: str, tmp_path: Path
) -> None:
    secret_sample = next(b for b in _blocks(server, "sh") if "default/secret" in b)
    secret = json.loads(
        _run(["bash", "-euo", "pipefail", "-c", secret_sample], server, key, tmp_path)
    )
    assert secret["key"].startswith("whsec_"), secret

    samples = _python(server)
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-c", samples["receiver"]],
        env={**server.env, "PORT": str(port), "IMAGE_ROUTER_WEBHOOK_SECRET": secret["key"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert receiver.poll() is None, receiver.communicate()
            assert time.monotonic() < deadline, "the receiver never listened"
            time.sleep(0.05)
        # Anything not signed with the secret is refused by the receiver.
        forged = httpx.post(
            f"http://127.0.0.1:{port}/hook",
            content=b'{"type": "video.completed"}',
            headers={
                "webhook-id": "msg_x",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,AAAA",
            },
            timeout=10,
        )
        assert forged.status_code == 400

        out = _run(
            [sys.executable, "-c", samples["webhook_url"]],
            server,
            key,
            tmp_path,
            WEBHOOK_URL=f"http://127.0.0.1:{port}/hook",
        )
        job_id = out.split()[1]
        assert receiver.stdout is not None
        line = receiver.stdout.readline().split()  # blocks until the event arrives
        assert line[:2] == ["generation.completed", job_id], line
        assert line[2].startswith(f"{server.url}/files/"), line
        assert _job(server, key, job_id)["status"] == "succeeded"
    finally:
        receiver.terminate()
        receiver.wait(timeout=10)


@pytest.mark.skipif(
    shutil.which("curl") is None or shutil.which("jq") is None, reason="needs curl and jq"
)
def test_every_curl_sample_runs(server: Server, key: str, tmp_path: Path) -> None:
    blocks = _blocks(server, "sh")
    assert len(blocks) == 3
    submitted = json.loads(
        _run(["bash", "-euo", "pipefail", "-c", blocks[0]], server, key, tmp_path)
    )
    assert submitted["object"] == "job" and submitted["status"] == "queued", submitted
    polled = json.loads(_run(["bash", "-euo", "pipefail", "-c", blocks[1]], server, key, tmp_path))
    assert polled["object"] == "job" and polled["model"] == "ir/test-video", polled
    assert polled["status"] == "succeeded", polled  # 3 s is plenty for the test video
