"""One record of a data export each: which columns, under which names, in which units.

Columns are listed explicitly, never `SELECT *` of a table with secrets: an API key's hash,
a session's token hash and its CSRF token are left out by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from image_router.db.tables import (
    ApiKey,
    GenerationJob,
    IdempotencyKey,
    WebhookDelivery,
    WebhookEndpoint,
    WebSession,
)
from image_router.kit.money import format_usd
from image_router.privacy import audit

Opener = Callable[[bytes | None], str | None]


def _usd(credits: int | None) -> str | None:
    return None if credits is None else format_usd(credits)


KEY_COLUMNS = (
    ApiKey.id,
    ApiKey.name,
    ApiKey.prefix,
    ApiKey.last_four,
    ApiKey.is_active,
    ApiKey.is_management,
    ApiKey.created_at,
    ApiKey.last_used_at,
    ApiKey.revoked_at,
    ApiKey.expires_at,
    ApiKey.spend_limit,
    ApiKey.spend_limit_period,
)  # deliberately not key_hash
SESSION_COLUMNS = (
    WebSession.created_at,
    WebSession.last_seen_at,
    WebSession.expires_at,
    WebSession.revoked_at,
    WebSession.ip,
    WebSession.user_agent,
)  # not the id (the token's hash) nor the CSRF token
WEBHOOK_ENDPOINT_COLUMNS = (
    WebhookEndpoint.id,
    WebhookEndpoint.url,
    WebhookEndpoint.description,
    WebhookEndpoint.created_at,
    WebhookEndpoint.failing_since,
    WebhookEndpoint.disabled_at,
    WebhookEndpoint.disabled_reason,
)  # not secret_enc: see `SECRET_NOT_EXPORTED`
WEBHOOK_DELIVERY_COLUMNS = (
    WebhookDelivery.id,
    WebhookDelivery.endpoint_id,
    WebhookDelivery.url,
    WebhookDelivery.event_type,
    WebhookDelivery.generation_id,
    WebhookDelivery.payload,
    WebhookDelivery.status,
    WebhookDelivery.attempts,
    WebhookDelivery.response_status,
    WebhookDelivery.last_error,
    WebhookDelivery.created_at,
    WebhookDelivery.last_attempt_at,
    WebhookDelivery.delivered_at,
    WebhookDelivery.retry_until,
)  # not the lease (locked_until, next_attempt_at): the sender's bookkeeping
JOB_COLUMNS = (
    GenerationJob.id,
    GenerationJob.origin,
    GenerationJob.modality,
    GenerationJob.model,
    GenerationJob.state,
    GenerationJob.provider,
    GenerationJob.spec,
    GenerationJob.progress,
    GenerationJob.error,
    GenerationJob.created_at,
    GenerationJob.vendor_accepted_at,
    GenerationJob.deadline_at,
    GenerationJob.finished_at,
    GenerationJob.result_enc.is_not(None).label("answer_stored"),
    GenerationJob.result_expires_at,
)  # not the lease (owner, lease_until) nor the vendor's internal job reference
IDEMPOTENCY_COLUMNS = (
    IdempotencyKey.key_hash,
    IdempotencyKey.state,
    IdempotencyKey.status,
    IdempotencyKey.created_at,
    IdempotencyKey.finished_at,
    IdempotencyKey.expires_at,
    IdempotencyKey.body_enc.is_not(None).label("answer_stored"),
)  # not the stored answer itself: see `IDEMPOTENT_ANSWER_NOT_EXPORTED`

#: Why a webhook endpoint's signing secret is not in the export. It is a credential we
#: generated, not data about the person; an export is a file that is downloaded, kept and
#: forwarded (and waits in storage for EXPORT_TTL_HOURS), and whoever holds a live secret
#: can forge deliveries the person's receiver would trust. The person has it already: an
#: endpoint's is shown when it is created, the request secret at any time.
SECRET_NOT_EXPORTED = (
    "not exported: it is a live credential; an endpoint's secret was shown when it was "
    "created (replace it by creating a new endpoint), the request secret is at "
    "GET /v1/webhooks/default/secret"
)
#: Why the stored answers of idempotent requests are not in the export: an answer may hold
#: a new API key's secret (POST /v1/api-keys), which is never exported; the generations
#: they answered are in usage.jsonl with their prompts and outputs, and jobs in jobs.jsonl.
IDEMPOTENT_ANSWER_NOT_EXPORTED = (
    "not exported (it may hold an API key's secret); the requests themselves are in usage.jsonl"
)


def account(a: Any, opened: Opener) -> dict[str, object]:
    return {
        "id": a["id"],
        "email": opened(a["email_enc"]),
        "name": opened(a["name_enc"]),
        "image_url": opened(a["image_url_enc"]),
        "role": a["role"],
        "status": a["status"],
        "sign_in": a["auth_provider"],
        "created_at": a["created_at"],
        "preferences": {
            "store_prompts": a["store_prompts"],
            "allow_routing_improvement": a["allow_routing_improvement"],
            "marketing_emails": a["marketing_emails"],
        },
        "restriction": {
            "restricted": a["processing_restricted"],
            "reason": opened(a["restricted_reason_enc"]),
            "since": a["restricted_at"],
            "lift_notified_at": a["restriction_lift_notified_at"],
        },
        "legal": {
            "terms_version_accepted": a["terms_version_accepted"],
            "terms_accepted_at": a["terms_accepted_at"],
            "privacy_version_notified": a["privacy_version_notified"],
        },
        "balance": {"usd": format_usd(a["balance"]), "credits": a["balance"]},
        "deletion_requested_at": a["deletion_requested_at"],
    }


def api_key(k: Any) -> dict[str, object]:
    return {
        **{name: k[name] for name in ("id", "name", "prefix", "last_four", "is_management")},
        "active": k["is_active"] and k["revoked_at"] is None,
        **{name: k[name] for name in ("created_at", "last_used_at", "revoked_at", "expires_at")},
        "spend_limit_usd": _usd(k["spend_limit"]),
        "spend_limit_period": k["spend_limit_period"],
    }


def usage(g: Any, opened: Opener) -> dict[str, object]:
    prompt = opened(g["prompt_enc"]) if g["content_deleted_at"] is None else None
    return {
        **{name: g[name] for name in ("id", "created_at", "finished_at", "modality", "model")},
        **{name: g[name] for name in ("provider", "size", "quality", "seconds", "status")},
        "cost_usd": format_usd(g["cost"]),
        "cost_credits": g["cost"],
        "latency_ms": g["latency_ms"],
        "error": g["error"],
        "input_types": g["input_types"] or [],
        "output_urls": g["output_urls"] or [],
        "api_key_id": g["api_key_id"],
        "via_website": g["via_web_token"],
        "client_ip": g["ip"],
        "prompt_stored": prompt is not None,
        "prompt": prompt,
        "content_deleted_at": g["content_deleted_at"],
    }


def webhook_endpoint(e: Any) -> dict[str, object]:
    return {
        **{name: e[name] for name in ("id", "url", "description", "created_at")},
        # Every endpoint receives every generation event of the account (docs/webhooks.md).
        "events": "all generation events",
        "disabled": e["disabled_at"] is not None,
        **{name: e[name] for name in ("disabled_at", "disabled_reason", "failing_since")},
        "signing_secret": SECRET_NOT_EXPORTED,
    }


def webhook_delivery(d: Any) -> dict[str, object]:
    try:
        payload: object = orjson.loads(d["payload"])
    except orjson.JSONDecodeError:
        payload = d["payload"]  # as sent, should it ever not be JSON
    return {
        **{name: d[name] for name in ("id", "endpoint_id", "url", "event_type")},
        "generation_id": d["generation_id"],
        "payload": payload,
        **{name: d[name] for name in ("status", "attempts", "response_status", "last_error")},
        **{name: d[name] for name in ("created_at", "last_attempt_at", "delivered_at")},
        "retry_until": d["retry_until"],
    }


def job(j: Any) -> dict[str, object]:
    request = (j["spec"] or {}).get("request") or {}
    return {
        **{name: j[name] for name in ("id", "origin", "modality", "model", "state")},
        "provider": j["provider"],
        # The spec never holds the prompt; of the request, only where its events went.
        "webhook_url": request.get("webhook_url"),
        "progress": j["progress"],
        "error": j["error"],
        **{name: j[name] for name in ("created_at", "vendor_accepted_at", "deadline_at")},
        "finished_at": j["finished_at"],
        # The answer is the generation's: its outputs and cost are the usage.jsonl line with
        # this id, and the files are under generated/ while they are kept.
        "answer_stored": bool(j["answer_stored"]),
        "answer_expires_at": j["result_expires_at"],
    }


def idempotency_key(k: Any) -> dict[str, object]:
    return {
        # The key itself is never stored: SHA-256 of "<account id>\n<scope>\n<key>".
        "key_sha256": k["key_hash"],
        "state": k["state"],
        "response_status": k["status"],
        **{name: k[name] for name in ("created_at", "finished_at", "expires_at")},
        "answer_stored": bool(k["answer_stored"]),
        "answer": IDEMPOTENT_ANSWER_NOT_EXPORTED,
    }


def ledger(e: Any) -> dict[str, object]:
    return {
        **{name: e[name] for name in ("id", "created_at", "kind")},
        "amount_usd": format_usd(e["amount"]),
        "amount_credits": e["amount"],
        **{name: e[name] for name in ("generation_id", "reason", "ref")},
    }


def topup(t: Any) -> dict[str, object]:
    names = ("id", "status", "amount_cents", "currency", "credits", "refunded_cents")
    return {
        **{name: t[name] for name in names},
        "disputed_cents": t["disputed_cents"],
        "stripe_checkout_session_id": t["stripe_checkout_session_id"],
        "stripe_payment_intent_id": t["stripe_payment_intent_id"],
        **{name: t[name] for name in ("created_at", "updated_at", "paid_at")},
    }


def consent(c: Any) -> dict[str, object]:
    names = ("id", "purpose", "granted", "document_version", "source", "created_at")
    return {name: c[name] for name in names}


def request(r: Any) -> dict[str, object]:
    names = ("id", "type", "channel", "status", "received_at", "due_at", "completed_at")
    return {name: r[name] for name in names}


def access(e: audit.AuditRecord, account_id: str) -> dict[str, object]:
    # Staff are named by role, not login: the person learns what was accessed and why.
    by = "you" if e.actor_id == account_id else e.actor_type
    return {
        "at": e.created_at,
        "by": by,
        "action": e.action,
        "fields": list(e.fields),
        "reason": e.reason,
        "request_id": e.request_id,
    }
