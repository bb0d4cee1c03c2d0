"""An account's usage log as the `/usage` page reads it: filtered rows, totals, daily spend.

A filter is a date range (UTC days), a model, a key (an API key id, or `PLAYGROUND` for
the website's own tokens) and a status. The totals, the page of rows and the CSV export
read the same `WHERE`, so the numbers above a table are those of its rows. Prompts stay
sealed here; the caller opens them with the account's vault.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.calendar import utc_day
from image_router.db.tables import ApiKey, Generation, GenerationJob

PLAYGROUND = "playground"  # the `key` filter for requests made with website tokens
STATUSES = ("success", "error", "processing")
EXPORT_BATCH = 500


@dataclass(frozen=True)
class UsageFilter:
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    model: str | None = None
    key: str | None = None  # an API key id, or PLAYGROUND
    status: str | None = None
    generation_id: str | None = None  # exactly this request


@dataclass(frozen=True)
class HistoryRow:
    id: str
    created_at: datetime
    modality: str
    model: str
    provider: str
    status: str
    error: str | None
    cost: int  # credits
    latency_ms: int | None
    size: str
    quality: str | None
    seconds: str | None
    api_key_id: str | None
    via_web_token: bool
    key_name: str | None
    prompt_enc: bytes | None
    output_urls: tuple[str, ...]  # empty once the outputs are past their retention or deleted
    content_deleted_at: datetime | None
    # The job row's state when the generation is (or became) a job (docs/jobs.md): queued,
    # running, succeeded, failed or cancelled; None for a plain synchronous request.
    job_state: str | None = None
    job_progress: float | None = None  # 0..1 while running, when the vendor reports it


@dataclass(frozen=True)
class Totals:
    requests: int
    spend: int  # credits


@dataclass(frozen=True)
class DaySpend:
    day: date
    spend: int  # credits
    requests: int


@dataclass(frozen=True)
class KeyChoice:
    id: str
    name: str
    revoked: bool


def _where(account_id: str, f: UsageFilter) -> list[ColumnElement[bool]]:
    g = Generation
    clauses: list[ColumnElement[bool]] = [g.account_id == account_id]
    if f.generation_id is not None:
        clauses.append(g.id == f.generation_id)
    if f.since is not None:
        clauses.append(g.created_at >= f.since)
    if f.until is not None:
        clauses.append(g.created_at < f.until)
    if f.model is not None:
        clauses.append(g.model == f.model)
    if f.key == PLAYGROUND:
        clauses.append(g.via_web_token.is_(True))
    elif f.key is not None:
        clauses.append(g.api_key_id == f.key)
    if f.status is not None:
        clauses.append(g.status == f.status)
    return clauses


_ROW_COLUMNS: tuple[Any, ...] = (
    Generation.id,
    Generation.created_at,
    Generation.modality,
    Generation.model,
    Generation.provider,
    Generation.status,
    Generation.error,
    Generation.cost,
    Generation.latency_ms,
    Generation.size,
    Generation.quality,
    Generation.seconds,
    Generation.api_key_id,
    Generation.via_web_token,
    Generation.prompt_enc,
    Generation.output_urls,
    Generation.outputs_expire_at,
    Generation.content_deleted_at,
    ApiKey.name.label("key_name"),
    GenerationJob.state.label("job_state"),
    GenerationJob.progress.label("job_progress"),
)


def _rows_query(account_id: str, f: UsageFilter) -> Select[Any]:
    g = Generation
    return (
        select(*_ROW_COLUMNS)
        .outerjoin(ApiKey, and_(ApiKey.id == g.api_key_id, ApiKey.account_id == g.account_id))
        .outerjoin(GenerationJob, GenerationJob.id == g.id)
        .where(*_where(account_id, f))
        .order_by(g.created_at.desc(), g.id.desc())
    )


def _row(r: Any, now: datetime) -> HistoryRow:
    gone = r.content_deleted_at is not None or (
        r.outputs_expire_at is not None and r.outputs_expire_at <= now
    )
    return HistoryRow(
        id=str(r.id),
        created_at=r.created_at,
        modality=str(r.modality),
        model=str(r.model),
        provider=str(r.provider),
        status=str(r.status),
        error=r.error,
        cost=int(r.cost),
        latency_ms=r.latency_ms,
        size=str(r.size),
        quality=r.quality,
        seconds=r.seconds,
        api_key_id=r.api_key_id,
        via_web_token=bool(r.via_web_token),
        key_name=r.key_name,
        prompt_enc=r.prompt_enc,
        # A link to an output already purged would only lead to a 404.
        output_urls=() if gone else tuple(str(u) for u in r.output_urls or ()),
        content_deleted_at=r.content_deleted_at,
        job_state=r.job_state,
        job_progress=r.job_progress,
    )


async def totals(conn: AsyncConnection, account_id: str, f: UsageFilter) -> Totals:
    """How many requests match, and what they cost (failures cost nothing)."""
    row = (
        await conn.execute(
            select(func.count(), func.coalesce(func.sum(Generation.cost), 0)).where(
                *_where(account_id, f)
            )
        )
    ).one()
    return Totals(requests=int(row[0]), spend=int(row[1]))


async def page(
    conn: AsyncConnection,
    account_id: str,
    f: UsageFilter,
    *,
    limit: int,
    offset: int,
    now: datetime,
) -> list[HistoryRow]:
    """One page of the matching rows, newest first."""
    found = await conn.execute(_rows_query(account_id, f).limit(limit).offset(offset))
    return [_row(r, now) for r in found]


async def every_row(
    conn: AsyncConnection, account_id: str, f: UsageFilter, *, now: datetime, cap: int
) -> AsyncIterator[HistoryRow]:
    """Every matching row (at most `cap`), newest first, read in batches (the CSV export)."""
    offset = 0
    while offset < cap:
        batch = await page(
            conn, account_id, f, limit=min(EXPORT_BATCH, cap - offset), offset=offset, now=now
        )
        for row in batch:
            yield row
        if len(batch) < EXPORT_BATCH:
            return
        offset += len(batch)


async def daily_spend(
    conn: AsyncConnection, account_id: str, *, last_day: date, days: int
) -> list[DaySpend]:
    """Spend and requests per UTC day for the `days` days ending with `last_day`, oldest
    first, days without requests included as zeros."""
    first = last_day - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    day = utc_day(Generation.created_at, conn.dialect.name).label("day")
    rows = (
        await conn.execute(
            select(day, func.coalesce(func.sum(Generation.cost), 0), func.count())
            .where(Generation.account_id == account_id, Generation.created_at >= since)
            .group_by(day)
        )
    ).all()
    found = {str(r[0]): (int(r[1]), int(r[2])) for r in rows}
    out = []
    for i in range(days):
        d = first + timedelta(days=i)
        spend, requests = found.get(d.isoformat(), (0, 0))
        out.append(DaySpend(d, spend, requests))
    return out


async def choices(conn: AsyncConnection, account_id: str) -> tuple[list[str], list[KeyChoice]]:
    """What the filters offer: the models this account has used, and its keys (revoked ones
    too, since their requests stay in the log)."""
    models = (
        await conn.execute(
            select(Generation.model)
            .where(Generation.account_id == account_id)
            .group_by(Generation.model)
            .order_by(Generation.model)
        )
    ).scalars()
    keys = (
        await conn.execute(
            select(ApiKey.id, ApiKey.name, ApiKey.revoked_at)
            .where(ApiKey.account_id == account_id, ApiKey.is_management.is_(False))
            .order_by(ApiKey.created_at)
        )
    ).all()
    return [str(m) for m in models], [
        KeyChoice(str(k.id), str(k.name), k.revoked_at is not None) for k in keys
    ]
