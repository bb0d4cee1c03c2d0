"""Protecting personal data (keys, sealed prompts, exports) and how long each kind of data
is kept (README "Privacy"; docs/privacy.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from image_router.config.group import Group


class PrivacySettings(Group):
    # Unset, a key file under DATA_DIR is created on first start: fine for one machine,
    # but several machines sharing a database must share the key.
    pii_kek: SecretStr | None = Field(
        default=None,
        description="32 bytes base64: wraps the per-account data keys; several machines must "
        "share it; unset: `PII_KEK_FILE`",
    )
    pii_kek_file: Path | None = Field(
        default=None,
        description="the key file used (created on first start) when `PII_KEK` is unset; "
        "unset: `DATA_DIR/keys/pii-kek.key`",
    )
    pii_kek_previous: SecretStr | None = Field(
        default=None,
        description="while rotating the KEK: the old key(s), comma-separated, until "
        "`image-router vault rewrap` has run",
    )
    blind_index_key: SecretStr | None = Field(
        default=None,
        description="32 bytes base64: keys the e-mail blind index; several machines must share "
        "it; unset: `DATA_DIR/keys/blind-index.key`",
    )
    default_store_prompts: bool = Field(
        default=True,
        description="new accounts store their prompts (sealed); each account can switch it off",
    )
    export_sync_max_mb: float = Field(
        default=20.0,
        ge=0,
        description="exports larger than this (MB) are built in the background",
    )
    export_ttl_hours: int = Field(
        default=24, ge=1, description="how long a background export's link lives, hours"
    )
    jobs_interval_s: float = Field(
        default=2.0,
        gt=0,
        description="seconds between each worker's look for background jobs (exports, erasures)",
    )


class RetentionSettings(Group):
    retention_prompts_days: int = Field(
        default=30, ge=0, description="how long prompts are kept, days"
    )
    retention_outputs_hours: int = Field(
        default=24, ge=0, description="how long generated files are kept, hours"
    )
    retention_usage_meta_days: int = Field(
        default=730, ge=1, description="how long usage rows are kept, days"
    )
    retention_security_log_days: int = Field(
        default=30,
        ge=1,
        description="how long client IPs on usage rows and old sessions are kept, days",
    )
    retention_accounting_years: int = Field(
        default=10,
        ge=1,
        description="how long the ledger and top-ups of deleted accounts are kept, years",
    )
    retention_webhook_ids_days: int = Field(
        default=90, ge=1, description="how long webhook event ids are kept, days"
    )
    retention_audit_days: int = Field(
        default=730, ge=1, description="how long audit entries are kept, days"
    )
    retention_consent_proof_days: int = Field(
        default=1095,
        ge=1,
        description="how long consent records are kept after an account ends, days",
    )
    retention_idempotency_hours: int = Field(
        default=24,
        ge=1,
        description="how long the answer to a request with an `Idempotency-Key` is kept and "
        "replayed, hours ([docs/idempotency.md](docs/idempotency.md))",
    )
    purge_interval_s: float = Field(
        default=3600.0, gt=0, description="seconds between each worker's purges"
    )
    purge_batch_size: int = Field(
        default=500, ge=1, description="rows deleted per purge transaction"
    )
