"""`Provider.send` / `post_json`: the one authenticated vendor call every adapter makes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from image_router.providers.contract import Provider
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRejectedError,
    UpstreamUnreachableError,
    error_for_status,
)

KEY = "sk-test-0123456789abcdef"
URL = "http://vendor.test/v1/images"


class Vendor(Provider):
    id = "vendor"


def vendor_error(status: int, body: Any) -> UpstreamError:
    return error_for_status("vendor", status, f"vendor said {status}", body)


def provider(answer: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> Vendor:
    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return Vendor(http, credential=KEY, **kwargs)


def answering(status: int, **content: Any) -> tuple[list[httpx.Request], Vendor]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, **content)

    return seen, provider(answer)


async def test_post_json_sends_the_key_as_a_bearer_and_reads_the_answer() -> None:
    seen, vendor = answering(200, json={"data": [1, 2]})

    count = await vendor.post_json(
        URL, {"prompt": "a kite"}, key=KEY, errors=vendor_error, read=lambda b: len(b["data"])
    )

    assert count == 2
    (request,) = seen
    assert request.method == "POST"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {"prompt": "a kite"}


async def test_other_auth_schemes_and_a_key_in_its_own_header() -> None:
    seen, vendor = answering(200, json={})

    await vendor.post_json(URL, {}, key=KEY, errors=vendor_error, auth="Key")
    await vendor.post_json(
        URL, {}, key=KEY, errors=vendor_error, auth=None, headers={"x-api-key": KEY}
    )

    assert seen[0].headers["authorization"] == f"Key {KEY}"
    assert "authorization" not in seen[1].headers
    assert seen[1].headers["x-api-key"] == KEY


async def test_a_multipart_form_with_files() -> None:
    seen, vendor = answering(200, json={})

    await vendor.post_json(
        URL,
        key=KEY,
        errors=vendor_error,
        data={"prompt": "a kite"},
        files=[("image[]", ("in.png", b"\x89PNG", "image/png"))],
    )

    (request,) = seen
    assert request.headers["content-type"].startswith("multipart/form-data")
    assert b'name="prompt"' in request.content
    assert b'filename="in.png"' in request.content


async def test_an_error_status_goes_through_the_adapters_reader_without_our_key() -> None:
    _, vendor = answering(400, json={"error": f"key {KEY} may not ask for that"})
    read: list[tuple[int, Any]] = []

    def errors(status: int, body: Any) -> UpstreamError:
        read.append((status, body))
        return UpstreamRejectedError("refused", provider="vendor", status=status, body=body)

    with pytest.raises(UpstreamRejectedError):
        await vendor.send("GET", URL, key=KEY, errors=errors)

    assert read == [(400, {"error": "key [redacted] may not ask for that"})]


async def test_a_body_that_is_not_json_is_a_protocol_error() -> None:
    _, vendor = answering(200, text="<html>a proxy's page</html>")

    with pytest.raises(UpstreamProtocolError) as caught:
        await vendor.post_json(URL, {}, key=KEY, errors=vendor_error)

    assert caught.value.status == 200


async def test_what_read_trips_over_is_a_protocol_error_and_never_holds_our_key() -> None:
    _, vendor = answering(200, json={"echo": KEY})

    with pytest.raises(UpstreamProtocolError):
        await vendor.post_json(URL, {}, key=KEY, errors=vendor_error, read=lambda b: b["missing"])

    def refuse(body: Any) -> None:
        raise UpstreamProtocolError("no images", provider="vendor", body=body)

    with pytest.raises(UpstreamProtocolError) as caught:
        await vendor.post_json(URL, {}, key=KEY, errors=vendor_error, read=refuse)
    assert KEY not in str(caught.value.record())


async def test_transport_failures_are_translated() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(UpstreamUnreachableError):
        await provider(refuse).post_json(URL, {}, key=KEY, errors=vendor_error)


def test_the_first_key_of_a_comma_list() -> None:
    vendor = Vendor(httpx.AsyncClient(), credential=" sk-one , sk-two")

    assert vendor.require_credential("Vendor API key", first=True) == "sk-one"
    assert vendor.require_credential("Vendor API key") == " sk-one , sk-two"
    with pytest.raises(UpstreamMisconfiguredError, match="no Vendor API key is configured"):
        Vendor(httpx.AsyncClient(), credential=" , ").require_credential(
            "Vendor API key", first=True
        )
