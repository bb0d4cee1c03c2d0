"""Data exports (privacy-payments.md DSR-1): the archives built in the background.

A small account's export is built while the person waits (export_build.py); a large one is
an *archive*: a row in `export_archives` plus a job of kind "export" queued in the same
transaction. The job builds the ZIP, stores it under an unguessable name and marks the
archive ready until `expires_at`; `purge_expired_exports` (the retention job) then deletes
the file. Each export appends an audit entry ("export"), and one the person asked for is
recorded as a data-subject request, closed when the archive is ready.

Archive states: pending → ready → expired, or pending → failed after the job's last attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.session import autocommit, unit_of_work
from image_router.db.tables import ExportArchive
from image_router.kit.ids import new_id
from image_router.legal.render import PolicyFacts
from image_router.privacy import jobs
from image_router.privacy import requests as dsr
from image_router.privacy.export_build import (
    EXPORTED_FIELDS,
    ExportActor,
    ExportFile,
    build_export,
    build_export_file,
    estimate_bytes,
    record_export,
    record_self_service,
)
from image_router.privacy.export_zip import SCHEMA_VERSION, AccountMissing
from image_router.resources import Resources
from image_router.storage.base import StorageError

log = logging.getLogger(__name__)

__all__ = [
    "EXPORTED_FIELDS",
    "SCHEMA_VERSION",
    "AccountMissing",
    "ArchiveView",
    "ExportActor",
    "ExportFile",
    "build_export",
    "build_export_file",
    "estimate_bytes",
    "purge_expired_exports",
    "record_export",
    "record_self_service",
]

JOB_KIND = "export"
# Storage names of export archives: never served by /files (see files.py).
EXPORT_PREFIX = "export-"
PENDING, READY, FAILED, EXPIRED = "pending", "ready", "failed", "expired"


class ArchiveNotFound(LookupError):
    """No such archive for this account (another account's id looks the same)."""


class ArchiveGone(Exception):
    """The archive expired (or failed); the person must request a new one."""


class ArchiveNotReady(Exception):
    """The archive is still being built."""


@dataclass(frozen=True)
class ArchiveView:
    id: str
    status: str
    created_at: datetime
    ready_at: datetime | None
    expires_at: datetime | None
    downloaded_at: datetime | None
    size_bytes: int | None
    sha256: str | None


# ------------------------------------------------------------------------------ archives


async def request_archive(
    conn: AsyncConnection, account_id: str, actor: ExportActor, now: datetime
) -> ArchiveView:
    """A pending archive for the account: the one already pending, else a new one with its
    job (and an open data-subject request), in the caller's transaction."""
    pending = (
        await conn.execute(
            select(ExportArchive).where(
                ExportArchive.account_id == account_id, ExportArchive.status == PENDING
            )
        )
    ).first()
    if pending is not None:
        return _view(pending._mapping)
    archive_id = new_id()
    await conn.execute(
        insert(ExportArchive).values(
            id=archive_id, account_id=account_id, status=PENDING, created_at=now
        )
    )
    opened = await dsr.open_request(
        conn, account_id=account_id, type="export", channel=actor.channel, received_at=now
    )
    payload = {
        "archive_id": archive_id,
        "request": opened.id,
        "actor_type": actor.actor_type,
        "actor_id": actor.actor_id,
        "request_id": actor.request_id,
    }
    await jobs.enqueue(conn, JOB_KIND, account_id=account_id, payload=payload, now=now)
    return await _get(conn, account_id, archive_id)


async def open_archives(
    conn: AsyncConnection, account_id: str, now: datetime, *, limit: int = 5
) -> list[ArchiveView]:
    """The account's archives still pending or downloadable, newest first."""
    rows = (
        await conn.execute(
            select(ExportArchive)
            .where(
                ExportArchive.account_id == account_id,
                or_(
                    ExportArchive.status == PENDING,
                    and_(ExportArchive.status == READY, ExportArchive.expires_at > now),
                ),
            )
            .order_by(ExportArchive.created_at.desc())
            .limit(limit)
        )
    ).all()
    return [_view(row._mapping) for row in rows]


async def get_archive(conn: AsyncConnection, account_id: str, archive_id: str) -> ArchiveView:
    return await _get(conn, account_id, archive_id)


async def _get(conn: AsyncConnection, account_id: str, archive_id: str) -> ArchiveView:
    row = (
        await conn.execute(
            select(ExportArchive).where(
                ExportArchive.id == archive_id, ExportArchive.account_id == account_id
            )
        )
    ).first()
    if row is None:
        raise ArchiveNotFound(archive_id)
    return _view(row._mapping)


def _view(a: Any) -> ArchiveView:
    return ArchiveView(
        id=a["id"],
        status=a["status"],
        created_at=a["created_at"],
        ready_at=a["ready_at"],
        expires_at=a["expires_at"],
        downloaded_at=a["downloaded_at"],
        size_bytes=a["size_bytes"],
        sha256=a["sha256"],
    )


async def run_export_job(
    res: Resources, job: jobs.JobRow, facts: PolicyFacts, ttl: timedelta
) -> ArchiveView | None:
    """Build, store and mark ready the job's archive; idempotent (a done one is left alone).
    Returns the archive when this run made it ready."""
    archive_id = str(job.payload["archive_id"])
    async with autocommit(res.engine) as conn:
        row = (
            await conn.execute(select(ExportArchive).where(ExportArchive.id == archive_id))
        ).first()
    if row is None or row.status != PENDING:
        return None
    # The name is fixed before the upload, so a retry overwrites instead of orphaning one.
    storage_key = row.storage_key or f"{EXPORT_PREFIX}{secrets.token_hex(24)}.zip"
    try:
        if row.storage_key is None:
            async with unit_of_work(res.engine) as conn:
                await conn.execute(
                    update(ExportArchive)
                    .where(ExportArchive.id == archive_id)
                    .values(storage_key=storage_key)
                )
        async with build_export(res, row.account_id, facts, job.now) as built:
            data = await asyncio.to_thread(built.path.read_bytes)
        await res.store.put(storage_key, data, "application/zip")
    except Exception:
        if job.last_attempt:
            await _fail(res, archive_id, storage_key)
        raise
    actor = ExportActor(
        actor_type=str(job.payload.get("actor_type") or "user"),
        actor_id=job.payload.get("actor_id"),
        request_id=job.payload.get("request_id"),
    )
    async with unit_of_work(res.engine) as conn:
        marked = await conn.execute(
            update(ExportArchive)
            .where(ExportArchive.id == archive_id, ExportArchive.status == PENDING)
            .values(
                status=READY,
                sha256=built.sha256,
                size_bytes=built.size,
                ready_at=job.now,
                expires_at=job.now + ttl,
            )
        )
        if marked.rowcount == 1:
            request = job.payload.get("request")
            if request:
                with contextlib.suppress(dsr.RequestError):  # closed by an operator meanwhile
                    await dsr.close_request(
                        conn, str(request), handled_by="export job", now=job.now
                    )
            view = await _get(conn, row.account_id, archive_id)
            await record_export(conn, row.account_id, actor)
            return view
        # Erased meanwhile (the row is gone), or made ready by an earlier attempt.
        kept = await conn.scalar(
            select(ExportArchive.storage_key).where(ExportArchive.id == archive_id)
        )
    if kept != storage_key:
        with contextlib.suppress(StorageError):
            await res.store.delete(storage_key)
    return None


async def _fail(res: Resources, archive_id: str, storage_key: str) -> None:
    with contextlib.suppress(StorageError):
        await res.store.delete(storage_key)
    async with unit_of_work(res.engine) as conn:
        await conn.execute(
            update(ExportArchive)
            .where(ExportArchive.id == archive_id, ExportArchive.status == PENDING)
            .values(status=FAILED, storage_key=None)
        )


async def read_archive(
    res: Resources, account_id: str, archive_id: str, now: datetime
) -> tuple[ArchiveView, bytes]:
    """The archive's bytes for its owner, noting the download; raises ArchiveNotFound,
    ArchiveNotReady or ArchiveGone."""
    async with autocommit(res.engine) as conn:
        view = await _get(conn, account_id, archive_id)
        key = await conn.scalar(
            select(ExportArchive.storage_key).where(ExportArchive.id == archive_id)
        )
    if view.status == PENDING:
        raise ArchiveNotReady(archive_id)
    if view.status != READY or view.expires_at is None or view.expires_at <= now or not key:
        raise ArchiveGone(archive_id)
    found = await res.store.get(key)
    if found is None:
        raise ArchiveGone(archive_id)
    async with unit_of_work(res.engine) as conn:
        await conn.execute(
            update(ExportArchive).where(ExportArchive.id == archive_id).values(downloaded_at=now)
        )
    return view, found[0]


async def purge_expired_exports(res: Resources, now: datetime) -> int:
    """Delete the files of archives past `expires_at` (and of failed ones); returns how
    many archives were expired. Safe to run from several workers at once."""
    async with autocommit(res.engine) as conn:
        rows = (
            await conn.execute(
                select(ExportArchive.id, ExportArchive.storage_key, ExportArchive.status).where(
                    or_(
                        and_(ExportArchive.status == READY, ExportArchive.expires_at <= now),
                        and_(
                            ExportArchive.status == FAILED, ExportArchive.storage_key.is_not(None)
                        ),
                    )
                )
            )
        ).all()
    expired = 0
    for row in rows:
        if row.storage_key:
            try:
                await res.store.delete(row.storage_key)
            except StorageError:
                log.warning("could not delete export archive %s; will retry", row.id)
                continue
        async with unit_of_work(res.engine) as conn:
            result = await conn.execute(
                update(ExportArchive)
                .where(ExportArchive.id == row.id, ExportArchive.status == row.status)
                .values(
                    status=EXPIRED if row.status == READY else FAILED,
                    storage_key=None,
                )
            )
            expired += result.rowcount if row.status == READY else 0
    return expired
