"""Output storage modes (spec §11.4) on the local store and on a real S3-protocol server,
`output_format` conversion, and the keep-alive heartbeat of slow generations."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import Gateway, _gateway
from tests.fakes.s3 import s3_server

IMAGE = "/v1/openai/images/generations"
BUCKET = "ir-outputs"


async def test_url_output_is_stored_and_served(gateway: Gateway) -> None:
    _, key = await gateway.account()
    body = (await gateway.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})).json()
    url = body["data"][0]["url"]
    assert "b64_json" not in body["data"][0]
    served = await gateway.client.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    # Vendor bytes on our origin: nothing in them may run or be sniffed as another type.
    assert "sandbox" in served.headers["content-security-policy"]
    assert served.headers["x-content-type-options"] == "nosniff"
    assert Image.open(io.BytesIO(served.content)).size == (1024, 1024)
    [row] = await gateway.generations()
    assert row["output_urls"] == [url]
    assert row["id"] in url  # named after the usage row, so it cannot be guessed


async def test_b64_json_is_returned_and_also_stored(gateway: Gateway) -> None:
    _, key = await gateway.account()
    body = (
        await gateway.post(
            IMAGE, key, json={"model": "test/test", "prompt": "x", "response_format": "b64_json"}
        )
    ).json()
    data = base64.b64decode(body["data"][0]["b64_json"])
    [row] = await gateway.generations()
    [stored_url] = row["output_urls"]
    assert (await gateway.client.get(stored_url)).content == data


async def test_b64_ephemeral_is_never_stored(gateway: Gateway, tmp_path: Path) -> None:
    _, key = await gateway.account()
    body = (
        await gateway.post(
            IMAGE,
            key,
            json={"model": "test/test", "prompt": "x", "response_format": "b64_ephemeral"},
        )
    ).json()
    assert body["data"][0]["b64_json"]
    [row] = await gateway.generations()
    assert row["output_urls"] == []
    outputs = tmp_path / "data" / "outputs"
    assert not outputs.exists() or not any(outputs.iterdir())


@pytest.mark.parametrize(("output_format", "pil_format"), [("jpeg", "JPEG"), ("webp", "WEBP")])
async def test_output_format_is_converted_when_the_vendor_cannot(
    gateway: Gateway, output_format: str, pil_format: str
) -> None:
    _, key = await gateway.account("1")
    # dall-e-2 cannot choose a format; the fake answers PNG and the gateway converts.
    body = (
        await gateway.post(
            IMAGE,
            key,
            json={
                "model": "openai/dall-e-2",
                "prompt": "x",
                "size": "1024x1024",
                "output_format": output_format,
            },
        )
    ).json()
    url = body["data"][0]["url"]
    assert url.endswith(".jpg" if output_format == "jpeg" else ".webp")
    served = await gateway.client.get(url)
    assert Image.open(io.BytesIO(served.content)).format == pil_format


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server(BUCKET) as url:
        yield url


@pytest.fixture
async def s3_gateway(db_url: str, tmp_path: Path, s3_endpoint: str) -> AsyncIterator[Gateway]:
    overrides: dict[str, Any] = {
        "storage_url": f"s3://{BUCKET}",
        "s3_endpoint": s3_endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": "testing",
        "s3_secret_access_key": "testing",
    }
    async for gw in _gateway(db_url, tmp_path, overrides):
        yield gw


async def test_outputs_go_to_s3(s3_gateway: Gateway, s3_endpoint: str) -> None:
    _, key = await s3_gateway.account()
    for fmt in ("url", "b64_json"):
        response = await s3_gateway.post(
            IMAGE, key, json={"model": "test/test", "prompt": "x", "response_format": fmt}
        )
        assert response.status_code == 200, response.text
    urls = [url for row in await s3_gateway.generations() for url in row["output_urls"]]
    assert len(urls) == 2
    assert all(url.startswith(f"{s3_endpoint}/{BUCKET}/") for url in urls)
    async with httpx.AsyncClient() as plain:
        fetched = await plain.get(urls[0])
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    "gateway_overrides", [{"heartbeat_after_s": 0.2, "heartbeat_interval_s": 0.1}]
)
async def test_slow_generation_streams_spaces_then_json(gateway: Gateway) -> None:
    _, key = await gateway.account()
    response = await gateway.post(
        IMAGE, key, json={"model": "test/test", "prompt": "slow [test:sleep=0.7]", "size": "64x64"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    text = response.text
    assert text.startswith("  ")
    assert text.lstrip().startswith('{"created"')


@pytest.mark.parametrize(
    "gateway_overrides", [{"heartbeat_after_s": 0.2, "heartbeat_interval_s": 0.1}]
)
async def test_error_after_heartbeat_arrives_in_the_200_body(gateway: Gateway) -> None:
    account, key = await gateway.account("1")
    gateway.openai.delay = 0.6
    gateway.openai.fail_next(500)
    response = await gateway.post(
        IMAGE, key, json={"model": "openai/dall-e-2", "prompt": "x", "size": "1024x1024"}
    )
    assert response.status_code == 200
    assert response.text.startswith(" ")
    assert response.json()["error"]["type"] == "upstream_error"
    assert await gateway.balance(account) == 10_000


async def test_fast_generation_has_no_heartbeat(gateway: Gateway) -> None:
    _, key = await gateway.account()
    response = await gateway.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    assert response.text.startswith("{")


async def test_video_is_a_real_mp4(gateway: Gateway) -> None:
    _, key = await gateway.account()
    response = await gateway.post(
        "/v1/openai/videos/generations", key, json={"model": "ir/test-video", "prompt": "x"}
    )
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body["created"], int) and body["created"] < 10**10  # seconds
    served = await gateway.client.get(body["data"][0]["url"])
    assert served.headers["content-type"] == "video/mp4"
    assert served.content[4:8] == b"ftyp"
    await asyncio.sleep(0)
