"""Building one data export (DSR-1): its estimated size, the ZIP file, the audit entry.

Used by the endpoints (the synchronous export), the "export" job and the operator's
`users export` command alike, so every route produces the same file and the same trail.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.db.session import autocommit
from image_router.db.tables import (
    AuditEntry,
    Consent,
    Generation,
    GenerationJob,
    IdempotencyKey,
    LedgerEntry,
    Topup,
    WebhookDelivery,
)
from image_router.legal.render import PolicyFacts
from image_router.privacy import audit
from image_router.privacy import requests as dsr
from image_router.privacy.export_zip import ExportSources, write_export

EXPORTED_FIELDS = (
    "email",
    "name",
    "prompts",
    "usage",
    "payments",
    "outputs",
    "webhooks",
    "jobs",
    "idempotency_keys",
)
# Estimates of what a row and a stored output add to the ZIP (compressed JSON; a PNG of
# 1024x1024 is about 1.5 MB, a short video about 10 MB). Only used to choose sync vs async.
_ROW_BYTES = 600
_BASE_BYTES = 16 * 1024
_OUTPUT_BYTES = {"image": 2 * 1024 * 1024, "video": 20 * 1024 * 1024}


@dataclass(frozen=True)
class ExportActor:
    """Who asked: the person (`user`, their account id) or an operator (login, reason)."""

    actor_type: str
    actor_id: str | None
    reason: str | None = None
    request_id: str | None = None
    channel: str = "api"  # data_subject_requests.channel of a self-service export


@dataclass(frozen=True)
class ExportFile:
    path: Path
    size: int
    sha256: str


async def estimate_bytes(engine: AsyncEngine, account_id: str, now: datetime) -> int:
    """Roughly how large the account's export will be (rows plus stored outputs)."""
    async with autocommit(engine) as conn:
        rows = 0
        for table, column in (
            (Generation, Generation.account_id),
            (LedgerEntry, LedgerEntry.account_id),
            (Topup, Topup.account_id),
            (Consent, Consent.account_id),
            (AuditEntry, AuditEntry.subject_account_id),
            (WebhookDelivery, WebhookDelivery.account_id),
            (GenerationJob, GenerationJob.account_id),
            (IdempotencyKey, IdempotencyKey.account_id),
        ):
            rows += (
                await conn.scalar(
                    select(func.count()).select_from(table).where(column == account_id)
                )
                or 0
            )
        outputs = (
            await conn.execute(
                select(Generation.modality, Generation.output_keys).where(
                    Generation.account_id == account_id,
                    or_(Generation.outputs_expire_at.is_(None), Generation.outputs_expire_at > now),
                )
            )
        ).all()
    stored = sum(
        len(keys or []) * _OUTPUT_BYTES.get(kind, _OUTPUT_BYTES["image"]) for kind, keys in outputs
    )
    return _BASE_BYTES + rows * _ROW_BYTES + stored


async def build_export_file(
    src: ExportSources, account_id: str, facts: PolicyFacts, now: datetime
) -> ExportFile:
    """Build the ZIP in a new temporary file, which the caller must delete."""
    fd, name = tempfile.mkstemp(prefix="image-router-export-", suffix=".zip")
    os.close(fd)
    path = Path(name)
    try:
        await write_export(src, account_id, path, facts, now)
        size, digest = await asyncio.to_thread(_size_and_sha256, path)
    except BaseException:
        path.unlink(missing_ok=True)  # noqa: ASYNC240 (a local unlink does not block)
        raise
    return ExportFile(path, size, digest)


@asynccontextmanager
async def build_export(
    src: ExportSources, account_id: str, facts: PolicyFacts, now: datetime
) -> AsyncIterator[ExportFile]:
    """`build_export_file` whose file is deleted when the block ends."""
    built = await build_export_file(src, account_id, facts, now)
    try:
        yield built
    finally:
        built.path.unlink(missing_ok=True)


def _size_and_sha256(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


async def record_export(conn: AsyncConnection, account_id: str, actor: ExportActor) -> None:
    """Append the audit entry of an export (call it last in the transaction)."""
    await audit.record(
        conn,
        actor_type=actor.actor_type,
        actor_id=actor.actor_id,
        subject_account_id=account_id,
        action="export",
        fields=EXPORTED_FIELDS,
        reason=actor.reason,
        request_id=actor.request_id,
    )


async def record_self_service(
    conn: AsyncConnection, account_id: str, actor: ExportActor, now: datetime
) -> None:
    """A synchronous export the person made themselves: a fulfilled request plus audit."""
    await dsr.record_fulfilled(
        conn, account_id=account_id, type="export", channel=actor.channel, now=now
    )
    await record_export(conn, account_id, actor)
