"""RET-1 on a real server: outputs kept for zero hours disappear on the server's own purge
pass, and the operator's `retention purge --dry-run` then finds nothing left to do."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, base_env, free_port, start_server
from tests.fakes.openai import FakeOpenAI
from tests.fakes.upstream import serve_in_thread

pytestmark = pytest.mark.e2e


def test_the_server_purges_expired_outputs_on_its_own(tmp_path: Path) -> None:
    with serve_in_thread(FakeOpenAI().app) as openai_url:
        env = base_env(tmp_path / "data", openai_url)
        env.update(RETENTION_OUTPUTS_HOURS="0", PURGE_INTERVAL_S="0.5")
        port = free_port()
        process, key = start_server(env, port)
        try:
            url = f"http://127.0.0.1:{port}"
            response = httpx.post(
                f"{url}/v1/openai/images/generations",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "test/test", "prompt": "a lighthouse at dusk"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
            image_url = response.json()["data"][0]["url"]
            outputs = tmp_path / "data" / "outputs"
            deadline = time.monotonic() + 30
            while httpx.get(image_url, timeout=5).status_code != 404:
                assert time.monotonic() < deadline, "the server never purged the output"
                time.sleep(0.2)
            assert not any(p.name.endswith(".png") for p in outputs.iterdir())

            dry = subprocess.run(
                [str(BIN), "retention", "purge", "--dry-run"],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert dry.returncode == 0, dry.stderr
            assert "outputs: 0" in dry.stdout and "output_files: 0" in dry.stdout
        finally:
            process.terminate()
            process.wait(timeout=15)
            if process.stdout:
                process.stdout.close()
