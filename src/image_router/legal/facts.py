"""The wording of two policy facts: the retention table's rows and the vendors' names.

The composition root (`resources.policy_facts`) reads the settings and hands the plain
values here, so the documents' wording stays with the documents and this module needs no
settings (RET-2: the table is generated from the periods the purge jobs use).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from image_router.legal.render import RetentionRow

# Who a provider id stands for, as a reader of the policy knows them.
VENDOR_NAMES = {
    "openai": "OpenAI",
    "deepinfra": "DeepInfra",
    "together": "Together AI",
    "chutes": "Chutes",
    "vertex": "Google Cloud (Vertex AI)",
    "nanogpt": "NanoGPT",
    "openrouter": "OpenRouter",
    "fal": "fal.ai",
    "zai": "Z.ai",
    "grok": "xAI",
    "replicate": "Replicate",
    "wavespeed": "WaveSpeedAI",
    "gemini": "Google (Gemini API)",
    "geminiImagen": "Google (Gemini API)",
    "runware": "Runware",
}


def vendor_names(provider_ids: Iterable[str]) -> tuple[str, ...]:
    """The vendors' names, each once, in the order of `provider_ids` (test excluded)."""
    names: list[str] = []
    for provider_id in provider_ids:
        if provider_id == "test":
            continue
        name = VENDOR_NAMES.get(provider_id, provider_id)
        if name not in names:
            names.append(name)
    return tuple(names)


@dataclass(frozen=True)
class RetentionPeriods:
    """The periods of the retention schedule, as configured (the `RETENTION_*` settings)."""

    prompts_days: int
    outputs_hours: int
    usage_meta_days: int
    security_log_days: int
    accounting_years: int
    webhook_ids_days: int
    audit_days: int
    consent_proof_days: int
    export_ttl_hours: int
    idempotency_hours: int
    webhook_log_days: int


def retention_rows(p: RetentionPeriods) -> tuple[RetentionRow, ...]:
    prompts = (
        "not stored"
        if p.prompts_days == 0
        else f"{_days(p.prompts_days)} (not stored at all while prompt storage is off)"
    )
    return (
        RetentionRow(
            "Prompts and request parameters of your generations",
            prompts,
            "RETENTION_PROMPTS_DAYS",
        ),
        RetentionRow(
            "Generated images and videos hosted for download, and the stored answers of "
            "long-running jobs (which link to them)",
            _count(p.outputs_hours, "hour"),
            "RETENTION_OUTPUTS_HOURS",
        ),
        RetentionRow(
            "Usage records without content (time, model, size, status, cost), and the "
            "records of long-running jobs (state, model, times, error)",
            _days(p.usage_meta_days),
            "RETENTION_USAGE_META_DAYS",
        ),
        RetentionRow(
            "IP addresses and browser names in request and sign-in records (security)",
            _days(p.security_log_days),
            "RETENTION_SECURITY_LOG_DAYS",
        ),
        RetentionRow(
            "Answers to requests sent with an Idempotency-Key (replayed on a retry)",
            _count(p.idempotency_hours, "hour"),
            "RETENTION_IDEMPOTENCY_HOURS",
        ),
        RetentionRow(
            "Webhook delivery log: each event sent to your webhooks (its payload with output "
            "links, the generation id and any error), the receiver's answer",
            _days(p.webhook_log_days),
            "WEBHOOK_LOG_DAYS",
        ),
        RetentionRow(
            "Your webhook endpoints (address, description) and their signing secrets",
            "until you delete them or close your account",
            "",
        ),
        RetentionRow(
            "Payments, refunds and the credit ledger (accounting law)",
            _count(p.accounting_years, "year"),
            "RETENTION_ACCOUNTING_YEARS",
        ),
        RetentionRow(
            "Identifiers of payment and sign-in webhooks (to process each once)",
            _days(p.webhook_ids_days),
            "RETENTION_WEBHOOK_IDS_DAYS",
        ),
        RetentionRow(
            "Audit log of privacy actions and staff access to personal data",
            _days(p.audit_days),
            "RETENTION_AUDIT_DAYS",
        ),
        RetentionRow(
            "Records of your consents and policy acceptances (proof)",
            f"{_days(p.consent_proof_days)} after your account is closed",
            "RETENTION_CONSENT_PROOF_DAYS",
        ),
        RetentionRow(
            "Data exports you request (the download)",
            f"{_count(p.export_ttl_hours, 'hour')} after they are ready",
            "EXPORT_TTL_HOURS",
        ),
    )


def _days(days: int) -> str:
    return _count(days, "day")


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}" if number == 1 else f"{number} {unit}s"
