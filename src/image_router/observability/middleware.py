"""Request ids and HTTP metrics, as a pure ASGI middleware.

Pure ASGI rather than `BaseHTTPMiddleware`, which runs every request through an extra task
and memory streams. Wrap the whole application with it, outside Starlette's
`ServerErrorMiddleware`, so that an unexpected 500 also carries the id and its log line the
id too.

The id is the client's `X-Request-ID` when it is a sane token (1 to 128 characters of
letters, digits, `.`, `_`, `-`), otherwise a fresh uuid4 hex. It is the value of
`observability.logging.request_id` while the request is served, and is sent back as
`X-Request-ID` on every answer, streamed or not.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from typing import TYPE_CHECKING

from image_router.observability.logging import request_id
from image_router.observability.metrics import observe_http

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

HEADER = b"x-request-id"
#: The status recorded for a request whose client hung up before the answer (nginx's).
CLIENT_CLOSED = 499
UNMATCHED = "unmatched"
_SANE_ID = re.compile(rb"[A-Za-z0-9._-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def new_request_id() -> str:
    """A random uuid4 as 32 hex digits, three times cheaper than `uuid.uuid4().hex`."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def incoming_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's request id if it is safe to echo and to log, else None."""
    for name, value in headers:
        if name == HEADER:
            return value.decode("ascii") if _SANE_ID.fullmatch(value) else None
    return None


def route_template(scope: Scope) -> str:
    """The path template of the route that handled the request (`/v1/models/{model_id:path}`).

    The router leaves the matched route in the scope; a path nothing matched is
    `unmatched`, so scanners cannot grow the number of series.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class RequestObservability:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        rid = incoming_id(scope["headers"]) or new_request_id()
        id_header = (HEADER, rid.encode("ascii"))
        # Stays 500 if the application fails before it answers.
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        disconnected = False

        async def receive_noting_disconnect() -> Message:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        token = request_id.set(rid)
        start = time.perf_counter()
        try:
            await self.app(scope, receive_noting_disconnect, send_with_id)
        except asyncio.CancelledError:
            if not _abandoned_by_client(disconnected):
                raise
            # Work the application cancelled because the client hung up let its
            # CancelledError escape. A hang-up is normal: one line, no traceback, and
            # the server does not log it as "Exception in ASGI application".
            log.info(
                "client disconnected before the answer to %s %s", scope["method"], scope["path"]
            )
            status = CLIENT_CLOSED
        finally:
            elapsed = time.perf_counter() - start
            request_id.reset(token)
            method = scope["method"]
            observe_http(
                method if method in _METHODS else "other", route_template(scope), status, elapsed
            )


def _abandoned_by_client(disconnected: bool) -> bool:
    """Whether a CancelledError out of the application comes from a hang-up.

    Only when the client did disconnect and this request's own task is not being
    cancelled: a cancellation of the request itself (server shutdown) must go on.
    """
    task = asyncio.current_task()
    return disconnected and task is not None and not task.cancelling()
