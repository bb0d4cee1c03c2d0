"""The request-id middleware on a bare ASGI app: ids, headers, status and route labels."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from image_router.observability.logging import request_id
from image_router.observability.middleware import (
    UNMATCHED,
    RequestObservability,
    incoming_id,
    new_request_id,
)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"x-request-id", b"abc-DEF_1.2")], "abc-DEF_1.2"),
        ([(b"x-request-id", b"a" * 128)], "a" * 128),
        ([(b"x-request-id", b"a" * 129)], None),
        ([(b"x-request-id", b"")], None),
        ([(b"x-request-id", b"two words")], None),
        ([(b"x-request-id", b"line\nbreak")], None),
        ([(b"x-request-id", "caf\u00e9".encode())], None),
        ([(b"x-request-id", b'{"json":1}')], None),
        ([(b"accept", b"*/*")], None),
    ],
)
def test_incoming_id(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert incoming_id(headers) == expected


async def _whoami(request: Request) -> Response:
    return PlainTextResponse(request_id.get() or "")


async def _stream(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield (request_id.get() or "").encode()
        yield b"!"

    return StreamingResponse(body())


APP = RequestObservability(
    Starlette(routes=[Route("/who/{name}", _whoami), Route("/stream", _stream)])
)


def _count(route: str, status: str) -> float:
    labels = {"method": "GET", "route": route, "status": status}
    return REGISTRY.get_sample_value("image_router_http_requests_total", labels) or 0.0


async def test_the_id_is_the_context_and_the_header() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://t") as c:
        plain = await c.get("/who/ada")
        streamed = await c.get("/stream", headers={"X-Request-ID": "mine-1"})
    assert re.fullmatch(r"[0-9a-f]{32}", plain.headers["x-request-id"])
    assert plain.text == plain.headers["x-request-id"]
    assert streamed.headers["x-request-id"] == "mine-1"
    assert streamed.text == "mine-1!"
    assert request_id.get() is None


async def test_metrics_use_the_route_template() -> None:
    before = _count("/who/{name}", "200"), _count("unmatched", "404")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://t") as c:
        assert (await c.get("/who/ada")).status_code == 200
        assert (await c.get("/who/bob")).status_code == 200
        assert (await c.get("/nowhere")).status_code == 404
    assert _count("/who/{name}", "200") == before[0] + 2
    assert _count("unmatched", "404") == before[1] + 1
    assert _count("/who/ada", "200") == 0


def test_generated_ids_are_uuid4() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    for rid in ids:
        assert re.fullmatch(r"[0-9a-f]{32}", rid)
        assert uuid.UUID(hex=rid).version == 4
        assert uuid.UUID(hex=rid).variant == uuid.RFC_4122


# ------------------------------------------------------------------ clients that hang up


async def _leaks_a_cancellation(scope: Scope, receive: Receive, send: Send) -> None:
    """An app whose abandoned work's CancelledError escapes once the client hung up."""
    work = asyncio.ensure_future(asyncio.sleep(30))
    message = await receive()
    while message["type"] != "http.disconnect":
        message = await receive()
    work.cancel()
    await work  # raises CancelledError in a task nobody cancelled


def _hang_up_after_body() -> Receive:
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    return receive


def _http_scope() -> Scope:
    return {"type": "http", "method": "POST", "path": "/gen", "headers": []}


async def _discard(message: Message) -> None:
    return None


async def test_a_cancellation_left_by_a_hang_up_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    labels = {"method": "POST", "route": UNMATCHED, "status": "499"}
    before = REGISTRY.get_sample_value("image_router_http_requests_total", labels) or 0.0
    with caplog.at_level(logging.DEBUG):
        # Before: the CancelledError reached the server ("Exception in ASGI application").
        await RequestObservability(_leaks_a_cancellation)(
            _http_scope(), _hang_up_after_body(), _discard
        )
    [line] = [r for r in caplog.records if r.name == "image_router.observability.middleware"]
    assert line.levelno == logging.INFO and line.exc_info is None
    assert line.getMessage() == "client disconnected before the answer to POST /gen"
    assert REGISTRY.get_sample_value("image_router_http_requests_total", labels) == before + 1


async def test_a_cancellation_without_a_hang_up_is_not_hidden() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await RequestObservability(app)(_http_scope(), _hang_up_after_body(), _discard)


async def test_cancelling_the_request_itself_still_stops_it() -> None:
    """Server shutdown cancels the request's task: that must not be taken for a hang-up."""
    started = asyncio.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await receive()  # the disconnect: noted by the middleware
        started.set()
        await asyncio.sleep(30)

    task = asyncio.ensure_future(
        RequestObservability(app)(_http_scope(), _hang_up_after_body(), _discard)
    )
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
