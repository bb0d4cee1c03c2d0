"""The generation's `events` collaborator: one delivery row per target, nothing sent here.

When a generation ends, `completed`/`failed` record a delivery for each of the account's
enabled endpoints and for the request's own `webhook_url`, in one short transaction right
after the settle (or release) committed; the delivery runner sends them. Recording after,
not inside, the money's transaction keeps the hot path's transactions as they are and a
webhook problem away from the charge. The price: a process that dies between the two
commits loses that generation's event (the generation itself is settled and logged).

Most accounts have no endpoint, so which accounts have none is remembered for
`ENDPOINTS_CACHE_S` (per process): such a generation costs no query at all. An endpoint
added on another worker is therefore told of events from at most that long after; one
added on this worker, at once. The endpoints themselves are read fresh on every event.

The payload carries no prompt (nor a revised prompt) and never image bytes: the delivery
log keeps it for WEBHOOK_LOG_DAYS, whatever the account chose about storing prompts.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db.session import autocommit, unit_of_work
from image_router.db.tables import WebhookDelivery, WebhookEndpoint
from image_router.generation.events import Finished
from image_router.kit.clock import iso, utcnow
from image_router.kit.money import usd_number
from image_router.webhooks.endpoints import PENDING
from image_router.webhooks.policy import WebhookPolicy
from image_router.webhooks.targets import UrlGuard

ENDPOINTS_CACHE_S = 5.0
_CACHE_SIZE = 10_000


def event_type(finished: Finished, *, ok: bool) -> str:
    kind = "video" if finished.modality == "video" else "generation"
    return f"{kind}.{'completed' if ok else 'failed'}"


def message_id() -> str:
    """A delivery's `webhook-id`: the same on every attempt and resend."""
    return "msg_" + uuid.uuid4().hex


def payload(finished: Finished, *, ok: bool, timestamp: str) -> str:
    """The JSON body (Standard Webhooks' `type`, `timestamp`, `data`)."""
    data: dict[str, Any] = {
        "id": finished.generation_id,
        "object": "generation",
        "model": finished.model,
        "modality": finished.modality,
        "status": "success" if ok else "error",
        "cost": usd_number(finished.cost),
        "latency": finished.latency_ms,
        "data": [{"url": url} for url in finished.urls] if ok else [],
        "error": None if ok else finished.error,
    }
    body = {"type": event_type(finished, ok=ok), "timestamp": timestamp, "data": data}
    return orjson.dumps(body).decode()


@dataclass
class WebhookEvents:
    """Implements `generation.events.GenerationEvents`."""

    engine: AsyncEngine
    guard: UrlGuard
    policy: WebhookPolicy
    # account id -> when "has no endpoint" stops being trusted (monotonic seconds)
    _none_until: dict[str, float] = field(default_factory=dict)

    async def check_url(self, url: str) -> None:
        await self.guard.check(url, param="webhook_url")

    async def completed(self, finished: Finished) -> None:
        await self._record(finished, ok=True)

    async def failed(self, finished: Finished) -> None:
        await self._record(finished, ok=False)

    async def _endpoints(self, account_id: str) -> list[tuple[str | None, str]]:
        """The account's enabled endpoints (id, URL), read without a transaction."""
        async with autocommit(self.engine) as conn:
            rows = await conn.execute(
                select(WebhookEndpoint.id, WebhookEndpoint.url).where(
                    WebhookEndpoint.account_id == account_id,
                    WebhookEndpoint.disabled_at.is_(None),
                )
            )
            return [(row.id, row.url) for row in rows]

    def forget(self, account_id: str) -> None:
        """The account's endpoints changed (here): read them on its next event."""
        self._none_until.pop(account_id, None)

    async def _record(self, finished: Finished, *, ok: bool) -> None:
        account_id = finished.account_id
        if finished.webhook_url is None and self._none_until.get(account_id, 0) > time.monotonic():
            return
        now = utcnow()
        body = payload(finished, ok=ok, timestamp=iso(now))
        kind = event_type(finished, ok=ok)
        endpoints = await self._endpoints(account_id)
        for last_try in (False, True):
            targets: list[tuple[str | None, str]] = list(endpoints)
            if finished.webhook_url is not None:
                targets.append((None, finished.webhook_url))
            if not targets:
                break
            rows = [
                {
                    "id": message_id(),
                    "account_id": account_id,
                    "endpoint_id": endpoint_id,
                    "url": url,
                    "event_type": kind,
                    "generation_id": finished.generation_id,
                    "payload": body,
                    "status": PENDING,
                    "attempts": 0,
                    "created_at": now,
                    "retry_until": now + self.policy.retry_window,
                    "next_attempt_at": now,
                }
                for endpoint_id, url in targets
            ]
            try:
                async with unit_of_work(self.engine) as conn:
                    await conn.execute(insert(WebhookDelivery), rows)
                break
            except IntegrityError:
                # An endpoint was deleted between the read and the insert (its foreign
                # key refused the rows): read them again, once.
                if last_try:
                    raise
                endpoints = await self._endpoints(account_id)
        if endpoints:
            self._none_until.pop(account_id, None)
        else:
            if len(self._none_until) >= _CACHE_SIZE:
                self._none_until.clear()
            self._none_until[account_id] = time.monotonic() + ENDPOINTS_CACHE_S
