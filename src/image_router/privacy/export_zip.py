"""The ZIP file of a data export (privacy-payments.md DSR-1): what goes in it, and how.

The archive is written to a file, section by section: usage and ledger rows are read in
keyset-paged batches, each in its own short transaction (SQLite has one connection, and a
long export must not stall every request), and streamed into their JSONL members. Stored
outputs are fetched one at a time. Memory use does not grow with the account's history.

Every member is UTF-8 JSON or JSONL except README.txt and the outputs under generated/.
`manifest.json`, written last, lists every other member with its size and SHA-256.
API keys appear by name, prefix and last four characters: never the secret or its hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select

from image_router.account.personal_data import Vault
from image_router.db.session import autocommit
from image_router.db.tables import (
    Account,
    ApiKey,
    Consent,
    DataSubjectRequest,
    Generation,
    GenerationJob,
    IdempotencyKey,
    LedgerEntry,
    Topup,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
    WebSession,
)
from image_router.legal.render import PolicyFacts
from image_router.privacy import audit
from image_router.privacy import export_records as records
from image_router.privacy.export_texts import README, privacy_info
from image_router.storage.base import StorageError, Store

SCHEMA_VERSION = 1
_BATCH = 500


class AccountMissing(LookupError):
    """No account with this id (or it was erased to a tombstone without data)."""


@dataclass
class _Member:
    name: str
    size: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def entry(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "sha256": self.digest.hexdigest()}


class _Archive:
    """A ZipFile that remembers each member's size and SHA-256 for the manifest."""

    def __init__(self, path: Path, now: datetime) -> None:
        self.zip = zipfile.ZipFile(path, "w", allowZip64=True)
        self.date_time = (max(now.year, 1980), now.month, now.day, now.hour, now.minute, now.second)
        self.members: list[_Member] = []

    def open(self, name: str, *, compress: bool = True) -> tuple[IO[bytes], _Member]:
        info = zipfile.ZipInfo(name, date_time=self.date_time)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        member = _Member(name)
        self.members.append(member)
        return self.zip.open(info, "w", force_zip64=True), member

    def write(self, name: str, data: bytes, *, compress: bool = True) -> None:
        stream, member = self.open(name, compress=compress)
        with stream:
            _feed(stream, member, data)

    def write_json(self, name: str, value: object) -> None:
        self.write(name, _json(value, indent=True) + b"\n")

    def close(self) -> None:
        self.zip.close()


def _feed(stream: IO[bytes], member: _Member, data: bytes) -> None:
    stream.write(data)
    member.size += len(data)
    member.digest.update(data)


def _json(value: object, *, indent: bool = False) -> bytes:
    # orjson writes aware datetimes as ISO 8601 with their offset (+00:00 here).
    option = orjson.OPT_INDENT_2 if indent else 0
    return orjson.dumps(value, option=option | orjson.OPT_NON_STR_KEYS)


@dataclass(frozen=True)
class ExportSources:
    """Where an export reads from: the rows, the sealed personal data, the stored outputs."""

    engine: AsyncEngine
    vault: Vault
    store: Store


async def write_export(
    src: ExportSources, account_id: str, path: Path, facts: PolicyFacts, now: datetime
) -> None:
    """Write the whole export of `account_id` to the ZIP file at `path`."""
    archive = _Archive(path, now)
    try:
        async with autocommit(src.engine) as conn:
            dek = await src.vault.key_for(account_id)
            account = (
                await conn.execute(select(Account).where(Account.id == account_id))
            ).one_or_none()
            if account is None:
                raise AccountMissing(account_id)
            keys = (
                await conn.execute(
                    select(*records.KEY_COLUMNS)
                    .where(ApiKey.account_id == account_id)
                    .order_by(ApiKey.created_at, ApiKey.id)
                )
            ).all()
            topups = (
                await conn.execute(
                    select(Topup).where(Topup.account_id == account_id).order_by(Topup.created_at)
                )
            ).all()
            consents = (
                await conn.execute(
                    select(Consent).where(Consent.account_id == account_id).order_by(Consent.id)
                )
            ).all()
            sessions = (
                await conn.execute(
                    select(*records.SESSION_COLUMNS)
                    .where(WebSession.account_id == account_id)
                    .order_by(WebSession.created_at)
                )
            ).all()
            requests = (
                await conn.execute(
                    select(DataSubjectRequest)
                    .where(DataSubjectRequest.account_id == account_id)
                    .order_by(DataSubjectRequest.received_at)
                )
            ).all()
            accesses = await audit.entries(conn, subject=account_id)
            endpoints = (
                await conn.execute(
                    select(*records.WEBHOOK_ENDPOINT_COLUMNS)
                    .where(WebhookEndpoint.account_id == account_id)
                    .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
                )
            ).all()
            request_secret_at = await conn.scalar(
                select(WebhookSecret.created_at).where(WebhookSecret.account_id == account_id)
            )

        def opened(sealed: bytes | None) -> str | None:
            return None if dek is None else src.vault.open_with(dek, account_id, sealed)

        archive.write("README.txt", README.format(schema_version=SCHEMA_VERSION).encode())
        archive.write_json("account.json", records.account(account._mapping, opened))
        archive.write_json("privacy_info.json", privacy_info(facts, SCHEMA_VERSION))
        archive.write_json("api_keys.json", [records.api_key(r._mapping) for r in keys])
        output_names = await _write_usage(src.engine, archive, account_id, opened)
        await _write_ledger(src.engine, archive, account_id)
        archive.write_json(
            "payments.json",
            {
                "stripe_customer_id": account.stripe_customer_id,
                "credits_frozen_by_disputes": account.billing_hold,
                "topups": [records.topup(r._mapping) for r in topups],
            },
        )
        archive.write_json("consents.json", [records.consent(r._mapping) for r in consents])
        archive.write_json("sessions.json", [dict(r._mapping) for r in sessions])
        archive.write_json("privacy_requests.json", [records.request(r._mapping) for r in requests])
        archive.write_json("access_log.json", [records.access(e, account_id) for e in accesses])
        archive.write_json(
            "webhooks.json",
            {
                "endpoints": [records.webhook_endpoint(r._mapping) for r in endpoints],
                # The secret signing deliveries to a request's own `webhook_url`.
                "request_secret": {
                    "exists": request_secret_at is not None,
                    "created_at": request_secret_at,
                    "secret": records.SECRET_NOT_EXPORTED,
                },
            },
        )
        await _write_rows(
            src.engine,
            archive,
            "webhook_deliveries.jsonl",
            records.WEBHOOK_DELIVERY_COLUMNS,
            WebhookDelivery.account_id == account_id,
            (WebhookDelivery.created_at, WebhookDelivery.id),
            records.webhook_delivery,
        )
        await _write_rows(
            src.engine,
            archive,
            "jobs.jsonl",
            records.JOB_COLUMNS,
            GenerationJob.account_id == account_id,
            (GenerationJob.created_at, GenerationJob.id),
            records.job,
        )
        await _write_rows(
            src.engine,
            archive,
            "idempotency_keys.jsonl",
            records.IDEMPOTENCY_COLUMNS,
            IdempotencyKey.account_id == account_id,
            (IdempotencyKey.created_at, IdempotencyKey.key_hash),
            records.idempotency_key,
        )
        generated = await _write_outputs(src.store, archive, output_names)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "generated_at": now,
            "account_id": account_id,
            "generated_outputs": generated,
            "files": [m.entry() for m in archive.members],
        }
        archive.write_json("manifest.json", manifest)
    finally:
        archive.close()


async def _pages(engine: AsyncEngine, query: Select[Any], after: Any) -> AsyncIterator[Any]:
    """Rows of `query` in batches; `after(last_row)` narrows it to the rows after one."""
    page = query.limit(_BATCH)
    while True:
        async with autocommit(engine) as conn:
            rows = (await conn.execute(page)).all()
        for row in rows:
            yield row
        if len(rows) < _BATCH:
            return
        page = query.where(after(rows[-1])).limit(_BATCH)


async def _write_usage(
    engine: AsyncEngine, archive: _Archive, account_id: str, opened: Any
) -> list[str]:
    query = (
        select(Generation)
        .where(Generation.account_id == account_id)
        .order_by(Generation.created_at, Generation.id)
    )

    def after(r: Any) -> Any:
        return or_(
            Generation.created_at > r.created_at,
            and_(Generation.created_at == r.created_at, Generation.id > r.id),
        )

    names: list[str] = []
    stream, member = archive.open("usage.jsonl")
    with stream:
        async for row in _pages(engine, query, after):
            g = row._mapping
            names.extend(g["output_keys"] or [])
            _feed(stream, member, _json(records.usage(g, opened)) + b"\n")
    return names


async def _write_ledger(engine: AsyncEngine, archive: _Archive, account_id: str) -> None:
    query = select(LedgerEntry).where(LedgerEntry.account_id == account_id).order_by(LedgerEntry.id)
    stream, member = archive.open("credit_ledger.jsonl")
    with stream:
        async for row in _pages(engine, query, lambda r: LedgerEntry.id > r.id):
            _feed(stream, member, _json(records.ledger(row._mapping)) + b"\n")


async def _write_rows(
    engine: AsyncEngine,
    archive: _Archive,
    name: str,
    columns: Sequence[Any],
    where: ColumnElement[bool],
    order: tuple[Any, Any],
    record: Callable[[Any], dict[str, object]],
) -> None:
    """One JSONL member: the rows of `columns` matching `where`, keyset-paged on `order`
    (a time, then a unique key that breaks ties), one `record` per line."""
    first, tie = order
    query = select(*columns).where(where).order_by(first, tie)

    def after(r: Any) -> Any:
        last_first, last_tie = r._mapping[first.key], r._mapping[tie.key]
        return or_(first > last_first, and_(first == last_first, tie > last_tie))

    stream, member = archive.open(name)
    with stream:
        async for row in _pages(engine, query, after):
            _feed(stream, member, _json(record(row._mapping)) + b"\n")


async def _write_outputs(store: Store, archive: _Archive, names: Iterable[str]) -> int:
    """Copy each output still in storage into generated/; gone ones are skipped."""
    written = 0
    for name in dict.fromkeys(names):  # once each, in order
        try:
            found = await store.get(name)
        except StorageError:
            found = None
        if found is None:
            continue
        # Images and videos are compressed already; storing saves the CPU time.
        await asyncio.to_thread(archive.write, f"generated/{name}", found[0], compress=False)
        written += 1
    return written
