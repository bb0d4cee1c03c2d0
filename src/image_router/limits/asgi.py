"""The general limiter as a pure ASGI middleware (no per-request task, no body buffering).

It counts every HTTP request by client IP, answers 429 itself when the count is over, and
writes the `RateLimit-*` headers of the latest decision on every response — the general
limiter's, or the account limiter's on the generation routes (spec §2.10).
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


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, limits_of: Callable[[], Limits]) -> None:
        """`limits_of` is read per request: the limits are built at start-up, after the
        middleware stack."""
        self.app = app
        self.limits_of = limits_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(WEBHOOK_PREFIX):
            await self.app(scope, receive, send)
            return
        decision = await self.limits_of().general(scope)
        if decision is None:
            await self.app(scope, receive, send)
            return
        if not decision.allowed:
            error = RateLimited(GENERAL)
            body = orjson.dumps(error.body())
            await send(
                {
                    "type": "http.response.start",
                    "status": error.status,
                    "headers": [
                        (b"content-type", b"application/json"),
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
