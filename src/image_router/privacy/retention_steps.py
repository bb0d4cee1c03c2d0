"""The retention purge's categories: which rows are due, and one batch of purging them.

`privacy/retention.py` runs these (RET-1). A batch is one short transaction that claims at
most `limit` rows no other worker is purging (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite:
the database's writer lock, taken first) and changes them with its conditions repeated, so
a row another worker purged meanwhile no longer matches. Each batch function returns how
many rows it claimed; a short batch means the category is done. Counts go into a `Tally`.

Rows of accounts under a legal hold (`processing_restricted`, DSR-4) are never due.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
    delete,
    exists,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.db.session import unit_of_work
from image_router.db.tables import (
    Account,
    AuditEntry,
    Consent,
    ExportArchive,
    Generation,
    GenerationJob,
    IdempotencyKey,
    LedgerEntry,
    PasswordReset,
    StripeEvent,
    Topup,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
    WebhookSecret,
    WebSession,
)
from image_router.privacy import audit
from image_router.storage.base import Store

Tally = Counter[str]  # PurgeReport field name -> rows (or files) purged

# `jobs/views.py` ACTIVE_STATES and `webhooks/endpoints.py` PENDING (layers above this one):
# a job row in these states may still be resumed, a pending delivery may still be sent.
JOB_ACTIVE_STATES = ("queued", "running")
DELIVERY_PENDING = "pending"


@dataclass(frozen=True)
class Rows:
    """A plain category: which rows are due, and what happens to them."""

    count: str  # the PurgeReport field
    key: Any  # the primary key column the batch claims rows by
    due: tuple[ColumnElement[bool], ...]
    change: dict[str, Any] | None = None  # None: delete the rows; else set these columns


def row_categories(
    now: datetime,
    *,
    security: datetime,
    usage_meta: datetime,
    webhook_ids: datetime,
    consent_proof: datetime,
    webhook_log: datetime,
) -> list[Rows]:
    """The categories that are plain rows, given the cutoffs (rows older than a cutoff are
    due; prompts and password resets are due at their own expiry)."""
    ended_accounts = select(Account.id).where(
        Account.status == "deleted",
        Account.deleted_at < consent_proof,
        Account.processing_restricted == false(),
    )
    # Closed accounts: an erasure deletes their webhook rows itself; this catches a tombstone
    # made some other way (and any row written after the erasure), so "until the account is
    # closed" holds whatever happened.
    closed_accounts = select(Account.id).where(
        Account.status == "deleted", Account.processing_restricted == false()
    )
    return [
        Rows(
            "prompts",
            Generation.id,
            (
                Generation.content_expires_at <= now,
                Generation.content_deleted_at.is_(None),
                not_held(Generation.account_id),
            ),
            {"prompt_enc": None, "content_deleted_at": now},
        ),
        Rows(
            "client_ips",
            Generation.id,
            (
                Generation.created_at < security,
                Generation.ip.is_not(None),
                not_held(Generation.account_id),
            ),
            {"ip": None},
        ),
        Rows(
            "web_sessions",
            WebSession.id,
            (
                or_(WebSession.expires_at < security, WebSession.revoked_at < security),
                not_held(WebSession.account_id),
            ),
        ),
        Rows(
            "password_resets",
            PasswordReset.token_hash,
            (PasswordReset.expires_at <= now, not_held(PasswordReset.account_id)),
        ),
        Rows(
            "usage_rows",
            Generation.id,
            (
                Generation.created_at < usage_meta,
                # `processing` rows still hold credits; the hold reconciler settles them.
                Generation.status.in_(("success", "error")),
                Generation.outputs_expire_at.is_(None),  # its files are already gone
                not_held(Generation.account_id),
            ),
        ),
        Rows(
            "idempotency_keys",
            IdempotencyKey.key_hash,  # a hash of account and key: unique on its own
            (
                IdempotencyKey.expires_at <= now,
                # Never a claim whose request may still be at work.
                or_(IdempotencyKey.state == "done", IdempotencyKey.locked_until <= now),
                not_held(IdempotencyKey.account_id),
            ),
        ),
        Rows(
            "webhook_deliveries",
            WebhookDelivery.id,
            (
                or_(
                    and_(
                        WebhookDelivery.created_at < webhook_log,
                        # A pending delivery whose retry window is open (a recent resend of an
                        # old event) may still be sent; one past its window never will be.
                        or_(
                            WebhookDelivery.status != DELIVERY_PENDING,
                            WebhookDelivery.retry_until <= now,
                        ),
                    ),
                    WebhookDelivery.account_id.in_(closed_accounts),
                ),
                # Never a delivery a worker is posting right now (its lease runs).
                or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= now),
                not_held(WebhookDelivery.account_id),
            ),
        ),
        Rows(
            "webhook_endpoints",
            WebhookEndpoint.id,
            (
                WebhookEndpoint.account_id.in_(closed_accounts),
                # Deliveries name their endpoint: they go first (the category above).
                ~exists().where(WebhookDelivery.endpoint_id == WebhookEndpoint.id),
            ),
        ),
        Rows(
            "webhook_secrets",
            WebhookSecret.account_id,
            (WebhookSecret.account_id.in_(closed_accounts),),
        ),
        Rows(
            "job_answers",
            GenerationJob.id,
            (
                # The answer lists the outputs' URLs: it goes with them (RETENTION_OUTPUTS_HOURS).
                GenerationJob.result_expires_at <= now,
                not_held(GenerationJob.account_id),
            ),
            {"result_enc": None, "result_expires_at": None},
        ),
        Rows(
            "generation_jobs",
            GenerationJob.id,
            (
                # A job row lives as long as its usage row (the "usage_rows" category above
                # runs first), never while it may still be resumed.
                ~exists().where(Generation.id == GenerationJob.id),
                GenerationJob.state.not_in(JOB_ACTIVE_STATES),
                not_held(GenerationJob.account_id),
            ),
        ),
        Rows("stripe_events", StripeEvent.event_id, (StripeEvent.received_at < webhook_ids,)),
        Rows(
            "webhook_messages",
            WebhookMessage.message_id,
            (WebhookMessage.received_at < webhook_ids,),
        ),
        Rows(
            "consents",
            Consent.id,
            (
                or_(
                    Consent.account_id.in_(ended_accounts),
                    # Cookie-banner choices of visitors without an account.
                    (Consent.account_id.is_(None) & (Consent.created_at < consent_proof)),
                ),
            ),
        ),
    ]


def not_held(account_id: Any) -> ColumnElement[bool]:
    """The row's account is not under a legal hold (restriction of processing, DSR-4)."""
    return ~exists().where(Account.id == account_id, Account.processing_restricted == true())


async def claim(
    conn: AsyncConnection, key: Any, due: Sequence[ColumnElement[bool]], limit: int
) -> list[Any]:
    """Up to `limit` keys of due rows that no other worker is purging right now."""
    query = select(key).where(*due).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=key.table)
    else:
        await take_writer_lock(conn, key)
    return list((await conn.execute(query)).scalars())


async def take_writer_lock(conn: AsyncConnection, key: Any) -> None:
    # SQLite: a write statement (this one changes no row) takes the database's writer lock
    # until the transaction ends, and a writer reads the newest commit: other purgers wait.
    await conn.execute(update(key.table).where(false()).values({key.name: key}))


async def rows_batch(engine: AsyncEngine, category: Rows, tally: Tally, limit: int) -> int:
    async with unit_of_work(engine) as conn:
        keys = await claim(conn, category.key, category.due, limit)
        if keys:
            # The conditions again: on SQLite a row purged meanwhile no longer matches.
            where = (category.key.in_(keys), *category.due)
            table = category.key.table
            statement = (
                delete(table).where(*where)
                if category.change is None
                else update(table).where(*where).values(category.change)
            )
            tally[category.count] += (await conn.execute(statement)).rowcount
    return len(keys)


def outputs_due(now: datetime) -> tuple[ColumnElement[bool], ...]:
    return (Generation.outputs_expire_at <= now, not_held(Generation.account_id))


async def outputs_batch(
    engine: AsyncEngine, store: Store, now: datetime, tally: Tally, limit: int
) -> int:
    due = outputs_due(now)
    query = select(Generation.id, Generation.output_keys).where(*due).limit(limit)
    if engine.dialect.name == "postgresql":
        # The claimed rows stay locked while their files go: no other worker sees them.
        async with unit_of_work(engine) as conn:
            locked = query.with_for_update(skip_locked=True, of=Generation)
            rows = (await conn.execute(locked)).all()
            await _delete_files(store, rows, tally)
            await _forget_outputs(conn, [row.id for row in rows], due, tally)
    else:
        # SQLite has one writer lock for the whole database; holding it while files are
        # deleted would stall every request. Deleting a missing file is harmless, so:
        # read, delete the files, then clear the rows that still match.
        async with unit_of_work(engine) as conn:
            rows = (await conn.execute(query)).all()
        await _delete_files(store, rows, tally)
        async with unit_of_work(engine) as conn:
            await _forget_outputs(conn, [row.id for row in rows], due, tally)
    return len(rows)


async def _delete_files(store: Store, rows: Sequence[Any], tally: Tally) -> None:
    for row in rows:
        for name in row.output_keys or ():
            await store.delete(name)
            tally["output_files"] += 1


async def _forget_outputs(
    conn: AsyncConnection, ids: list[str], due: Sequence[ColumnElement[bool]], tally: Tally
) -> None:
    if not ids:
        return
    # `outputs_expire_at = NULL` marks the files as deleted; the row itself stays.
    statement = (
        update(Generation)
        .where(Generation.id.in_(ids), *due)
        .values(output_keys=[], output_urls=[], outputs_expire_at=None)
    )
    tally["outputs"] += (await conn.execute(statement)).rowcount


async def _audit_cutoff(conn: AsyncConnection, cutoff: datetime) -> datetime:
    """`cutoff`, or earlier: entries about an account under a legal hold are kept, and
    only a prefix of the chain can go, so the prefix ends before the oldest of them."""
    restricted = select(Account.id).where(Account.processing_restricted == true())
    held_since = await conn.scalar(
        select(func.min(AuditEntry.created_at)).where(AuditEntry.subject_account_id.in_(restricted))
    )
    return cutoff if held_since is None else min(cutoff, held_since)


async def audit_batch(
    engine: AsyncEngine, cutoff: datetime, now: datetime, tally: Tally, limit: int
) -> int:
    async with unit_of_work(engine) as conn:
        if conn.dialect.name != "postgresql":
            await take_writer_lock(conn, AuditEntry.id)  # before reading, as in `claim`
        # purge_before serialises with every appender and keeps the chain verifiable.
        removed = await audit.purge_before(
            conn, await _audit_cutoff(conn, cutoff), batch=limit, now=now
        )
    tally["audit_entries"] += removed
    return removed


def accounting_due(cutoff: datetime) -> tuple[ColumnElement[bool], ...]:
    """Deleted accounts whose every ledger entry and top-up is past the period. The balance
    of a deleted account is 0 after its closing entry, so deleting all of its ledger rows
    at once keeps `balance == sum(ledger)`; an account with a balance is never due."""
    return (
        Account.status == "deleted",
        Account.processing_restricted == false(),
        Account.balance == 0,
        Account.billing_hold == 0,
        or_(
            exists().where(LedgerEntry.account_id == Account.id),
            exists().where(Topup.account_id == Account.id),
        ),
        ~exists().where(LedgerEntry.account_id == Account.id, LedgerEntry.created_at >= cutoff),
        ~exists().where(
            Topup.account_id == Account.id,
            or_(Topup.created_at >= cutoff, Topup.updated_at >= cutoff),
        ),
    )


async def accounting_batch(engine: AsyncEngine, cutoff: datetime, tally: Tally, limit: int) -> int:
    """Up to `limit` accounts (not rows): an account's accounting rows go together."""
    due = accounting_due(cutoff)
    async with unit_of_work(engine) as conn:
        accounts = await claim(conn, Account.id, due, limit)
        if accounts:
            # Only accounts that are still due (another SQLite purger may have been first).
            still_due = select(Account.id).where(Account.id.in_(accounts), *due)
            ledger = delete(LedgerEntry).where(LedgerEntry.account_id.in_(still_due))
            topups = delete(Topup).where(Topup.account_id.in_(still_due))
            tally["ledger_entries"] += (await conn.execute(ledger)).rowcount
            tally["topups"] += (await conn.execute(topups)).rowcount
    return len(accounts)


# ------------------------------------------------------------------------------ dry run
# The same conditions, counted, without claiming or changing anything.


async def count_rows(engine: AsyncEngine, table: Any, due: Sequence[ColumnElement[bool]]) -> int:
    async with unit_of_work(engine) as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(*due)) or 0)


async def count_outputs(engine: AsyncEngine, now: datetime, tally: Tally) -> None:
    async with unit_of_work(engine) as conn:
        result = await conn.execute(select(Generation.output_keys).where(*outputs_due(now)))
        for (names,) in result.all():
            tally["outputs"] += 1
            tally["output_files"] += len(names or ())


async def count_audit(engine: AsyncEngine, cutoff: datetime) -> int:
    """The length of the prefix `audit.purge_before` would delete."""
    async with unit_of_work(engine) as conn:
        cutoff = await _audit_cutoff(conn, cutoff)
        newest = await conn.scalar(select(func.max(AuditEntry.id)))
        if newest is None:
            return 0
        keep_from = await conn.scalar(
            select(func.min(AuditEntry.id)).where(AuditEntry.created_at >= cutoff)
        )
        keep_from = newest if keep_from is None else min(keep_from, newest)
        query = select(func.count()).select_from(AuditEntry).where(AuditEntry.id < keep_from)
        return int(await conn.scalar(query) or 0)


async def count_accounting(engine: AsyncEngine, cutoff: datetime, tally: Tally) -> None:
    due_accounts = select(Account.id).where(*accounting_due(cutoff))
    async with unit_of_work(engine) as conn:
        for table, name in ((LedgerEntry, "ledger_entries"), (Topup, "topups")):
            query = select(func.count()).where(table.account_id.in_(due_accounts))
            tally[name] += int(await conn.scalar(query) or 0)


async def count_exports(engine: AsyncEngine, now: datetime) -> int:
    """Export archives past their expiry that are not yet marked expired."""
    due = (ExportArchive.expires_at <= now, ExportArchive.status != "expired")
    return await count_rows(engine, ExportArchive.__table__, due)
