"""The generation's `events` collaborator: one delivery row per target, nothing sent here.

When a generation ends, `completed`/`failed` record a delivery for each of the account's
enabled endpoints and for the request's own `webhook_url`, in one short transaction right
after the settle (or release) committed; the delivery runner sends them. Recording after,
not inside, the money's transaction keeps the hot path's transactions as they are and a
webhook problem away from the charge.

Nothing is lost for that (an outbox, at-least-once): the usage row is opened, by the
hold's own statement, with `events_pending` set when the generation will be an event
(`expects`), and the transaction that records the deliveries sets it back to NULL (`WHERE
events_pending IS NOT NULL`: whoever clears it records, once). A closed row still marked
(its process died before recording, the database failed right after the settle, the hold
reconciler released it) is recorded by `sweep`, which the delivery runner calls each pass
for rows closed more than `SWEEP_AFTER` ago; its payload is rebuilt from the usage row.

Most accounts have no endpoint, so which accounts have none is remembered for
`ENDPOINTS_CACHE_S` (per process): such a generation costs no query at all and its row is
not marked. An endpoint added on another worker is therefore told of events from at most
that long after; one added on this worker, at once. Whether a generation is an event is
decided when its hold is taken; the endpoints it goes to are read fresh when it is recorded.

The payload carries no prompt (nor a revised prompt) and never image bytes: the delivery
log keeps it for WEBHOOK_LOG_DAYS, whatever the account chose about storing prompts.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db.session import autocommit, unit_of_work
from image_router.db.tables import Generation, WebhookDelivery, WebhookEndpoint
from image_router.generation.events import Finished
from image_router.kit.clock import iso, utcnow
from image_router.kit.money import usd_number
from image_router.webhooks.endpoints import PENDING
from image_router.webhooks.policy import WebhookPolicy
from image_router.webhooks.targets import UrlGuard

log = logging.getLogger(__name__)

ENDPOINTS_CACHE_S = 5.0
_CACHE_SIZE = 10_000
# A closed row still marked this long after it closed is the sweeper's: its own process
# records it milliseconds after the close, so this only keeps the two from racing (and
# if they do race, the mark still lets one of them record).
SWEEP_AFTER = timedelta(seconds=30)
SWEEP_BATCH = 100
# The error object of a failure the sweeper tells: the message is the usage row's error
# (for a hold the reconciler released: "abandoned: … (the worker stopped)").
SWEPT_ERROR_TYPE = "generation_error"
SWEPT_ERROR_CODE = "generation_failed"

# Clearing the mark is what entitles a transaction to record the events: exactly one does.
_CLEAR_MARK = (
    update(Generation)
    .where(Generation.id == bindparam("gid"), Generation.events_pending.is_not(None))
    .values(events_pending=None, webhook_url=None)
)


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

    def expects(self, account_id: str, webhook_url: str | None) -> bool:
        return webhook_url is not None or not self._known_without_endpoints(account_id)

    async def completed(self, finished: Finished) -> None:
        await self._record(finished, ok=True)

    async def failed(self, finished: Finished) -> None:
        await self._record(finished, ok=False)

    async def sweep(self, *, now: datetime | None = None, limit: int = SWEEP_BATCH) -> int:
        """Record the events of up to `limit` generations closed more than `SWEEP_AFTER`
        before `now` whose events were not recorded (the outbox); returns how many were
        handled. One that fails is logged and stays marked for the next pass."""
        now = now or utcnow()
        async with autocommit(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(
                        Generation.id,
                        Generation.account_id,
                        Generation.modality,
                        Generation.model,
                        Generation.status,
                        Generation.cost,
                        Generation.latency_ms,
                        Generation.output_urls,
                        Generation.error,
                        Generation.webhook_url,
                    )
                    .where(
                        Generation.events_pending.is_not(None),
                        Generation.status != "processing",
                        Generation.finished_at < now - SWEEP_AFTER,
                    )
                    .order_by(Generation.finished_at)
                    .limit(limit)
                )
            ).all()
        for row in rows:
            ok = row.status == "success"
            finished = Finished(
                generation_id=row.id,
                account_id=row.account_id,
                modality=row.modality,
                model=row.model,
                cost=int(row.cost) if ok else 0,
                webhook_url=row.webhook_url,
                latency_ms=row.latency_ms,
                urls=tuple(row.output_urls or ()),
                error=None
                if ok
                else {
                    "message": row.error or "The generation failed.",
                    "type": SWEPT_ERROR_TYPE,
                    "code": SWEPT_ERROR_CODE,
                },
            )
            try:
                await self._record(finished, ok=ok, swept=True)
            except Exception:
                log.exception("recording the events of generation %s failed", row.id)
        if rows:
            log.info("recorded the pending events of %d generations", len(rows))
        return len(rows)

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

    def _known_without_endpoints(self, account_id: str) -> bool:
        return self._none_until.get(account_id, 0) > time.monotonic()

    async def _record(self, finished: Finished, *, ok: bool, swept: bool = False) -> None:
        """Record the deliveries and clear the row's mark, in one transaction; nothing when
        the mark was cleared already (recorded by the other path) or never set. `swept`:
        the sweeper's call, which must clear a mark even for an account now known to have
        no endpoint."""
        account_id = finished.account_id
        if not swept and finished.webhook_url is None and self._known_without_endpoints(account_id):
            return  # its row was not marked either (or the sweeper clears it)
        now = utcnow()
        body = payload(finished, ok=ok, timestamp=iso(now))
        kind = event_type(finished, ok=ok)
        endpoints = await self._endpoints(account_id)
        for last_try in (False, True):
            targets: list[tuple[str | None, str]] = list(endpoints)
            if finished.webhook_url is not None:
                targets.append((None, finished.webhook_url))
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
                    # First, so on PostgreSQL the row's lock orders a racing sweeper after
                    # us; it then finds the mark cleared and records nothing.
                    cleared = await conn.execute(_CLEAR_MARK, {"gid": finished.generation_id})
                    if cleared.rowcount == 1 and rows:
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
