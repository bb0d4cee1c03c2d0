"""One record of a data export each: which columns, under which names, in which units.

Columns are listed explicitly, never `SELECT *` of a table with secrets: an API key's hash,
a session's token hash and its CSRF token are left out by construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from image_router.db.tables import ApiKey, WebSession
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
