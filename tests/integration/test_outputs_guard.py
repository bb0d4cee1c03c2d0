"""A vendor's output URL cannot make the gateway fetch private addresses or store non-media.

OpenAI's fake (dall-e-2 answers URLs) is told what to answer; everything the gateway would
fetch goes to the fakes through the ASGI transport, which serves any host, so "not fetched"
is visible in what the fake recorded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tests.conftest import Gateway, _gateway
from tests.fakes.openai import image_bytes
from tests.fakes.upstream import FakeVendor, Recorded

IMAGE = "/v1/openai/images/generations"
DALLE = {"model": "openai/dall-e-2", "prompt": "x", "size": "1024x1024"}
PNG_FILE = "0123abcd"


def answer_with_url(gateway: Gateway, url: str) -> None:
    gateway.openai.fail_next(200, {"created": 1, "data": [{"url": url}]})


def downloads(gateway: Gateway) -> list[str]:
    return [r.path for r in gateway.openai.requests if r.method == "GET"]


@pytest.mark.parametrize(
    "host", ["127.0.0.2", "10.20.30.40", "169.254.169.254", "[::1]", "192.168.0.1"]
)
async def test_an_output_url_at_a_private_address_is_refused_not_fetched_not_charged(
    gateway: Gateway, host: str
) -> None:
    account, key = await gateway.account("1")
    before = await gateway.balance(account)
    gateway.openai.files[PNG_FILE] = image_bytes("png")
    answer_with_url(gateway, f"http://{host}/openai/files/{PNG_FILE}.png")
    response = await gateway.post(IMAGE, key, json=DALLE)
    assert response.status_code == 502, response.text
    assert "not a public address" in response.json()["error"]["message"]
    assert downloads(gateway) == []
    assert await gateway.balance(account) == before
    [row] = await gateway.generations()
    assert row["status"] == "error"


class Cdn(FakeVendor):
    """A CDN that sends `/r` on to an internal host, which would serve a PNG."""

    def __init__(self) -> None:
        super().__init__()
        self.add_route("/r", self._redirect, ["GET"], scripted=False)
        self.add_route("/secret.png", self._secret, ["GET"], scripted=False)

    async def _redirect(self, request: Request, rec: Recorded) -> Response:
        return RedirectResponse("http://internal.example/cdn/secret.png", status_code=302)

    async def _secret(self, request: Request, rec: Recorded) -> Response:
        return Response(image_bytes("png"), media_type="image/png")


@pytest.fixture
async def cdn_gateway(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Gateway, Cdn]]:
    cdn = Cdn()
    async for gw in _gateway(db_url, tmp_path, {}, {"cdn": cdn}):

        async def dns(host: str, port: int) -> list[str]:
            return {"cdn.example": ["93.184.216.34"], "internal.example": ["10.0.0.5"]}[host]

        gw.res.outputs = replace(gw.res.outputs, resolve=dns)
        gw.res.generator = replace(gw.res.generator, outputs=gw.res.outputs)
        yield gw, cdn


async def test_a_redirect_from_a_public_host_into_private_space_is_refused(
    cdn_gateway: tuple[Gateway, Cdn],
) -> None:
    gateway, cdn = cdn_gateway
    account, key = await gateway.account("1")
    before = await gateway.balance(account)
    answer_with_url(gateway, "http://cdn.example/cdn/r")
    response = await gateway.post(IMAGE, key, json=DALLE)
    assert response.status_code == 502, response.text
    assert "internal.example is not a public address" in response.json()["error"]["message"]
    assert [r.path for r in cdn.requests] == ["/cdn/r"]  # the public hop only
    assert await gateway.balance(account) == before


async def test_non_image_bytes_are_refused_not_stored_not_charged(gateway: Gateway) -> None:
    account, key = await gateway.account("1")
    before = await gateway.balance(account)
    gateway.openai.files[PNG_FILE] = b"<html><body>Access denied</body></html>"
    # On the vendor's own configured host, so only the bytes are wrong.
    answer_with_url(gateway, f"http://fakes/openai/files/{PNG_FILE}.png")
    response = await gateway.post(IMAGE, key, json=DALLE)
    assert response.status_code == 502
    assert "not an image" in response.json()["error"]["message"]
    assert downloads(gateway) == [f"/openai/files/{PNG_FILE}.png"]
    assert await gateway.balance(account) == before
    outputs = gateway.res.settings.storage.data_dir / "outputs"
    assert not outputs.exists() or not any(outputs.iterdir())


async def test_outputs_on_the_vendors_own_host_are_fetched(gateway: Gateway) -> None:
    # The fakes' host is private-looking and unresolvable: trusted because it is the
    # configured OPENAI_BASE_URL's host.
    account, key = await gateway.account("1")
    gateway.openai.files[PNG_FILE] = image_bytes("png")
    answer_with_url(gateway, f"http://fakes/openai/files/{PNG_FILE}.png")
    response = await gateway.post(IMAGE, key, json=DALLE)
    assert response.status_code == 200, response.text
    assert downloads(gateway) == [f"/openai/files/{PNG_FILE}.png"]
    [row] = await gateway.generations()
    assert row["status"] == "success" and row["cost"] > 0
    assert await gateway.balance(account) == 10000 - row["cost"]


@pytest.mark.parametrize("gateway_overrides", [{"allow_private_upstreams": True}])
async def test_private_output_urls_are_fetched_when_allowed(
    gateway: Gateway, gateway_overrides: dict[str, Any]
) -> None:
    _, key = await gateway.account("1")
    gateway.openai.files[PNG_FILE] = image_bytes("png")
    answer_with_url(gateway, f"http://10.20.30.40/openai/files/{PNG_FILE}.png")
    response = await gateway.post(IMAGE, key, json=DALLE)
    assert response.status_code == 200, response.text
    assert downloads(gateway) == [f"/openai/files/{PNG_FILE}.png"]
    [row] = await gateway.generations()
    assert row["status"] == "success" and row["cost"] > 0
