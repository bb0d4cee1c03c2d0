"""The real server process driven by the official `openai` SDK and by raw HTTP."""

from __future__ import annotations

import base64
import io
import time

import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


def sdk(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=f"{server.url}/v1/openai", max_retries=0)


def new_key(server: Server, usd: str | None = None) -> tuple[str, str]:
    email = f"sdk-{usd or 0}-{id(server)}-{len(server.cli('users', 'list').stdout)}@example.com"
    server.cli("users", "create", email)
    if usd:
        server.cli("credits", "grant", email, usd, "--reason", "e2e")
    key = server.cli("keys", "create", email, "--name", "sdk").stdout.strip().splitlines()[-1]
    return email, key


def test_first_start_printed_a_working_admin_key(server: Server) -> None:
    assert server.bootstrap_key is not None
    assert len(server.bootstrap_key) == 64
    response = httpx.post(
        f"{server.url}/v1/auth/test",
        headers={"Authorization": f"Bearer {server.bootstrap_key}"},
    )
    assert response.json() == {"success": True, "credits": 0}


def test_generate_with_the_sdk(server: Server) -> None:
    _, key = new_key(server)
    result = sdk(server, key).images.generate(
        model="test/test", prompt="a red fox", size="256x256", response_format="b64_json"
    )
    assert result.data is not None
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json or "")))
    assert image.size == (256, 256)
    assert result.created < 10**10


def test_generate_url_is_downloadable(server: Server) -> None:
    _, key = new_key(server)
    result = sdk(server, key).images.generate(model="test/test", prompt="a boat")
    assert result.data is not None
    url = result.data[0].url or ""
    assert url.startswith(server.url + "/files/")
    assert httpx.get(url).headers["content-type"] == "image/png"


def test_edit_with_files_through_a_paid_vendor(server: Server) -> None:
    email, key = new_key(server, "5")
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buf, "PNG")
    result = sdk(server, key).images.edit(
        model="openai/gpt-image-1",
        image=[("a.png", buf.getvalue(), "image/png"), ("b.png", buf.getvalue(), "image/png")],
        prompt="combine them",
    )
    assert result.data is not None
    assert result.data[0].url
    sent = server.openai.last
    assert sent.path == "/v1/images/edits"
    assert len(sent.files_named("image[]")) == 2
    shown = server.cli("credits", "show", email).stdout
    assert "balance $4.9" in shown  # charged by tokens, well under the $0.30 hold


def test_insufficient_credits_is_a_402_for_the_sdk(server: Server) -> None:
    _, key = new_key(server)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(server, key).images.generate(model="openai/dall-e-3", prompt="x")
    assert caught.value.status_code == 402


def test_imagerouter_routes_over_raw_http(server: Server) -> None:
    _, key = new_key(server, "2.5")
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.post(f"{server.url}/v1/auth/test", headers=headers).json()["credits"] == 25_000
    credits = httpx.get(f"{server.url}/v1/credits", headers=headers).json()
    assert credits == {
        "remaining_credits": "2.5000",
        "credit_usage": "0.0000",
        "total_deposits": "2.5000",
    }
    video = httpx.post(
        f"{server.url}/v1/openai/videos/generations",
        headers=headers,
        json={"model": "ir/test-video", "prompt": "waves"},
        timeout=30,
    )
    assert video.status_code == 200
    assert httpx.get(video.json()["data"][0]["url"]).content[4:8] == b"ftyp"
    models = httpx.get(f"{server.url}/v1/models", params={"type": "video"}).json()
    assert "ir/test-video" in models
    assert httpx.get(f"{server.url}/.well-known/openapi.yaml").status_code == 200


def test_client_that_hangs_up_keeps_its_generation_as_a_job(server: Server) -> None:
    """Once its credit is held, a generation whose client hangs up runs on: it is made,
    charged once and fetched at /v1/jobs/{id} (docs/jobs.md)."""
    email, key = new_key(server, "1")
    auth = {"Authorization": f"Bearer {key}"}
    server.openai.delay = 3.0  # the vendor is slow; the client gives up after 0.5 s
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                f"{server.url}/v1/openai/images/generations",
                headers=auth,
                json={"model": "openai/dall-e-2", "prompt": "x", "size": "1024x1024"},
                timeout=0.5,
            )
        deadline = time.monotonic() + 10
        while True:
            jobs = httpx.get(f"{server.url}/v1/jobs", headers=auth).json()["data"]
            if jobs and jobs[0]["status"] == "succeeded":
                break
            assert time.monotonic() < deadline, f"the generation did not complete: {jobs}"
            time.sleep(0.1)
        assert jobs[0]["cost"] == 0.016 and httpx.get(jobs[0]["data"][0]["url"]).is_success
        assert "balance $0.9840" in server.cli("credits", "show", email).stdout
    finally:
        server.openai.delay = 0.0
