"""The vendor call's short lane (providers/direct.py) answers exactly as httpx's full path.

Both paths run against one real loopback server, on the gateway's own client stack
(httpx over aiohttp); only then does the lane engage.
"""

from __future__ import annotations

import gzip
import socket
from collections.abc import Iterator

import httpx
import orjson
import pytest
from httpx_aiohttp import AiohttpTransport
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from image_router.providers.direct import DirectLane
from tests.fakes.upstream import serve_in_thread


async def _echo(request: Request) -> Response:
    body = await request.body()
    answer = orjson.dumps(
        {
            "method": request.method,
            "body": orjson.loads(body) if body else None,
            "content_type": request.headers.get("content-type"),
            "auth": request.headers.get("authorization"),
        }
    )
    if request.query_params.get("gzip"):
        return Response(
            gzip.compress(answer),
            status_code=int(request.query_params.get("status", "200")),
            media_type="application/json",
            headers={"Content-Encoding": "gzip", "X-Vendor": "yes"},
        )
    return Response(
        answer,
        status_code=int(request.query_params.get("status", "200")),
        media_type="application/json",
        headers={"X-Vendor": "yes"},
    )


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/echo", _echo, methods=["GET", "POST"])])
    with serve_in_thread(app) as url:
        yield url


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=AiohttpTransport(), timeout=httpx.Timeout(5.0))


@pytest.mark.parametrize("query", ["", "?gzip=1", "?status=422", "?gzip=1&status=503"])
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_the_lane_answers_what_httpx_answers(base_url: str, query: str, method: str) -> None:
    url = f"{base_url}/echo{query}"
    body = {"prompt": "a lighthouse at dusk — ünïcode", "n": 1} if method == "POST" else None
    headers = {"Authorization": "Bearer sk-test"}
    async with _client() as http:
        lane = DirectLane.of(http)
        assert lane is not None
        full = await http.request(method, url, headers=headers, json=body)
        short = await lane.request(method, url, headers=headers, json=body)
    assert short.status_code == full.status_code
    assert short.is_error == full.is_error
    assert short.json() == full.json()
    assert short.json()["body"] == body and short.json()["auth"] == "Bearer sk-test"
    if body is not None:
        assert short.json()["content_type"] == "application/json"
    assert short.headers["x-vendor"] == "yes"
    assert short.headers["content-type"] == full.headers["content-type"]
    assert short.request.method == method and str(short.request.url) == url


async def test_a_refused_connection_raises_what_the_transport_raises() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with _client() as http:
        lane = DirectLane.of(http)
        assert lane is not None
        with pytest.raises(httpx.HTTPError) as full:
            await http.get(f"http://127.0.0.1:{port}/echo")
        with pytest.raises(httpx.HTTPError) as short:
            await lane.request("GET", f"http://127.0.0.1:{port}/echo", headers={})
    assert type(short.value) is type(full.value)


async def test_only_an_aiohttp_client_has_a_lane() -> None:
    async with httpx.AsyncClient() as plain:
        assert DirectLane.of(plain) is None
    async with _client() as http:
        assert DirectLane.of(http) is not None


async def test_answers_carry_their_own_request_and_the_lane_keeps_few(base_url: str) -> None:
    async with _client() as http:
        lane = DirectLane.of(http)
        assert lane is not None
        for i in range(300):  # URLs with ids in them, as a polling vendor's are
            url = f"{base_url}/echo?job={i % 260}"
            answer = await lane.request("GET", url, headers={})
            assert answer.request.method == "GET" and str(answer.request.url) == url
        assert len(lane._requests) <= 256
