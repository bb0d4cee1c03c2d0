"""Erasing an account (privacy-payments.md DSR-2, STR-8, SVX-5).

`queue_erasure` runs in the transaction of the request (`DELETE /v1/account`, Clerk's
`user.deleted`, `image-router users delete`): API keys and sessions stop working at once,
the account is `deletion_pending` (signing in fails), the request is recorded with its legal
due date (one month), and an `erasure` job is queued. Asking again changes nothing.

The job (`ErasureRunner.run`, built in resources.py with exactly what it needs) then, in
this order:

1. waits for the account's running generations (a late settle would write outputs and
   credits back);
2. expires open Stripe Checkout Sessions and deletes the Stripe Customer (STR-8), and
   deletes the Clerk user when asked to;
3. deletes the stored outputs and export archives (the files);
4. in ONE transaction: deletes sessions, password resets, API keys, export rows, webhook
   endpoints, secrets and deliveries, idempotency keys, job rows (`DELETED_TABLES`) and the
   consents (all but the newest terms acceptance, kept as proof of the contract under which
   the kept rows arose); nulls every content column of the usage rows; destroys the data
   key (crypto-shredding: everything sealed for the account, in the database and in its
   backups, stops opening); turns the account into a tombstone (no e-mail, name, image,
   password, subject, customer id; only `auth_subject_hmac`, so a late Clerk webhook
   cannot bring it back); forfeits the remaining balance with one ledger entry; completes
   the request and appends an audit entry.

Kept for accounting, under the tombstone's id: ledger entries, top-ups (ids and amounts),
and the usage rows' metadata (time, model, size, status, cost). Every step is safe to
repeat, so a job that crashed anywhere is simply run again: outside calls treat "already
gone" as done, files are deleted before the rows naming them, and step 4 is atomic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.account.clerk import ClerkBackend
from image_router.account.personal_data import Vault
from image_router.account.sessions import revoke_account_sessions
from image_router.db.session import unit_of_work
from image_router.db.tables import (
    Account,
    ApiKey,
    Consent,
    DataSubjectRequest,
    ExportArchive,
    Generation,
    GenerationJob,
    IdempotencyKey,
    Job,
    PasswordReset,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
    WebSession,
)
from image_router.generation.recovery import release_expired_holds
from image_router.kit.clock import utcnow
from image_router.ledger import service as ledger
from image_router.payment.customers import forget_customer
from image_router.payment.stripe_api import StripeGateway
from image_router.privacy import audit, content, jobs
from image_router.privacy import requests as dsr
from image_router.storage.base import Store

log = logging.getLogger(__name__)

JOB_KIND = "erasure"
PENDING, DELETED = "deletion_pending", "deleted"
#: The personal data an erasure removes, as the audit entry names it.
ERASED_FIELDS = (
    "email",
    "name",
    "image_url",
    "password",
    "auth_subject",
    "stripe_customer",
    "prompts",
    "outputs",
    "ip",
    "api_keys",
    "sessions",
    "consents",
    "exports",
    "webhooks",
    "jobs",
    "idempotency_keys",
    "data_key",
)


#: The tables whose rows of the account an erasure deletes outright, in this order.
#: Webhooks: deliveries (their payloads name outputs) before the endpoints they point at;
#: their pending deliveries are never sent (the sender finds no row). Idempotency keys:
#: their stored answers (sealed; a new API key's secret, a prompt) and fingerprints.
#: Job rows: their stored answers, errors, specs (a request's `webhook_url`) and vendor
#: references; the usage row, kept pseudonymous as accounting, stays the record of the
#: generation, and with no job row left the resumer has nothing of the account to take up.
DELETED_TABLES = (
    WebSession,
    PasswordReset,
    ApiKey,
    ExportArchive,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
    IdempotencyKey,
    GenerationJob,
)


class ErasureError(LookupError):
    """No such account to erase."""


async def queue_erasure(
    conn: AsyncConnection,
    vault: Vault,
    account_id: str,
    *,
    channel: str,
    delete_clerk_user: bool,
    requested_by: str | None = None,
    reason: str | None = None,
) -> datetime:
    """Stop the account now and queue its erasure; returns the legal due date.

    In the caller's transaction. An account already pending or deleted keeps its request
    and its due date: nothing is queued twice. `requested_by` names an operator acting on
    the person's behalf; `reason` (no personal data) goes to the audit entry.
    """
    now = utcnow()
    started = await conn.execute(
        update(Account)
        .where(Account.id == account_id, Account.status.not_in((PENDING, DELETED)))
        .values(status=PENDING, deletion_requested_at=now)
    )
    if started.rowcount != 1:
        return await _existing_due_date(conn, account_id)
    await conn.execute(
        update(ApiKey)
        .where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
        .values(is_active=False, revoked_at=now)
    )
    await revoke_account_sessions(conn, account_id)
    await _cancel_other_jobs(conn, account_id, now)
    request = await dsr.open_request(
        conn,
        account_id=account_id,
        type="erasure",
        channel=channel,
        received_at=now,
        handled_by=requested_by,
    )
    payload: dict[str, Any] = {
        "request_id": request.id,
        "channel": channel,
        "delete_clerk_user": delete_clerk_user,
        "requested_by": requested_by,
        "reason": (reason or "").strip() or None,
    }
    await jobs.enqueue(conn, JOB_KIND, account_id=account_id, payload=payload, now=now)
    return request.due_at


async def _cancel_other_jobs(conn: AsyncConnection, account_id: str, now: datetime) -> None:
    """Work queued for the account (an export...) would only produce more personal data."""
    await conn.execute(
        update(Job)
        .where(Job.account_id == account_id, Job.kind != JOB_KIND, Job.status == jobs.QUEUED)
        .values(status=jobs.FAILED, finished_at=now, error="cancelled: the account is erased")
    )


async def _existing_due_date(conn: AsyncConnection, account_id: str) -> datetime:
    row = (
        await conn.execute(
            select(Account.status, Account.deletion_requested_at, Account.deleted_at).where(
                Account.id == account_id
            )
        )
    ).first()
    if row is None:
        raise ErasureError(f"no account with id {account_id}")
    due: datetime | None = await conn.scalar(
        select(DataSubjectRequest.due_at)
        .where(DataSubjectRequest.account_id == account_id, DataSubjectRequest.type == "erasure")
        .order_by(DataSubjectRequest.received_at.desc())
        .limit(1)
    )
    if due is not None:
        return due
    # A bare tombstone (a Clerk user deleted before we ever saw it) has no request.
    return dsr.due_date(row.deletion_requested_at or row.deleted_at or utcnow())


# ------------------------------------------------------------------------------- the job


@dataclass(frozen=True)
class _Target:
    status: str
    auth_provider: str
    auth_subject: str | None
    stripe_customer_id: str | None


@dataclass(frozen=True)
class ErasureRunner:
    """Runs erasures: the `erasure` job (`run`) and the operator's `erase_now`."""

    engine: AsyncEngine
    store: Store
    vault: Vault
    stripe: StripeGateway | None  # None: payments are off (PAYMENTS_PROVIDER=none)
    clerk: ClerkBackend | None  # None: no Clerk Backend API (no CLERK_SECRET_KEY)
    hold_grace: timedelta  # HOLD_GRACE_S: how long past its deadline a hold may run

    async def run(self, job: jobs.JobRow) -> None:
        """The `erasure` job: erase one account completely (see the module docstring)."""
        await self._erase(job)

    async def _erase(self, job: jobs.JobRow) -> bool:
        """True when the account is erased; False when a later run was queued instead."""
        account_id = job.account_id
        if account_id is None:
            raise ErasureError("an erasure job needs an account id")
        target = await self._target(account_id)
        if target is None or target.status == DELETED:
            return True  # done by an earlier run (or never existed): nothing left to do
        if target.status != PENDING:
            raise ErasureError(f"account {account_id} is {target.status}, not {PENDING}")
        if await self._defer_while_generating(job, account_id):
            return False
        notes = [*await self._forget_at_stripe(account_id, target)]
        notes += await self._forget_at_clerk(job, target)
        await self._delete_files(account_id)
        async with unit_of_work(self.engine) as conn:
            await erase_rows(conn, self.vault, account_id, job.payload, notes, now=job.now)
        log.info("account %s erased (job %s)", account_id, job.id)
        return True

    async def erase_now(self, account_id: str) -> bool:
        """Run the account's queued erasure in this process, now (`users delete --now`).

        The queued job is marked done afterwards; had a worker claimed it meanwhile, its run
        finds the account already erased and does nothing. False when a generation of the
        account is still running: a later run is queued for when it has finished.
        """
        async with unit_of_work(self.engine) as conn:
            queued = (
                await conn.execute(
                    select(Job.id, Job.payload)
                    .where(Job.account_id == account_id, Job.kind == JOB_KIND)
                    .order_by(Job.created_at.desc())
                    .limit(1)
                )
            ).first()
        now = utcnow()
        job = jobs.JobRow(
            id=queued.id if queued else "erase-now",
            kind=JOB_KIND,
            account_id=account_id,
            payload=dict(queued.payload or {}) if queued else {},
            attempts=1,
            max_attempts=1,
            now=now,
        )
        erased = await self._erase(job)
        if queued is not None:
            async with unit_of_work(self.engine) as conn:
                await conn.execute(
                    update(Job)
                    .where(Job.id == queued.id, Job.status == jobs.QUEUED)
                    .values(status=jobs.DONE, finished_at=now)
                )
        return erased

    async def _target(self, account_id: str) -> _Target | None:
        async with unit_of_work(self.engine) as conn:
            row = (
                await conn.execute(
                    select(
                        Account.status,
                        Account.auth_provider,
                        Account.auth_subject,
                        Account.stripe_customer_id,
                    ).where(Account.id == account_id)
                )
            ).first()
        if row is None:
            return None
        return _Target(row.status, row.auth_provider, row.auth_subject, row.stripe_customer_id)

    async def _defer_while_generating(self, job: jobs.JobRow, account_id: str) -> bool:
        """Queue a later run when a generation of the account is still running.

        Its settle would store outputs and give held credits back after the erasure. Holds
        past their deadline are released here (as the reconciler would) rather than waited for.
        """
        grace = self.hold_grace
        await release_expired_holds(self.engine, grace=grace)
        async with unit_of_work(self.engine) as conn:
            latest = await conn.scalar(
                select(func.max(Generation.deadline_at)).where(
                    Generation.account_id == account_id, Generation.status == "processing"
                )
            )
            if latest is None:
                return False
            run_after = max(latest + grace, job.now) + timedelta(seconds=1)
            await jobs.enqueue(
                conn, JOB_KIND, account_id=account_id, payload=job.payload, run_after=run_after
            )
        log.info("erasure of %s waits for running generations until %s", account_id, run_after)
        return True

    async def _forget_at_stripe(self, account_id: str, target: _Target) -> list[str]:
        if self.stripe is None:
            if target.stripe_customer_id:
                log.warning(
                    "account %s has Stripe customer %s but payments are off: delete it at Stripe",
                    account_id,
                    target.stripe_customer_id,
                )
                return [
                    f"Stripe customer {target.stripe_customer_id} not deleted (payments are "
                    "off): delete it in the Stripe dashboard"
                ]
            return []
        done = await forget_customer(self.engine, self.stripe, account_id)
        notes = [f"expired {len(done.expired_sessions)} open checkout session(s)"]
        if done.customer_id:
            notes.append(
                f"Stripe customer {'deleted' if done.customer_deleted else 'already gone'}"
            )
        return notes

    async def _forget_at_clerk(self, job: jobs.JobRow, target: _Target) -> list[str]:
        wanted = bool(job.payload.get("delete_clerk_user"))
        if not wanted or target.auth_provider != "clerk" or not target.auth_subject:
            return []
        if self.clerk is None:
            log.warning(
                "erasure: cannot delete Clerk user (no CLERK_SECRET_KEY): delete it at Clerk"
            )
            return [f"Clerk user {target.auth_subject} not deleted (no CLERK_SECRET_KEY)"]
        deleted = await self.clerk.delete_user(target.auth_subject)
        return ["Clerk user deleted" if deleted else "Clerk user already gone"]

    async def _delete_files(self, account_id: str) -> None:
        """Delete stored outputs and export archives, before the rows that name them go."""
        last = ""
        while True:
            async with unit_of_work(self.engine) as conn:
                rows = (
                    await conn.execute(
                        select(Generation.id, Generation.output_keys)
                        .where(Generation.account_id == account_id, Generation.id > last)
                        .order_by(Generation.id)
                        .limit(500)
                    )
                ).all()
            for row in rows:
                await content.delete_files(self.store, row.output_keys)
            if len(rows) < 500:
                break
            last = rows[-1].id
        async with unit_of_work(self.engine) as conn:
            archives = (
                await conn.scalars(
                    select(ExportArchive.storage_key).where(
                        ExportArchive.account_id == account_id,
                        ExportArchive.storage_key.is_not(None),
                    )
                )
            ).all()
        await content.delete_files(self.store, [key for key in archives if key])


async def erase_rows(
    conn: AsyncConnection,
    vault: Vault,
    account_id: str,
    payload: dict[str, Any],
    notes: list[str],
    *,
    now: datetime | None = None,
) -> None:
    """Step 4 of the job: the database part, atomic in the caller's transaction."""
    now = now or utcnow()
    # The row lock makes a second, concurrent run wait here and then find nothing to do.
    status = await conn.scalar(
        select(Account.status).where(Account.id == account_id).with_for_update()
    )
    if status != PENDING:
        return
    for table in DELETED_TABLES:
        await conn.execute(delete(table).where(table.account_id == account_id))
    await _keep_terms_proof_only(conn, account_id)
    await content.clear_rows_of_account(conn, account_id)
    await vault.destroy(account_id)
    subject = await conn.scalar(select(Account.auth_subject).where(Account.id == account_id))
    await conn.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(
            email_enc=None,
            email_bidx=None,
            name_enc=None,
            image_url_enc=None,
            password_hash=None,
            auth_subject=None,
            auth_subject_hmac=func.coalesce(
                Account.auth_subject_hmac, vault.subject_index(subject) if subject else None
            ),
            stripe_customer_id=None,
            restricted_reason_enc=None,
            marketing_emails=False,
            store_prompts=False,
            status=DELETED,
            deleted_at=now,
        )
    )
    forfeited = await ledger.forfeit_once(
        conn, account_id, reason="account erased: the remaining balance is forfeited"
    )
    await _cancel_other_jobs(conn, account_id, now)
    if forfeited:
        notes.append(f"forfeited {forfeited} credits")
    await _complete_requests(conn, account_id, payload, notes, now)
    await audit.record(
        conn,
        actor_type="operator" if payload.get("requested_by") else "system",
        actor_id=payload.get("requested_by") or "erasure",
        subject_account_id=account_id,
        action="erasure",
        fields=ERASED_FIELDS,
        reason=payload.get("reason") or f"requested via {payload.get('channel') or 'unknown'}",
        now=now,
    )


async def _keep_terms_proof_only(conn: AsyncConnection, account_id: str) -> None:
    proof = await conn.scalar(
        select(Consent.id)
        .where(
            Consent.account_id == account_id,
            Consent.purpose == "terms",
            Consent.granted.is_(True),
        )
        .order_by(Consent.id.desc())
        .limit(1)
    )
    condition = Consent.account_id == account_id
    if proof is not None:
        condition = and_(condition, Consent.id != proof)
    await conn.execute(delete(Consent).where(condition))


async def _complete_requests(
    conn: AsyncConnection, account_id: str, payload: dict[str, Any], notes: list[str], now: datetime
) -> None:
    note = "; ".join(notes) or None
    handled_by = payload.get("requested_by") or "erasure job"
    open_ids = (
        await conn.scalars(
            select(DataSubjectRequest.id).where(
                DataSubjectRequest.account_id == account_id,
                DataSubjectRequest.type == "erasure",
                DataSubjectRequest.status == dsr.OPEN,
            )
        )
    ).all()
    if not open_ids:  # queued without a request row (an older job, a manual enqueue)
        open_ids = [
            (
                await dsr.open_request(
                    conn,
                    account_id=account_id,
                    type="erasure",
                    channel=payload.get("channel") or "cli",
                    received_at=now,
                )
            ).id
        ]
    for request_id in open_ids:
        await dsr.close_request(conn, request_id, handled_by=handled_by, now=now, note=note)
