"""Every table that holds an account's rows, and what each privacy right does with them.

One entry per table of db/tables.py with an account column (`account_id`, or the audit
log's `subject_account_id`): which members of the data export hold its rows (DSR-1), what
the erasure does with them (DSR-2), which categories of the retention purge delete them
(RET-1), and which row of the privacy policy's retention table states their period
(RET-2). Where a right does not apply, `Exempt` says why. tests/unit/privacy/
test_privacy_inventory.py fails when a table with an account column has no entry here, and
checks each entry against the export's README, `erasure.DELETED_TABLES`, the purge's
categories and the policy's table; the integration tests check what actually happens.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exempt:
    """A right that does not apply to the table, and why."""

    reason: str


#: The erasure deletes the account's rows (the table is in `erasure.DELETED_TABLES`).
DELETE = "delete"


@dataclass(frozen=True)
class Coverage:
    export: tuple[str, ...] | Exempt  # the export's members holding the rows
    erasure: str | Exempt  # DELETE, or what happens instead and why
    retention: tuple[str, ...] | Exempt  # the purge's categories (PurgeReport counts)
    # The policy's retention-table row: its setting, or the start of its text when it has
    # no setting.
    policy: str | Exempt


_ACCOUNT_LIFETIME = Exempt(
    "kept while the account is open, so its owner sees everything it had; the erasure "
    "deletes it with the account"
)

INVENTORY: dict[str, Coverage] = {
    "api_keys": Coverage(("api_keys.json",), DELETE, _ACCOUNT_LIFETIME, _ACCOUNT_LIFETIME),
    "web_sessions": Coverage(
        ("sessions.json",), DELETE, ("web_sessions",), "RETENTION_SECURITY_LOG_DAYS"
    ),
    "password_resets": Coverage(
        Exempt("a hash of a single-use link's token and two times: nothing the person gave"),
        DELETE,
        ("password_resets",),
        Exempt("lives only until the link expires (an hour), never a kept record"),
    ),
    "ledger_entries": Coverage(
        ("credit_ledger.jsonl",),
        "kept under the tombstone's id (accounting law), with the balance forfeited",
        ("ledger_entries",),
        "RETENTION_ACCOUNTING_YEARS",
    ),
    "topups": Coverage(
        ("payments.json",),
        "kept under the tombstone's id (accounting law)",
        ("topups",),
        "RETENTION_ACCOUNTING_YEARS",
    ),
    "generations": Coverage(
        ("usage.jsonl", "generated/"),
        "kept pseudonymous as accounting: prompt, outputs, error and IP cleared",
        ("prompts", "outputs", "client_ips", "usage_rows"),
        "RETENTION_USAGE_META_DAYS",
    ),
    "generation_jobs": Coverage(
        ("jobs.jsonl",),
        DELETE,  # the usage row is the accounting record of the generation
        ("job_answers", "generation_jobs"),
        "RETENTION_USAGE_META_DAYS",
    ),
    "consents": Coverage(
        ("consents.json",),
        "only the newest terms acceptance is kept, as proof of the contract",
        ("consents",),
        "RETENTION_CONSENT_PROOF_DAYS",
    ),
    "audit_log": Coverage(
        ("access_log.json",),
        "kept: it names the account id and what was done, never the data itself",
        ("audit_entries",),
        "RETENTION_AUDIT_DAYS",
    ),
    "jobs": Coverage(
        Exempt("the background work queue (exports, erasures, notices): no personal data"),
        "queued work of the account is cancelled; the erasure's own job stays as its record",
        Exempt("not purged yet: a row names an account id and a job kind, no personal data"),
        Exempt("holds no personal data"),
    ),
    "export_archives": Coverage(
        Exempt("the archive is an export itself"),
        DELETE,
        ("export_archives",),
        "EXPORT_TTL_HOURS",
    ),
    "data_subject_requests": Coverage(
        ("privacy_requests.json",),
        "kept: the proof that each request was answered in time (GDPR Art. 5(2))",
        Exempt("kept as that proof; not purged yet"),
        Exempt("names only the request's type, channel and dates"),
    ),
    "idempotency_keys": Coverage(
        ("idempotency_keys.jsonl",),
        DELETE,
        ("idempotency_keys",),
        "RETENTION_IDEMPOTENCY_HOURS",
    ),
    "webhook_endpoints": Coverage(
        ("webhooks.json",), DELETE, ("webhook_endpoints",), "Your webhook endpoints"
    ),
    "webhook_secrets": Coverage(
        ("webhooks.json",), DELETE, ("webhook_secrets",), "Your webhook endpoints"
    ),
    "webhook_deliveries": Coverage(
        ("webhook_deliveries.jsonl",), DELETE, ("webhook_deliveries",), "WEBHOOK_LOG_DAYS"
    ),
}
