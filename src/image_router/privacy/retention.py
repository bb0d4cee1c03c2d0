"""Retention (privacy-payments.md §3.4, RET-1): delete what is kept past its period.

`purge` is one pass over every category of the retention schedule; the server runs it
periodically (`Retention.run_periodically`, PURGE_INTERVAL_S; the `Retention` runner is
built in resources.py with the export runner's purge of expired archives) and operators
run it by hand
(`image-router retention purge [--dry-run] [--now ISO]`). Prompts and outputs carry their own
deadline, stamped when they were written (`content_expires_at`, `outputs_expire_at`); the
other categories are measured against the periods of a `RetentionPolicy`.

Every category is worked through in batches of `batch_size` rows, each in its own short
transaction, until a batch comes back short, so a first run over years of rows never holds
a lock for long. Several workers may purge at once and each row is purged once: on
PostgreSQL a batch claims its rows `FOR UPDATE SKIP LOCKED`; on SQLite a batch first takes
the database's single writer lock, and every change repeats its conditions, so a row
another worker already purged no longer matches. The categories and their batches are in
`retention_steps.py`; this module orders them, counts and runs them.

Accounts under a legal hold (`processing_restricted`, DSR-4) are skipped in every category
that belongs to an account: the person may be contesting exactly this deletion.
Only counts are logged and reported, never contents.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db.outage import log_failed_pass
from image_router.kit.clock import utcnow
from image_router.privacy import retention_steps as steps
from image_router.storage.base import Store

log = logging.getLogger(__name__)

FIRST_RUN_AFTER_S = 60.0  # a server restarted more often than hourly still purges
ExportPurger = Callable[[datetime], Awaitable[int]]


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each category is kept (prompts and outputs carry their own deadlines)."""

    security_log_days: int = 30  # client IPs on usage rows, ended web sessions
    usage_meta_days: int = 730  # usage rows (metadata only by then)
    webhook_ids_days: int = 90  # Stripe event ids, Clerk/Svix message ids
    audit_days: int = 730
    consent_proof_days: int = 1095  # after the account was deleted
    accounting_years: int = 10  # ledger and top-ups of deleted accounts
    webhook_log_days: int = 30  # outgoing webhook deliveries (WEBHOOK_LOG_DAYS)
    batch_size: int = 500


COUNTS = (
    "prompts",  # usage rows whose prompt was erased
    "outputs",  # usage rows whose output files were deleted
    "output_files",
    "client_ips",  # usage rows whose client IP was erased
    "web_sessions",
    "password_resets",
    "usage_rows",
    "idempotency_keys",
    "webhook_deliveries",
    "webhook_endpoints",  # of closed accounts (an erasure deletes them itself)
    "webhook_secrets",  # likewise
    "job_answers",  # generation_jobs rows whose stored answer expired with the outputs
    "generation_jobs",  # job rows whose usage row is gone
    "stripe_events",
    "webhook_messages",
    "audit_entries",
    "consents",
    "export_archives",
    "ledger_entries",
    "topups",
)


@dataclass
class PurgeReport:
    """How many of each were purged (or, for a dry run, would be)."""

    now: datetime
    dry_run: bool = False
    prompts: int = 0
    outputs: int = 0
    output_files: int = 0
    client_ips: int = 0
    web_sessions: int = 0
    password_resets: int = 0
    usage_rows: int = 0
    idempotency_keys: int = 0
    webhook_deliveries: int = 0
    webhook_endpoints: int = 0
    webhook_secrets: int = 0
    job_answers: int = 0
    generation_jobs: int = 0
    stripe_events: int = 0
    webhook_messages: int = 0
    audit_entries: int = 0
    consents: int = 0
    export_archives: int = 0
    ledger_entries: int = 0
    topups: int = 0
    failed: list[str] = field(default_factory=list)  # categories that raised (logged)

    def counts(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in COUNTS}


async def purge(
    engine: AsyncEngine,
    store: Store,
    policy: RetentionPolicy,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    exports: ExportPurger | None = None,
    stop: asyncio.Event | None = None,
) -> PurgeReport:
    """One pass over the retention schedule as of `now`. A category that fails is logged
    and named in `report.failed`; the others still run. `stop` ends the pass between
    batches (server shutdown)."""
    now = now or utcnow()
    limit = policy.batch_size
    tally = steps.Tally()
    failed: list[str] = []
    rows = steps.row_categories(
        now,
        security=now - timedelta(days=policy.security_log_days),
        usage_meta=now - timedelta(days=policy.usage_meta_days),
        webhook_ids=now - timedelta(days=policy.webhook_ids_days),
        consent_proof=now - timedelta(days=policy.consent_proof_days),
        webhook_log=now - timedelta(days=policy.webhook_log_days),
    )
    audit_cutoff = now - timedelta(days=policy.audit_days)
    accounting_cutoff = _years_before(now, policy.accounting_years)

    async def drain(batch: Callable[[int], Awaitable[int]]) -> None:
        # A batch returns how many rows it claimed; a short one means nothing is left.
        while await batch(limit) >= limit and not (stop and stop.is_set()):
            pass

    async def plain(category: steps.Rows) -> None:
        if dry_run:
            counted = await steps.count_rows(engine, category.key.table, category.due)
            tally[category.count] += counted
        else:
            await drain(functools.partial(steps.rows_batch, engine, category, tally))

    async def outputs() -> None:
        if dry_run:
            await steps.count_outputs(engine, now, tally)
        else:
            await drain(functools.partial(steps.outputs_batch, engine, store, now, tally))

    async def audit_log() -> None:
        if dry_run:
            tally["audit_entries"] += await steps.count_audit(engine, audit_cutoff)
        else:
            await drain(functools.partial(steps.audit_batch, engine, audit_cutoff, now, tally))

    async def export_archives() -> None:
        if dry_run:
            tally["export_archives"] += await steps.count_exports(engine, now)
        elif exports is not None:
            tally["export_archives"] += await exports(now)

    async def accounting() -> None:
        if dry_run:
            await steps.count_accounting(engine, accounting_cutoff, tally)
        else:
            await drain(functools.partial(steps.accounting_batch, engine, accounting_cutoff, tally))

    # Outputs before usage rows: a usage row goes only once its files are gone.
    categories: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("outputs", outputs),
        *[(r.count, functools.partial(plain, r)) for r in rows],
        ("audit_entries", audit_log),
        ("export_archives", export_archives),
        ("accounting", accounting),
    ]
    for name, run in categories:
        if stop and stop.is_set():
            break
        try:
            await run()
        except Exception:
            log.exception("retention purge of %s failed; the other categories go on", name)
            failed.append(name)
    report = PurgeReport(
        now=now, dry_run=dry_run, failed=failed, **{name: tally[name] for name in COUNTS}
    )
    _log(report)
    return report


# ------------------------------------------------------------------------------ running


def _years_before(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year - years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year - years, day=28)


def _log(report: PurgeReport) -> None:
    counts = " ".join(f"{name}={count}" for name, count in report.counts().items() if count)
    if report.dry_run:
        log.info("retention dry run: would purge %s", counts or "nothing")
    elif counts or report.failed:
        log.info(
            "retention purge: %s%s",
            counts or "nothing",
            f"; failed: {', '.join(report.failed)}" if report.failed else "",
        )


@dataclass(frozen=True)
class Retention:
    """The retention purge with its collaborators (built in resources.py)."""

    engine: AsyncEngine
    store: Store
    policy: RetentionPolicy
    exports: ExportPurger | None = None  # deletes expired export archives and their files

    async def purge(
        self,
        *,
        now: datetime | None = None,
        dry_run: bool = False,
        stop: asyncio.Event | None = None,
    ) -> PurgeReport:
        return await purge(
            self.engine,
            self.store,
            self.policy,
            now=now,
            dry_run=dry_run,
            exports=self.exports,
            stop=stop,
        )

    async def run_periodically(self, interval_s: float, stop: asyncio.Event) -> None:
        """The server's purge loop, until `stop` is set: the first pass soon after start-up,
        then one every `interval_s`. Errors are logged and the loop goes on; stopping ends
        the current pass between batches rather than cutting a transaction off."""
        delay = min(interval_s, FIRST_RUN_AFTER_S)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            if stop.is_set():
                return
            try:
                await self.purge(stop=stop)
            except Exception as exc:
                log_failed_pass(log, "retention purge failed", exc)
            delay = interval_s
