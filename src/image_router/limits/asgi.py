"""The general limiter as a pure ASGI middleware (no per-request task, no body buffering).

It counts every HTTP request by client IP, answers 429 itself when the count is over, and
writes the `RateLimit-*` headers of the latest decision on every response — the general
limiter's, or the account limiter's on the generation routes (spec §2.10). A browser that
asked for a page (`Accept: text/html`) gets an HTML page with the wait instead of JSON, when
the app gives the middleware a way to draw one (`html_page`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from image_router.errors import RateLimited
from image_router.limits.guard import GENERAL, Limits, latest_decision

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_POLICY = b"ratelimit-policy"
# Signed deliveries from Stripe and Clerk (Svix) come from a few shared addresses in bursts
# (a backlog being replayed); the signature, not the address, decides whether they count.
WEBHOOK_PREFIX = "/webhooks/"
# A load balancer polls readiness every few seconds from one address; refusing it 429
# would take a healthy server out of rotation.
UNLIMITED_PATHS = frozenset({"/ready"})


def wants_html(scope: Scope) -> bool:
    """Whether the client asked for a web page: browsers navigating send `Accept: text/html`;
    API clients (SDKs, curl, fetch) do not."""
    for name, value in scope.get("headers", []):
        if name == b"accept":
            return b"text/html" in value
    return False


class RateLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        limits_of: Callable[[], Limits],
        html_page: Callable[[int], bytes] | None = None,
    ) -> None:
        """`limits_of` is read per request: the limits are built at start-up, after the
        middleware stack. `html_page(retry_after_s)` draws the refusal for a browser."""
        self.app = app
        self.limits_of = limits_of
        self.html_page = html_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith(WEBHOOK_PREFIX) or path in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        decision = await self.limits_of().general(scope)
        if decision is None:
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            error = RateLimited(GENERAL)
            if self.html_page is not None and wants_html(scope):
                body = self.html_page(max(1, decision.reset_s))
                content_type = b"text/html; charset=utf-8"
            else:
                body = orjson.dumps(error.body())
                content_type = b"application/json"
            await send(
                {
                    "type": "http.response.start",
                    "status": error.status,
                    "headers": [
                        (b"content-type", content_type),
                        (b"content-length", str(len(body)).encode()),
                        *decision.raw_headers(),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                latest = latest_decision(scope)
                # An error raised by a limiter already carries its own headers.
                if latest is not None and not any(k.lower() == _POLICY for k, _ in headers):
                    message["headers"] = headers + latest.raw_headers()
            await send(message)

        await self.app(scope, receive, send_with_headers)
