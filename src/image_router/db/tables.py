"""The tables. In this product "model" means an AI model, so ORM classes live here.

Money columns are BigInteger credits ($0.0001). `accounts.balance` is only written by the
ledger service, in the same transaction as the ledger entry that explains the change, so
`balance == sum(ledger_entries.amount)` for every account at every commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from image_router.db.base import Base, UTCDateTime


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_not_negative"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    # Personal data is sealed under the account's data key (account/personal_data.py): a
    # backup without that key reveals nothing. E-mail is found through its blind index.
    email_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    email_bidx: Mapped[str | None] = mapped_column(String(64), unique=True)
    name_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    image_url_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    role: Mapped[str] = mapped_column(String(20), default="user")
    # active | deletion_pending | deleted (a tombstone keeping only accounting rows)
    status: Mapped[str] = mapped_column(String(20), default="active", server_default="active")
    # Who vouches for the person: "local" (our passwords) or "clerk" (`auth_subject` = sub).
    auth_provider: Mapped[str] = mapped_column(String(20), default="local", server_default="local")
    auth_subject: Mapped[str | None] = mapped_column(String(255), unique=True)
    # Kept after erasure (the subject itself is not), so a late webhook cannot resurrect it.
    auth_subject_hmac: Mapped[str | None] = mapped_column(String(64), index=True)
    auth_updated_at_ms: Mapped[int | None] = mapped_column(BigInteger)
    # Privacy choices (privacy/preferences.py); every change appends a `consents` row.
    store_prompts: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    marketing_emails: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Restriction of processing (GDPR Art. 18): no generation, skipped by purge jobs.
    processing_restricted: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    # The person's own words (sealed like all personal data).
    restricted_reason_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    restricted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    restriction_lift_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The policy versions this person has seen (banner) and accepted.
    privacy_version_notified: Mapped[str | None] = mapped_column(String(40))
    terms_version_accepted: Mapped[str | None] = mapped_column(String(40))
    terms_accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deletion_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Privacy choice (legitimate interest, on by default): may this account's requests
    # feed the shared route-health statistics?
    allow_routing_improvement: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true()
    )
    stripe_customer_id: Mapped[str | None] = mapped_column(String(64))
    # Local sign-in (AUTH_PROVIDER=local): an argon2 hash; None for accounts without one.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    # Credits frozen by open payment disputes (not spendable, not in `balance`).
    billing_hold: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    last_four: Mapped[str] = mapped_column(String(4))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Management keys may create keys through POST /v1/api-keys but not generate.
    is_management: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    spend_limit: Mapped[int | None] = mapped_column(BigInteger)  # credits per period
    spend_limit_period: Mapped[str | None] = mapped_column(String(10))  # day|week|month|None
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class WebSession(Base):
    """A signed-in browser. The cookie holds a random token; only its hash is stored."""

    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the token
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reauthenticated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(400))
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PasswordReset(Base):
    """A single-use password reset link (only the token's hash is stored)."""

    __tablename__ = "password_resets"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LedgerEntry(Base):
    """Append-only. `amount` is signed: grants and releases add, holds take.

    `ref` names the outside event an entry answers (a Stripe session, a refund...); the
    unique (kind, ref) pair makes fulfilling the same event twice impossible.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_account_id_id", "account_id", "id"),
        UniqueConstraint("kind", "ref"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(20))
    generation_id: Mapped[str | None] = mapped_column(String(36), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    ref: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Topup(Base):
    """One attempt to buy credits through Stripe Checkout (spec STR-1…8)."""

    __tablename__ = "topups"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    stripe_checkout_session_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    credits: Mapped[int] = mapped_column(BigInteger)
    refunded_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    disputed_cents: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(30))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class StripeEvent(Base):
    """Every Stripe webhook event received, so a redelivery is recognised."""

    __tablename__ = "stripe_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outcome: Mapped[str | None] = mapped_column(Text)


class BannedNetwork(Base):
    """An IP address or network (CIDR) refused on the generation routes."""

    __tablename__ = "banned_networks"

    network: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Generation(Base):
    """One generation request: the usage log row (spec §10.2) and the state of its hold.

    `held` is what was taken from the balance when the request was accepted; `status` moves
    processing → success | error exactly once, guarded by `WHERE status = 'processing'`.
    """

    __tablename__ = "generations"
    __table_args__ = (
        Index("ix_generations_account_id_created_at", "account_id", "created_at"),
        Index("ix_generations_status_deadline_at", "status", "deadline_at"),
        # The free tier's per-IP daily count (limits/free_tier.py); partial, so paid
        # generations pay nothing for it. (`\:` keeps `:free` from being a bind parameter.)
        Index(
            "ix_generations_free_ip_created_at",
            "ip",
            "created_at",
            postgresql_where=text(r"model LIKE '%\:free%'"),
            sqlite_where=text(r"model LIKE '%\:free%'"),
        ),
        # The webhook outbox's sweeper (webhooks/events.py); partial: a row leaves it as
        # soon as its events are recorded, so it stays as small as the events in flight.
        Index(
            "ix_generations_events_pending",
            "finished_at",
            postgresql_where=text("events_pending IS NOT NULL"),
            sqlite_where=text("events_pending IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    api_key_id: Mapped[str | None] = mapped_column(String(36), index=True)
    via_web_token: Mapped[bool] = mapped_column(Boolean, default=False)
    modality: Mapped[str] = mapped_column(String(10))
    model: Mapped[str] = mapped_column(String(200))
    provider: Mapped[str] = mapped_column(String(50))
    # Sealed under the account's data key; None when the account or the request chose
    # not to store prompts, after the retention period, or after the person deleted it.
    prompt_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    content_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Storage names of the stored outputs, deleted when `outputs_expire_at` passes.
    output_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    outputs_expire_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    size: Mapped[str] = mapped_column(String(40))
    quality: Mapped[str | None] = mapped_column(String(10))
    seconds: Mapped[str | None] = mapped_column(String(20))
    input_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[str | None] = mapped_column(Text)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    ip: Mapped[str | None] = mapped_column(String(64))
    output_urls: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The webhook outbox (docs/webhooks.md): True from the hold on when the generation's
    # end is an event (the request has a `webhook_url`, or its account may have endpoints);
    # set back to NULL in the transaction that records its deliveries. A closed row still
    # True is found by the sweeper, so an event is never lost to a crash or an outage.
    events_pending: Mapped[bool | None] = mapped_column(Boolean)
    # The request's own webhook, kept only until its events are recorded.
    webhook_url: Mapped[str | None] = mapped_column(Text)


class GenerationJob(Base):
    """A generation that outlives its HTTP request (issue #14 §2–3): an async request
    (`Prefer: respond-async`), a synchronous one whose vendor accepted a resumable job, or
    one whose client hung up. Its id is the generation's (`generations.id`).

    The usage row stays the authority on money and outcome (`processing → success |
    error`, settled or released exactly once); this row adds what the job API and a
    resumer need: the vendor's own job reference once the vendor accepted it
    (`vendor_ref`, `vendor_accepted_at`), the lease of the process waiting on it (`owner`,
    `lease_until`), what is needed to rebuild the request without its inputs (`spec`), the
    answer sealed under the account's data key (`result_enc`), and a cancelled job's mark.
    """

    __tablename__ = "generation_jobs"
    __table_args__ = (
        Index("ix_generation_jobs_account_id_created_at", "account_id", "created_at", "id"),
        Index("ix_generation_jobs_state_lease_until", "state", "lease_until"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(36))
    origin: Mapped[str] = mapped_column(String(10))  # async | sync
    modality: Mapped[str] = mapped_column(String(10))
    model: Mapped[str] = mapped_column(String(200))
    # queued | running while the usage row is processing; then succeeded | failed |
    # cancelled (the usage row decides, see `jobs/views.py`).
    state: Mapped[str] = mapped_column(String(20))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    provider: Mapped[str | None] = mapped_column(String(50))
    vendor_ref: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    vendor_accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    progress: Mapped[float | None] = mapped_column(Float)
    result_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    result_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Consent(Base):
    """Append-only proof of each choice: who, what, when, under which policy version."""

    __tablename__ = "consents"
    __table_args__ = (Index("ix_consents_account_id_id", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(36))
    # An anonymous visitor's id (the `ir_consent` cookie) for cookie-banner choices.
    consent_id: Mapped[str | None] = mapped_column(String(64), index=True)
    # terms | privacy_notice | marketing_emails | analytics_cookies | store_prompts |
    # routing_improvement
    purpose: Mapped[str] = mapped_column(String(40))
    granted: Mapped[bool] = mapped_column(Boolean)
    document_version: Mapped[str | None] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(20))  # signup|settings|banner|api|admin|clerk
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookMessage(Base):
    """A webhook message already handled (Clerk/Svix), so a redelivery does nothing."""

    __tablename__ = "webhook_messages"

    source: Mapped[str] = mapped_column(String(20), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """Append-only, hash-chained log of access to personal data (never the data itself).

    `hash` = SHA-256 over `prev_hash` and this entry's fields, so changing, removing or
    reordering any entry breaks every later link (`image-router audit verify`).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    actor_type: Mapped[str] = mapped_column(String(20))  # user|operator|system|webhook
    actor_id: Mapped[str | None] = mapped_column(String(64))
    subject_account_id: Mapped[str | None] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(40))
    fields: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class Job(Base):
    """Background work queued in the transaction that asked for it (erasure, exports).

    Claimed by one worker at a time: `status` moves queued → running → done | failed with
    conditional updates; a running job whose `locked_until` passed is claimed again.
    """

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_run_after", "status", "run_after"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    account_id: Mapped[str | None] = mapped_column(String(36), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_after: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)


class ExportArchive(Base):
    """A data export built in the background, downloadable until `expires_at`."""

    __tablename__ = "export_archives"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(20))  # pending | ready | failed | expired
    storage_key: Mapped[str | None] = mapped_column(String(200))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    downloaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DataSubjectRequest(Base):
    """A privacy request (access, erasure, restriction...), self-service or recorded by an
    operator, with its legal due date (one month from receipt)."""

    __tablename__ = "data_subject_requests"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str | None] = mapped_column(String(36), index=True)
    type: Mapped[str] = mapped_column(String(20))  # access|export|rectification|erasure|...
    channel: Mapped[str] = mapped_column(String(20))  # api|web|clerk|email|cli
    status: Mapped[str] = mapped_column(String(20))  # open | completed
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    handled_by: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)


class IdempotencyKey(Base):
    """An `Idempotency-Key` an account sent: the first request's claim, then its answer.

    One row per (account, key): the primary key is the account and a SHA-256 of the
    account id and the key, so the database refuses a second claim whichever worker or
    machine makes it (`idempotency/store.py`). `state` moves in_progress → done; a claim
    whose `locked_until` (the lease) passed may be taken over by a retry with a new `token`.
    The answer's body is sealed under the account's data key (it may hold a new API key's
    secret or a prompt); rows go at `expires_at` (RETENTION_IDEMPOTENCY_HOURS).
    """

    __tablename__ = "idempotency_keys"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))  # SHA-256 of method, path, body
    state: Mapped[str] = mapped_column(String(20))  # in_progress | done
    token: Mapped[str] = mapped_column(String(36))  # the claim that may finish the row
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    body_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


# ------------------------------------------------------------- outgoing webhooks


class WebhookEndpoint(Base):
    """An account's webhook endpoint: every generation event of the account is sent to it,
    signed with its own secret (Standard Webhooks), until it is deleted or disabled."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    description: Mapped[str | None] = mapped_column(String(200))
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)  # sealed under the account's key
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Since when every delivery to it failed (None: the last one succeeded).
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class WebhookSecret(Base):
    """The secret that signs an account's per-request `webhook_url` deliveries."""

    __tablename__ = "webhook_secrets"

    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    secret_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class WebhookDelivery(Base):
    """One event for one target (an endpoint, or a request's `webhook_url`): the delivery
    log. `id` is the message id (`webhook-id`), the same on every attempt and resend.
    `status` moves pending → delivered | failed; a resend makes it pending again."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_account_id_created_at", "account_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    endpoint_id: Mapped[str | None] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    event_type: Mapped[str] = mapped_column(String(40))
    generation_id: Mapped[str] = mapped_column(String(36))
    payload: Mapped[str] = mapped_column(Text)  # the JSON body, exactly as signed and sent
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    response_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retry_until: Mapped[datetime] = mapped_column(UTCDateTime())
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


# Core views of the tables, for statements built once at import time (typed as Table).
ACCOUNTS = cast(Table, Account.__table__)
API_KEYS = cast(Table, ApiKey.__table__)
LEDGER_ENTRIES = cast(Table, LedgerEntry.__table__)
GENERATIONS = cast(Table, Generation.__table__)
TOPUPS = cast(Table, Topup.__table__)
