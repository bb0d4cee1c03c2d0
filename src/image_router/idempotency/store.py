"""Claims and stored answers of idempotency keys, in the `idempotency_keys` table.

The database is the authority, so this holds across workers and machines:

1. `begin` inserts the row `in_progress` with a random `token` and a lease (`locked_until`)
   in its own short transaction, before any work. The primary key (account, key hash)
   lets exactly one concurrent request insert it; the others find the row.
2. A request that finds the row with another fingerprint gets 422 `idempotency_key_reused`;
   a finished one gets the stored answer; a running one waits for it (re-reading the row,
   backing off to half a second) up to `wait_s`, then gets 409 `idempotency_key_in_progress`
   with `Retry-After`.
3. `finish` stores the answer (sealed under the account's data key) — only where the row
   still carries this claim's token. Answers that ask for a retry (409, 429, anything with
   `Retry-After`) are not kept: the row is deleted, so the retry runs afresh. `release`
   deletes the claim of a request that was abandoned before it charged anything.
4. A claim whose lease passed belongs to a request that died (a killed worker): the next
   request with the same key and body takes it over with a new token. The lease of a
   generation is its deadline plus the hold grace, the moment the hold reconciler gives a
   dead request's hold back, so a take-over never runs beside a request still at work.

Rows expire `retention` after the first request; the retention purge deletes them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.personal_data import Vault
from image_router.db.session import autocommit, unit_of_work
from image_router.db.tables import IdempotencyKey
from image_router.errors import Conflict, GatewayError, InternalError
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id
from image_router.usage import service as usage

log = logging.getLogger(__name__)

IN_PROGRESS = "in_progress"
DONE = "done"
# Answers that ask the client to try again are never replayed.
RETRY_STATUSES = frozenset({409, 429})


class IdempotencyKeyReused(GatewayError):
    status = 422
    error_type = "invalid_request_error"
    code = "idempotency_key_reused"


class IdempotencyKeyInProgress(Conflict):
    code = "idempotency_key_in_progress"


class IdempotentAnswerLost(InternalError):
    code = "idempotent_answer_lost"


@dataclass(frozen=True)
class IdempotencyPolicy:
    retention: timedelta = timedelta(hours=24)
    wait_s: float = 10.0  # how long a duplicate waits for a running first request
    first_poll_s: float = 0.05
    max_poll_s: float = 0.5


@dataclass(frozen=True)
class Answer:
    """What was answered: replayed as is."""

    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def kept(self) -> bool:
        """Whether it is final: not an answer asking the client to retry."""
        asks_retry = any(name.lower() == "retry-after" for name in self.headers)
        return self.status not in RETRY_STATUSES and not asks_retry


@dataclass(frozen=True)
class Claim:
    """This request holds the key: it does the work, then `finish`es or `release`s."""

    account_id: str
    key_hash: str
    token: str
    taken_over: bool = False


@dataclass(frozen=True)
class Idempotency:
    engine: AsyncEngine
    vault: Vault  # seals the stored bodies
    policy: IdempotencyPolicy

    async def begin(
        self, account_id: str, key_hash: str, fingerprint: str, *, lease_s: float
    ) -> Claim | Answer:
        """Claim the key for this request, or the answer of the request that claimed it.

        Raises `IdempotencyKeyReused` for another request under the same key and
        `IdempotencyKeyInProgress` when the first one is still running after `wait_s`.
        """
        started = time.monotonic()
        delay = self.policy.first_poll_s
        while True:
            claim = await self._claim(account_id, key_hash, fingerprint, lease_s)
            if claim is not None:
                return claim
            async with autocommit(self.engine) as conn:
                row = (
                    await conn.execute(select(IdempotencyKey).where(*_this(account_id, key_hash)))
                ).first()
            if row is None:
                continue  # released meanwhile: claim it
            if row.fingerprint != fingerprint:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was already used with another request (method, path "
                    "or body); use a new key for a new request",
                    param="Idempotency-Key",
                )
            if row.state == DONE:
                return await self._answer(row)
            left = self.policy.wait_s - (time.monotonic() - started)
            if left <= 0:
                raise _in_progress(self.policy.wait_s)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, self.policy.max_poll_s)

    async def finish(self, claim: Claim, answer: Answer) -> None:
        """Store the answer under the claim; one asking for a retry releases it instead."""
        if not answer.kept:
            await self.release(claim)
            return
        sealed = await self.vault.seal(claim.account_id, answer.body.decode())
        async with unit_of_work(self.engine) as conn:
            stored = await conn.execute(
                update(IdempotencyKey)
                .where(*_mine(claim))
                .values(
                    state=DONE,
                    status=answer.status,
                    headers=answer.headers,
                    body_enc=sealed,
                    finished_at=utcnow(),
                )
            )
        if not stored.rowcount:
            log.warning("an idempotency key's lease passed before its answer was stored")

    async def release(self, claim: Claim) -> None:
        """Forget the claim of a request that ended without a final answer."""
        async with unit_of_work(self.engine) as conn:
            await conn.execute(delete(IdempotencyKey).where(*_mine(claim)))

    async def abandon(self, claim: Claim, generation_id: str) -> None:
        """A generation's client went away and its answer went with it. Nothing charged:
        release, so a retry runs afresh. Charged (it hung up during the settle): keep a
        final answer saying so, so a retry cannot charge a second time."""
        async with autocommit(self.engine) as conn:
            row = await usage.get(conn, generation_id)
        if row is None or row["status"] != "success":
            await self.release(claim)
            return
        lost = IdempotentAnswerLost(
            f"This request was completed and charged, but its client hung up before the "
            f"answer was sent; its outputs are in the usage log (generation {generation_id})"
        )
        body = orjson.dumps(lost.body())
        await self.finish(claim, Answer(lost.status, {"X-Generation-Id": generation_id}, body))

    async def _claim(
        self, account_id: str, key_hash: str, fingerprint: str, lease_s: float
    ) -> Claim | None:
        now = utcnow()
        token = new_id()
        values: dict[str, Any] = {
            "fingerprint": fingerprint,
            "state": IN_PROGRESS,
            "token": token,
            "locked_until": now + timedelta(seconds=lease_s),
            "status": None,
            "headers": {},
            "body_enc": None,
            "created_at": now,
            "finished_at": None,
            "expires_at": now + self.policy.retention,
        }
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        async with unit_of_work(self.engine) as conn:
            inserted = await conn.execute(
                insert(IdempotencyKey)
                .values(account_id=account_id, key_hash=key_hash, **values)
                .on_conflict_do_nothing(index_elements=["account_id", "key_hash"])
            )
            if inserted.rowcount:
                return Claim(account_id, key_hash, token)
            # An expired row (not purged yet), or the claim of a request that died: its
            # lease passed, so its hold is being given back; this request takes over.
            taken = await conn.execute(
                update(IdempotencyKey)
                .where(
                    *_this(account_id, key_hash),
                    or_(
                        IdempotencyKey.expires_at <= now,
                        and_(
                            IdempotencyKey.state == IN_PROGRESS,
                            IdempotencyKey.locked_until <= now,
                            IdempotencyKey.fingerprint == fingerprint,
                        ),
                    ),
                )
                .values(**values)
            )
        if taken.rowcount:
            log.info("took over an idempotency key whose request died or expired")
            return Claim(account_id, key_hash, token, taken_over=True)
        return None

    async def _answer(self, row: Any) -> Answer:
        body = await self.vault.open(row.account_id, row.body_enc)
        return Answer(int(row.status), dict(row.headers or {}), (body or "").encode())


def _this(account_id: str, key_hash: str) -> tuple[Any, ...]:
    return (IdempotencyKey.account_id == account_id, IdempotencyKey.key_hash == key_hash)


def _mine(claim: Claim) -> tuple[Any, ...]:
    return (
        *_this(claim.account_id, claim.key_hash),
        IdempotencyKey.token == claim.token,
        IdempotencyKey.state == IN_PROGRESS,
    )


def _in_progress(wait_s: float) -> IdempotencyKeyInProgress:
    # Retrying after the bound waits that long again on the server, so the client polls
    # about once per bound without holding a connection for the whole generation.
    retry_after = max(1, math.ceil(wait_s))
    return IdempotencyKeyInProgress(
        "A request with this Idempotency-Key is still running; retry with the same key "
        "to get its answer",
        param="Idempotency-Key",
        headers={"Retry-After": str(retry_after)},
    )
