"""The export runner (DSR-1): builds exports with exactly the collaborators they need.

Built once in resources.py: the database, the vault (to open the sealed personal data), the
store (outputs in, archives out), the mailer (the "your export is ready" e-mail), this
deployment's policy facts (privacy_info.json) and an `ExportPolicy`. The endpoints, the
`export` job (`run`), the operator's `users export` and the retention purge all go through
it, so every route produces the same file and the same trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account import service as accounts
from image_router.account.mailer import Mailer, MailError
from image_router.account.personal_data import Vault
from image_router.db.session import autocommit, unit_of_work
from image_router.db.tables import ExportArchive
from image_router.legal.render import PolicyFacts
from image_router.privacy import jobs
from image_router.privacy import requests as dsr
from image_router.privacy.export import (
    EXPIRED,
    EXPORT_PREFIX,
    FAILED,
    PENDING,
    READY,
    ArchiveGone,
    ArchiveNotReady,
    ArchiveView,
    get_archive,
)
from image_router.privacy.export_build import (
    ExportActor,
    ExportFile,
    build_export,
    build_export_file,
    estimate_bytes,
    record_export,
)
from image_router.privacy.export_zip import ExportSources
from image_router.storage.base import StorageError, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportPolicy:
    """The settings of exports."""

    ttl: timedelta  # EXPORT_TTL_HOURS: how long a ready archive can be downloaded
    sync_max_bytes: int  # EXPORT_SYNC_MAX_MB: a larger export becomes an archive
    link_base: str  # the site's address, for the download link in the e-mail


@dataclass(frozen=True)
class ExportRunner:
    engine: AsyncEngine
    store: Store
    vault: Vault
    mailer: Mailer
    facts: PolicyFacts
    policy: ExportPolicy

    @property
    def _sources(self) -> ExportSources:
        return ExportSources(self.engine, self.vault, self.store)

    async def too_large_to_wait_for(self, account_id: str, now: datetime) -> bool:
        """Whether the account's export should be an archive rather than built now."""
        return await estimate_bytes(self.engine, account_id, now) > self.policy.sync_max_bytes

    async def build_file(self, account_id: str, now: datetime) -> ExportFile:
        """The account's export in a new temporary file, which the caller must delete."""
        return await build_export_file(self._sources, account_id, self.facts, now)

    @asynccontextmanager
    async def build(self, account_id: str, now: datetime) -> AsyncIterator[ExportFile]:
        """`build_file` whose file is deleted when the block ends."""
        async with build_export(self._sources, account_id, self.facts, now) as built:
            yield built

    async def run(self, job: jobs.JobRow) -> None:
        """The "export" job: build the archive, then e-mail its link to the account."""
        view = await self.build_archive(job)
        if view is None or job.account_id is None:
            return
        async with autocommit(self.engine) as conn:
            account = await accounts.get_account(conn, self.vault, job.account_id)
        if account is None or not account.email:
            return
        link = f"{self.policy.link_base}/v1/account/exports/{view.id}/download"
        body = (
            "The export of your data you asked for is ready:\n\n"
            f"{link}\n\n"
            f"Sign in first; the link works until {view.expires_at:%Y-%m-%d %H:%M} UTC.\n"
            "If you did not ask for it, change your password and contact us.\n"
        )
        try:
            await self.mailer.send(account.email, "Your data export is ready", body)
        except MailError:
            # The archive is ready either way; the status endpoint and the site still show it.
            log.warning("could not e-mail the export link of archive %s", view.id)

    async def build_archive(self, job: jobs.JobRow) -> ArchiveView | None:
        """Build, store and mark ready the job's archive; idempotent (a done one is left
        alone). Returns the archive when this run made it ready."""
        archive_id = str(job.payload["archive_id"])
        async with autocommit(self.engine) as conn:
            row = (
                await conn.execute(select(ExportArchive).where(ExportArchive.id == archive_id))
            ).first()
        if row is None or row.status != PENDING:
            return None
        # The name is fixed before the upload, so a retry overwrites instead of orphaning one.
        storage_key = row.storage_key or f"{EXPORT_PREFIX}{secrets.token_hex(24)}.zip"
        try:
            if row.storage_key is None:
                async with unit_of_work(self.engine) as conn:
                    await conn.execute(
                        update(ExportArchive)
                        .where(ExportArchive.id == archive_id)
                        .values(storage_key=storage_key)
                    )
            async with self.build(row.account_id, job.now) as built:
                data = await asyncio.to_thread(built.path.read_bytes)
            await self.store.put(storage_key, data, "application/zip")
        except Exception:
            if job.last_attempt:
                await self._fail(archive_id, storage_key)
            raise
        actor = ExportActor(
            actor_type=str(job.payload.get("actor_type") or "user"),
            actor_id=job.payload.get("actor_id"),
            request_id=job.payload.get("request_id"),
        )
        async with unit_of_work(self.engine) as conn:
            marked = await conn.execute(
                update(ExportArchive)
                .where(ExportArchive.id == archive_id, ExportArchive.status == PENDING)
                .values(
                    status=READY,
                    sha256=built.sha256,
                    size_bytes=built.size,
                    ready_at=job.now,
                    expires_at=job.now + self.policy.ttl,
                )
            )
            if marked.rowcount == 1:
                request = job.payload.get("request")
                if request:
                    with contextlib.suppress(dsr.RequestError):  # closed by an operator meanwhile
                        await dsr.close_request(
                            conn, str(request), handled_by="export job", now=job.now
                        )
                view = await get_archive(conn, row.account_id, archive_id)
                await record_export(conn, row.account_id, actor)
                return view
            # Erased meanwhile (the row is gone), or made ready by an earlier attempt.
            kept = await conn.scalar(
                select(ExportArchive.storage_key).where(ExportArchive.id == archive_id)
            )
        if kept != storage_key:
            with contextlib.suppress(StorageError):
                await self.store.delete(storage_key)
        return None

    async def _fail(self, archive_id: str, storage_key: str) -> None:
        with contextlib.suppress(StorageError):
            await self.store.delete(storage_key)
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(ExportArchive)
                .where(ExportArchive.id == archive_id, ExportArchive.status == PENDING)
                .values(status=FAILED, storage_key=None)
            )

    async def read_archive(
        self, account_id: str, archive_id: str, now: datetime
    ) -> tuple[ArchiveView, bytes]:
        """The archive's bytes for its owner, noting the download; raises ArchiveNotFound,
        ArchiveNotReady or ArchiveGone."""
        async with autocommit(self.engine) as conn:
            view = await get_archive(conn, account_id, archive_id)
            key = await conn.scalar(
                select(ExportArchive.storage_key).where(ExportArchive.id == archive_id)
            )
        if view.status == PENDING:
            raise ArchiveNotReady(archive_id)
        if view.status != READY or view.expires_at is None or view.expires_at <= now or not key:
            raise ArchiveGone(archive_id)
        found = await self.store.get(key)
        if found is None:
            raise ArchiveGone(archive_id)
        async with unit_of_work(self.engine) as conn:
            await conn.execute(
                update(ExportArchive)
                .where(ExportArchive.id == archive_id)
                .values(downloaded_at=now)
            )
        return view, found[0]

    async def purge_expired(self, now: datetime) -> int:
        """Delete the files of archives past `expires_at` (and of failed ones); returns how
        many archives were expired. Safe to run from several workers at once."""
        async with autocommit(self.engine) as conn:
            rows = (
                await conn.execute(
                    select(ExportArchive.id, ExportArchive.storage_key, ExportArchive.status).where(
                        or_(
                            and_(ExportArchive.status == READY, ExportArchive.expires_at <= now),
                            and_(
                                ExportArchive.status == FAILED,
                                ExportArchive.storage_key.is_not(None),
                            ),
                        )
                    )
                )
            ).all()
        expired = 0
        for row in rows:
            if row.storage_key:
                try:
                    await self.store.delete(row.storage_key)
                except StorageError:
                    log.warning("could not delete export archive %s; will retry", row.id)
                    continue
            async with unit_of_work(self.engine) as conn:
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
