"""Data exports (privacy-payments.md DSR-1): the archives built in the background.

A small account's export is built while the person waits (export_build.py); a large one is
an *archive*: a row in `export_archives` plus a job of kind "export" queued in the same
transaction. The job (export_runner.py) builds the ZIP, stores it under an unguessable name
and marks the archive ready until `expires_at`; the retention job then deletes the file.
Each export appends an audit entry ("export"), and one the person asked for is recorded as
a data-subject request, closed when the archive is ready.

Archive states: pending → ready → expired, or pending → failed after the job's last attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import ExportArchive
from image_router.kit.ids import new_id
from image_router.privacy import jobs
from image_router.privacy import requests as dsr
from image_router.privacy.export_build import (
    EXPORTED_FIELDS,
    ExportActor,
    ExportFile,
    record_export,
    record_self_service,
)
from image_router.privacy.export_zip import SCHEMA_VERSION, AccountMissing

__all__ = [
    "EXPORTED_FIELDS",
    "SCHEMA_VERSION",
    "AccountMissing",
    "ArchiveView",
    "ExportActor",
    "ExportFile",
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
