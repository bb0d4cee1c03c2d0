"""The account holder's own account over HTTP (privacy-payments.md §4.2).

- `GET /v1/account`: profile, balance, privacy choices, restriction, policy versions (DSR-1);
- `PATCH /v1/account`: correct the name and e-mail (local sign-in only; DSR-3). The
  e-mail, where password resets go, needs a recent website sign-in, never an API key;
- `GET/PATCH /v1/account/preferences`: the three privacy switches (DSR-5);
- `POST /v1/account/restriction`: restrict processing (Art. 18; DSR-4); only an operator
  lifts it;
- `GET /v1/account/usage`: the usage log, with prompts where they are stored.

All take a website session (cookie, with the CSRF header for changes), a Clerk session
token, or an API key of the account. Errors are OpenAI-style `{"error": {...}}` bodies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from image_router.api.bodies import read_model
from image_router.api.deps import ResourcesDep
from image_router.api.identity import IdentityDep, require_recent_sign_in
from image_router.api.request_models import AccountChanges, PreferenceChanges, RestrictionRequest
from image_router.api.responses import json_response
from image_router.db.session import unit_of_work
from image_router.errors import Conflict, Forbidden, InvalidRequest, NotFound
from image_router.kit.clock import iso
from image_router.kit.money import format_usd
from image_router.observability.logging import request_id
from image_router.privacy import preferences, profile, restriction
from image_router.privacy.preferences import PreferenceError
from image_router.privacy.profile import (
    AccountDetails,
    EmailTaken,
    ManagedElsewhere,
    ProfileError,
    UnknownAccount,
    UsageRow,
)

router = APIRouter(tags=["account"])


def privacy_version(request: Request) -> str | None:
    """The current privacy policy version, when the legal documents are loaded."""
    site = getattr(request.app.state, "legal", None)
    documents = getattr(site, "documents", None)
    version = getattr(getattr(documents, "privacy", None), "version", None)
    return version if isinstance(version, str) else None


def account_body(details: AccountDetails) -> dict[str, Any]:
    return {
        "object": "account",
        "id": details.id,
        "email": details.email,
        "name": details.name,
        "role": details.role,
        "status": details.status,
        "created_at": iso(details.created_at),
        "auth_provider": details.auth_provider,
        "balance": {"usd": format_usd(details.balance), "credits": details.balance},
        "preferences": details.preferences.as_dict(),
        "restriction": {
            "restricted": details.restriction.restricted,
            "reason": details.restriction.reason,
            "restricted_at": iso(details.restriction.restricted_at),
            "lift_notified_at": iso(details.restriction.lift_notified_at),
        },
        "legal": {
            "terms_version_accepted": details.legal.terms_version_accepted,
            "terms_accepted_at": iso(details.legal.terms_accepted_at),
            "privacy_version_notified": details.legal.privacy_version_notified,
        },
    }


@router.get("/v1/account")
async def get_account(identity: IdentityDep, res: ResourcesDep) -> Response:
    try:
        async with unit_of_work(res.engine) as conn:
            details = await profile.account_details(conn, res.vault, identity.account_id)
    except UnknownAccount as exc:
        raise NotFound(str(exc)) from None
    return json_response(account_body(details))


@router.patch("/v1/account")
async def patch_account(request: Request, identity: IdentityDep, res: ResourcesDep) -> Response:
    changes = (await read_model(request, AccountChanges)).changes()
    if "email" in changes:
        # The e-mail is where password resets go: a leaked API key must not redirect them.
        if identity.via == "api_key":
            raise Forbidden(
                "Changing the e-mail address needs a website sign-in, not an API key",
                code="session_required",
            )
        require_recent_sign_in(identity, res)
    try:
        async with unit_of_work(res.engine) as conn:
            details = await profile.rectify(
                conn,
                res.vault,
                identity.account_id,
                identity_managed_elsewhere=res.settings.auth.auth_provider == "clerk",
                channel="api",
                **changes,
            )
    except ManagedElsewhere as exc:
        raise Conflict(str(exc), code="managed_by_identity_provider") from None
    except EmailTaken as exc:
        raise Conflict(str(exc), param="email", code="email_taken") from None
    except ProfileError as exc:
        raise InvalidRequest(str(exc)) from None
    except ValueError as exc:  # normalise_email's AccountError
        raise InvalidRequest(str(exc), param="email") from None
    return json_response(account_body(details))


@router.get("/v1/account/preferences")
async def get_preferences(identity: IdentityDep, res: ResourcesDep) -> Response:
    async with unit_of_work(res.engine) as conn:
        current = await preferences.get_preferences(conn, identity.account_id)
    return json_response(current.as_dict())


@router.patch("/v1/account/preferences")
async def patch_preferences(request: Request, identity: IdentityDep, res: ResourcesDep) -> Response:
    changes = (await read_model(request, PreferenceChanges)).root
    try:
        async with unit_of_work(res.engine) as conn:
            current = await preferences.update_preferences(
                conn,
                identity.account_id,
                changes,
                source="api",
                document_version=privacy_version(request),
            )
    except PreferenceError as exc:
        raise InvalidRequest(str(exc), param=exc.param) from None
    return json_response(current.as_dict())


@router.post("/v1/account/restriction")
async def post_restriction(request: Request, identity: IdentityDep, res: ResourcesDep) -> Response:
    reason = (await read_model(request, RestrictionRequest)).reason
    try:
        async with unit_of_work(res.engine) as conn:
            state = await restriction.request_restriction(
                conn,
                res.vault,
                identity.account_id,
                reason=(reason or "").strip() or None,
                channel="api",
                request_id=request_id.get(),
            )
    except restriction.RestrictionError as exc:
        raise InvalidRequest(str(exc)) from None
    return json_response(
        {
            "restricted": state.restricted,
            "reason": state.reason,
            "restricted_at": iso(state.restricted_at),
            "changed": state.changed,
        },
        status=201 if state.changed else 200,
    )


def usage_body(row: UsageRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "modality": row.modality,
        "model": row.model,
        "provider": row.provider,
        "status": row.status,
        "cost": format_usd(row.cost),
        "latency_ms": row.latency_ms,
        "size": row.size,
        "quality": row.quality,
        "seconds": row.seconds,
        "api_key_id": row.api_key_id,
        "prompt": row.prompt,
        "prompt_stored": row.prompt_stored,
        "output_urls": row.output_urls,
        "outputs_expire_at": iso(row.outputs_expire_at),
        "content_deleted_at": iso(row.content_deleted_at),
        "error": row.error,
    }


def parse_before(value: str | None) -> str | datetime | None:
    """`before` is a usage id (a page's `next_before`) or an ISO 8601 time."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@router.get("/v1/account/usage")
async def get_usage(
    identity: IdentityDep, res: ResourcesDep, limit: str = "50", before: str | None = None
) -> Response:
    try:
        count = int(limit)
    except ValueError:
        raise InvalidRequest("'limit' must be a whole number", param="limit") from None
    try:
        async with unit_of_work(res.engine) as conn:
            page = await profile.usage_page(
                conn, res.vault, identity.account_id, limit=count, before=parse_before(before)
            )
    except ProfileError as exc:
        param = "limit" if str(exc).startswith("limit") else "before"
        raise InvalidRequest(str(exc), param=param) from None
    return json_response(
        {
            "object": "list",
            "data": [usage_body(row) for row in page.rows],
            "has_more": page.next_before is not None,
            "next_before": page.next_before,
        }
    )
