"""The guides' samples, run as a reader would: copied from the page of a real server and
executed against it (Python with the official `openai` SDK, and the curl lines)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from html import unescape
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def _blocks(server: Server, slug: str, language: str) -> list[str]:
    page = httpx.get(f"{server.url}/docs/guides/{slug}", timeout=30)
    assert page.status_code == 200
    found = re.findall(
        rf'<code id="[^"]+" class="language-{language}">(.*?)</code>', page.text, re.DOTALL
    )
    return [unescape(block) for block in found]


@pytest.fixture(scope="module")
def key(server: Server) -> str:
    server.cli("users", "create", "guides@example.com")
    done = server.cli("keys", "create", "guides@example.com", "--name", "guides")
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder holding the files the samples upload."""
    for name, colour in (("photo", "red"), ("style", "blue"), ("boat", "white")):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buffer, "PNG")
        (tmp_path / f"{name}.png").write_bytes(buffer.getvalue())
    (tmp_path / "mask.png").write_bytes((tmp_path / "photo.png").read_bytes())
    return tmp_path


def _run(command: list[str], workdir: Path, server: Server, key: str) -> str:
    done = subprocess.run(
        command,
        cwd=workdir,
        env={**server.env, "IMAGE_ROUTER_API_KEY": key},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_quickstart_python_sample_makes_an_image(
    server: Server, key: str, workdir: Path
) -> None:
    first, save = _blocks(server, "quickstart", "python")
    assert f'base_url="{server.url}/v1/openai"' in first
    url = _run([sys.executable, "-c", first], workdir, server, key).strip()
    assert url.startswith(f"{server.url}/files/")
    image = httpx.get(url, timeout=30)
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (512, 512)

    assert (
        _run([sys.executable, "-c", save], workdir, server, key).strip() == "saved lighthouse.png"
    )
    assert Image.open(workdir / "lighthouse.png").size == (256, 256)


@pytest.mark.parametrize("slug", ["edits", "videos", "sdks", "routing"])
def test_every_python_sample_runs(server: Server, key: str, workdir: Path, slug: str) -> None:
    blocks = _blocks(server, slug, "python")
    assert blocks
    for block in blocks:
        out = _run([sys.executable, "-c", block], workdir, server, key)
        assert server.url in out or "images" in out, out


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize(
    "slug", ["quickstart", "authentication", "images", "edits", "videos", "sdks", "privacy"]
)
def test_every_curl_sample_runs(server: Server, key: str, workdir: Path, slug: str) -> None:
    for block in _blocks(server, slug, "sh"):
        if "paste your key" in block or "MANAGEMENT_KEY" in block:
            continue  # the placeholder line; the management key is the operator's to make
        out = _run(["bash", "-euo", "pipefail", "-c", block], workdir, server, key)
        assert '"error"' not in out, (block, out)
