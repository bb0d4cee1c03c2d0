"""The delivery runner: every server process runs one (WEBHOOK_WORKER), each claiming its own.

A pass claims up to `BATCH` due deliveries in one short transaction: `SELECT … FOR UPDATE
SKIP LOCKED` on PostgreSQL (workers on other machines skip the rows another is claiming,
without waiting), then an UPDATE that sets `locked_until` (the lease) and returns the rows
it changed, only those still unleased (on SQLite, the database's single writer and the
conditional UPDATE keep a row to one claimant). The posts then run concurrently with no
transaction open; each outcome is written only by the worker holding the lease (`WHERE
locked_until = <its lease>`), so a worker that stalled past its lease cannot overwrite the
newer attempt's result.

An attempt succeeds on any 2xx within WEBHOOK_TIMEOUT_S; anything else (another status, a
redirect, a timeout, a refused address, a connection error) fails it, and the next try
comes after a doubling wait (`WebhookPolicy.next_attempt`) until the retry window closes.
An endpoint whose deliveries have all failed since `disable_after` ago is disabled in the
same transaction as the failure that shows it, its waiting deliveries are closed, and a
`webhook_disabled` job (the durable job queue) e-mails the account.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import httpx
from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.account.personal_data import Vault
from image_router.db.outage import log_failed_pass
from image_router.db.session import unit_of_work
from image_router.db.tables import WebhookDelivery, WebhookEndpoint
from image_router.errors import NotFound
from image_router.kit.clock import utcnow
from image_router.privacy import jobs
from image_router.providers.errors import UpstreamError
from image_router.webhooks.endpoints import DELIVERED, FAILED, PENDING, request_secret
from image_router.webhooks.notices import JOB_KIND as NOTICE_JOB
from image_router.webhooks.policy import WebhookPolicy
from image_router.webhooks.signing import signed_headers
from image_router.webhooks.targets import UrlGuard

log = logging.getLogger(__name__)

BATCH = 20
PURGE_EVERY_S = 3600.0
_ERROR_LIMIT = 500
USER_AGENT = "ImageRouter-Webhooks/1"
ENDPOINT_DISABLED = "the endpoint is disabled"


@dataclass(frozen=True)
class _Claimed:
    id: str
    account_id: str
    endpoint_id: str | None
    url: str
    payload: str
    attempts: int  # before this one
    retry_until: datetime
    lease: datetime


@dataclass(frozen=True)
class _Outcome:
    ok: bool
    status: int | None = None
    error: str | None = None


@dataclass
class DeliveryRunner:
    engine: AsyncEngine
    http: httpx.AsyncClient
    vault: Vault
    guard: UrlGuard
    policy: WebhookPolicy
    _purged_at: float = -PURGE_EVERY_S

    async def run_due(self, *, now: datetime | None = None, limit: int = BATCH) -> int:
        """Claim and attempt up to `limit` due deliveries; returns how many were attempted.
        `now` is the clock deciding what is due and when to retry (tests pass theirs); the
        signature's timestamp is always the real time, which is what receivers check."""
        now = now or utcnow()
        claimed = await self._claim(now, limit)
        if claimed:
            await asyncio.gather(*(self._attempt(item, now) for item in claimed))
        return len(claimed)

    async def run_periodically(
        self,
        interval_s: float,
        stop: asyncio.Event,
        current: Callable[[], DeliveryRunner],
        sweep: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """The loop a server runs until `stop` is set. `current` gives the runner of each
        pass (the process's resources may be rebuilt, as tests do). `sweep` (the events'
        outbox sweeper, webhooks/events.py) runs first in each pass, so the events it
        records are sent in the same pass; its failure does not stop the deliveries."""
        while not stop.is_set():
            ran = 0
            if sweep is not None:
                try:
                    await sweep()
                except Exception as exc:
                    log_failed_pass(log, "recording pending webhook events failed", exc)
            try:
                runner = current()
                ran = await runner.run_due()
                await runner.purge_now_and_then()
            except Exception as exc:
                log_failed_pass(log, "delivering webhooks failed", exc)
            wait = 0.0 if ran >= BATCH else interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=wait)

    async def purge_now_and_then(self, now: datetime | None = None) -> int:
        """At most hourly: delete finished deliveries older than the log's retention."""
        if time.monotonic() - self._purged_at < PURGE_EVERY_S:
            return 0
        self._purged_at = time.monotonic()
        return await self.purge(now or utcnow())

    async def purge(self, now: datetime) -> int:
        async with unit_of_work(self.engine) as conn:
            result = await conn.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.status != PENDING,
                    WebhookDelivery.created_at < now - self.policy.log_for,
                )
            )
        return int(result.rowcount or 0)

    # ----------------------------------------------------------------------- claiming

    async def _claim(self, now: datetime, limit: int) -> list[_Claimed]:
        lease = now + self.policy.lease
        unleased = or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now)
        async with unit_of_work(self.engine) as conn:
            due = (
                select(WebhookDelivery.id)
                .where(
                    WebhookDelivery.status == PENDING,
                    WebhookDelivery.next_attempt_at <= now,
                    unleased,
                )
                .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                .limit(limit)
            )
            if conn.dialect.name == "postgresql":
                due = due.with_for_update(skip_locked=True)
            ids = list((await conn.scalars(due)).all())
            if not ids:
                return []
            rows = (
                await conn.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id.in_(ids), WebhookDelivery.status == PENDING, unleased)
                    .values(locked_until=lease)
                    .returning(
                        WebhookDelivery.id,
                        WebhookDelivery.account_id,
                        WebhookDelivery.endpoint_id,
                        WebhookDelivery.url,
                        WebhookDelivery.payload,
                        WebhookDelivery.attempts,
                        WebhookDelivery.retry_until,
                    )
                )
            ).all()
        return [_Claimed(**row._mapping, lease=lease) for row in rows]

    # ----------------------------------------------------------------------- attempting

    async def _attempt(self, item: _Claimed, now: datetime) -> None:
        try:
            target = await self._target(item)
            if target is None:
                await self._close(item, now, ENDPOINT_DISABLED)
                return
            url, secret = target
            outcome = await self._post(item, url, secret)
            await self._record(item, now, outcome)
        except Exception:
            # The lease runs out and another pass tries again.
            log.exception("webhook delivery %s could not be attempted", item.id)

    async def _target(self, item: _Claimed) -> tuple[str, str] | None:
        """The URL and secret to use now; None when the endpoint is disabled or gone."""
        if item.endpoint_id is None:
            try:
                return item.url, await request_secret(self.engine, self.vault, item.account_id)
            except NotFound:  # the account was erased
                return None
        async with unit_of_work(self.engine) as conn:
            row = (
                await conn.execute(
                    select(
                        WebhookEndpoint.url,
                        WebhookEndpoint.secret_enc,
                        WebhookEndpoint.disabled_at,
                    ).where(WebhookEndpoint.id == item.endpoint_id)
                )
            ).one_or_none()
        if row is None or row.disabled_at is not None:
            return None
        secret = await self.vault.open(item.account_id, row.secret_enc)
        if secret is None:  # the account was erased
            return None
        return row.url, secret

    async def _post(self, item: _Claimed, url: str, secret: str) -> _Outcome:
        headers = signed_headers(secret, item.id, int(time.time()), item.payload)
        headers |= {"content-type": "application/json", "user-agent": USER_AGENT}
        try:
            request = await self.guard.request(
                self.http,
                url,
                content=item.payload.encode(),
                headers=headers,
                timeout=self.policy.timeout_s,
            )
            response = await asyncio.wait_for(
                self.http.send(request, stream=True), timeout=self.policy.timeout_s
            )
            await response.aclose()
        except UpstreamError as exc:  # the address was refused
            return _Outcome(False, error=exc.message)
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(False, error=f"no answer within {self.policy.timeout_s:g} s")
        except httpx.HTTPError as exc:
            return _Outcome(False, error=f"{type(exc).__name__}: {exc}"[:_ERROR_LIMIT])
        if 200 <= response.status_code < 300:
            return _Outcome(True, status=response.status_code)
        return _Outcome(False, status=response.status_code, error=f"HTTP {response.status_code}")

    # ----------------------------------------------------------------------- recording

    def _ours(self, item: _Claimed) -> ColumnElement[bool]:
        return and_(WebhookDelivery.id == item.id, WebhookDelivery.locked_until == item.lease)

    async def _close(self, item: _Claimed, now: datetime, error: str) -> None:
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(WebhookDelivery)
                .where(self._ours(item))
                .values(status=FAILED, last_error=error, next_attempt_at=None, locked_until=None)
            )

    async def _record(self, item: _Claimed, now: datetime, outcome: _Outcome) -> None:
        attempts = item.attempts + 1
        async with unit_of_work(self.engine) as conn:
            if outcome.ok:
                values: dict[str, object] = {
                    "status": DELIVERED,
                    "delivered_at": now,
                    "next_attempt_at": None,
                    "last_error": None,
                }
            else:
                retry = self.policy.next_attempt(attempts, now, item.retry_until)
                values = {
                    "status": PENDING if retry is not None else FAILED,
                    "next_attempt_at": retry,
                    "last_error": outcome.error,
                }
            written = await conn.execute(
                update(WebhookDelivery)
                .where(self._ours(item))
                .values(
                    attempts=attempts,
                    response_status=outcome.status,
                    last_attempt_at=now,
                    locked_until=None,
                    **values,
                )
            )
            if written.rowcount != 1:
                log.warning("webhook delivery %s: lease lost; outcome dropped", item.id)
                return
            if item.endpoint_id is not None:
                await self._endpoint_health(conn, item, now, outcome)

    async def _endpoint_health(
        self, conn: AsyncConnection, item: _Claimed, now: datetime, outcome: _Outcome
    ) -> None:
        endpoint = WebhookEndpoint.id == item.endpoint_id
        if outcome.ok:
            await conn.execute(update(WebhookEndpoint).where(endpoint).values(failing_since=None))
            return
        await conn.execute(
            update(WebhookEndpoint)
            .where(endpoint, WebhookEndpoint.failing_since.is_(None))
            .values(failing_since=now)
        )
        since = await conn.scalar(select(WebhookEndpoint.failing_since).where(endpoint))
        if since is None or now - since < self.policy.disable_after:
            return
        reason = f"every delivery since {since:%Y-%m-%d %H:%M} UTC failed (last: {outcome.error})"
        disabled = await conn.execute(
            update(WebhookEndpoint)
            .where(endpoint, WebhookEndpoint.disabled_at.is_(None))
            .values(disabled_at=now, disabled_reason=reason)
        )
        if disabled.rowcount != 1:
            return
        await conn.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.endpoint_id == item.endpoint_id,
                WebhookDelivery.status == PENDING,
            )
            .values(
                status=FAILED,
                last_error=func.coalesce(WebhookDelivery.last_error, ENDPOINT_DISABLED),
                next_attempt_at=None,
            )
        )
        await jobs.enqueue(
            conn,
            NOTICE_JOB,
            account_id=item.account_id,
            payload={"endpoint_id": item.endpoint_id, "reason": reason},
            now=now,
        )
        log.warning("webhook endpoint %s disabled: %s", item.endpoint_id, reason)
