"""The usage log: one `generations` row per request (spec §10.2) and what is read from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import String, bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import GENERATIONS, ApiKey, Generation
from image_router.kit.clock import utcnow


@dataclass(frozen=True)
class NewGeneration:
    id: str
    account_id: str
    api_key_id: str | None
    via_web_token: bool
    modality: str
    model: str
    provider: str
    prompt_enc: bytes | None  # sealed under the account's data key; None: not stored
    content_expires_at: datetime | None
    size: str
    quality: str | None
    seconds: str | None
    input_types: list[str]
    held: int
    ip: str | None
    deadline_at: datetime
    # The webhook outbox: True when the generation's end will be an event (None: it will
    # not); the request's own webhook, kept until the event is recorded.
    events_pending: bool | None = None
    webhook_url: str | None = None


@dataclass(frozen=True)
class Finish:
    provider: str | None
    cost: int = 0
    latency_ms: int | None = None
    output_urls: list[str] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    output_keys: list[str] = field(default_factory=list)  # storage names, for deletion
    outputs_expire_at: datetime | None = None


_generations = GENERATIONS
# Built once with bound parameters: per-request statement building was the gateway's
# largest CPU cost.
_START = insert(_generations)
_FINISH = (
    update(_generations)
    .where(_generations.c.id == bindparam("gid"), _generations.c.status == "processing")
    .values(
        status=bindparam("status"),
        # None keeps the provider recorded so far (the recovery job does not know better).
        provider=func.coalesce(bindparam("provider", type_=String), _generations.c.provider),
        cost=bindparam("cost"),
        latency_ms=bindparam("latency_ms"),
        output_urls=bindparam("output_urls", type_=_generations.c.output_urls.type),
        attempts=bindparam("attempts", type_=_generations.c.attempts.type),
        error=bindparam("error"),
        output_keys=bindparam("output_keys", type_=_generations.c.output_keys.type),
        outputs_expire_at=bindparam(
            "outputs_expire_at", type_=_generations.c.outputs_expire_at.type
        ),
        finished_at=bindparam("finished_at", type_=_generations.c.finished_at.type),
    )
    # What the row holds as it closes: a hold may have grown since the request read it.
    .returning(_generations.c.held)
)
_EXTEND_HELD = (
    update(_generations)
    .where(_generations.c.id == bindparam("gid"), _generations.c.status == "processing")
    .values(held=_generations.c.held + bindparam("extra"))
)


def opening_values(row: NewGeneration) -> dict[str, Any]:
    """Every column of a new processing row (also written by `ledger.direct`, the hot path)."""
    return {
        **row.__dict__,
        "status": "processing",
        "cost": 0,
        "output_urls": [],
        "output_keys": [],
        "attempts": [],
        "created_at": utcnow(),
    }


def closing_values(status: str, outcome: Finish) -> dict[str, Any]:
    """The columns a finish writes (a None `provider` keeps the one recorded so far)."""
    return {
        "status": status,
        "provider": outcome.provider,
        "cost": outcome.cost,
        "latency_ms": outcome.latency_ms,
        "output_urls": outcome.output_urls,
        "attempts": outcome.attempts,
        "error": outcome.error,
        "output_keys": outcome.output_keys,
        "outputs_expire_at": outcome.outputs_expire_at,
        "finished_at": utcnow(),
    }


async def start(conn: AsyncConnection, row: NewGeneration) -> None:
    await conn.execute(_START, opening_values(row))


async def finish(
    conn: AsyncConnection, generation_id: str, status: str, outcome: Finish
) -> int | None:
    """Move a processing row to success or error and return the credits it held; None if
    it was already finished.

    The `status = 'processing'` guard makes settling exactly-once even when a recovery job
    and the request race for the same row. The held amount is read by the same statement,
    so a concurrent extension of the hold (PostgreSQL makes this wait for it) is included.
    """
    result = await conn.execute(_FINISH, {"gid": generation_id, **closing_values(status, outcome)})
    held = result.scalar_one_or_none()
    return None if held is None else int(held)


async def extend_held(conn: AsyncConnection, generation_id: str, extra: int) -> bool:
    """Record `extra` more credits held by a processing row; False if it was finished."""
    result = await conn.execute(_EXTEND_HELD, {"gid": generation_id, "extra": extra})
    return result.rowcount == 1


async def get(conn: AsyncConnection, generation_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(Generation).where(Generation.id == generation_id))).first()
    return None if row is None else dict(row._mapping)


@dataclass(frozen=True)
class KeyUsage:
    api_key_id: str | None
    via_web_token: bool
    cost: int
    requests: int
    key_name: str | None
    key_created_at: datetime | None
    key_active: bool | None
    spend_limit: int | None = None
    spend_limit_period: str | None = None
    expires_at: datetime | None = None


async def usage_by_key(conn: AsyncConnection, account_id: str) -> list[KeyUsage]:
    """Spend and request count per API key (spec §8.6), every status counted."""
    grouped = (
        await conn.execute(
            select(
                Generation.api_key_id,
                Generation.via_web_token,
                func.coalesce(func.sum(Generation.cost), 0).label("cost"),
                func.count().label("requests"),
            )
            .where(Generation.account_id == account_id)
            .group_by(Generation.api_key_id, Generation.via_web_token)
            .order_by(func.min(Generation.created_at))
        )
    ).all()
    keys = {
        k.id: k
        for k in (
            await conn.execute(
                select(
                    ApiKey.id,
                    ApiKey.name,
                    ApiKey.created_at,
                    ApiKey.is_active,
                    ApiKey.revoked_at,
                    ApiKey.spend_limit,
                    ApiKey.spend_limit_period,
                    ApiKey.expires_at,
                ).where(ApiKey.account_id == account_id)
            )
        ).all()
    }
    out = []
    for g in grouped:
        key = keys.get(g.api_key_id) if g.api_key_id else None
        out.append(
            KeyUsage(
                api_key_id=g.api_key_id,
                via_web_token=bool(g.via_web_token),
                cost=int(g.cost),
                requests=int(g.requests),
                key_name=key.name if key else None,
                key_created_at=key.created_at if key else None,
                key_active=(key.is_active and key.revoked_at is None) if key else None,
                spend_limit=key.spend_limit if key else None,
                spend_limit_period=key.spend_limit_period if key else None,
                expires_at=key.expires_at if key else None,
            )
        )
    return out
