"""Deleting the account and deleting usage content over HTTP (DSR-2, DSR-7).

- `DELETE /v1/account` erases the account: a recent sign-in (CLK-8) and the typed
  confirmation `{"confirm": "DELETE MY ACCOUNT"}` are required; without the confirmation
  the 400 says how much prepaid balance would be forfeited. Answers 202 with the legal due
  date; the erasure job does the rest (privacy/erasure.py).
- `DELETE /v1/account/usage/{id}` deletes one usage row's prompt and outputs;
  `DELETE /v1/account/usage[?before=<ISO 8601>]` deletes them for every row (created before
  that moment). Billing metadata stays.

A signed-in person only: API keys are refused (403), so a leaked key cannot erase an
account or its history. Cookie sessions need the CSRF header (identity.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import Response

from image_router.api.bodies import read_model
from image_router.api.deps import ResourcesDep
from image_router.api.identity import Identity, IdentityDep, require_recent_sign_in
from image_router.api.request_models import AccountDeletion
from image_router.api.responses import json_response
from image_router.db.session import unit_of_work
from image_router.errors import Conflict, Forbidden, InvalidRequest, NotFound
from image_router.kit.clock import iso
from image_router.kit.money import format_usd
from image_router.ledger import service as ledger
from image_router.privacy import content
from image_router.privacy.erasure import queue_erasure

router = APIRouter(tags=["account"])

CONFIRMATION = "DELETE MY ACCOUNT"


def _signed_in_only(identity: Identity, action: str) -> None:
    if identity.via == "api_key":
        raise Forbidden(
            f"An API key cannot {action}; sign in on the website to do it",
            code="session_required",
        )


@router.delete("/v1/account")
async def delete_account(request: Request, identity: IdentityDep, res: ResourcesDep) -> Response:
    _signed_in_only(identity, "delete the account")
    require_recent_sign_in(identity, res)
    body = await read_model(request, AccountDeletion, empty_is_object=True)
    if body.confirm != CONFIRMATION:
        async with unit_of_work(res.engine) as conn:
            balance = await ledger.balance(conn, identity.account_id)
        raise InvalidRequest(
            "Deleting your account cannot be undone. Your remaining balance of "
            f"${format_usd(balance)} (USD) will be forfeited, not refunded. To confirm, send "
            f'{{"confirm": "{CONFIRMATION}"}}.',
            param="confirm",
            code="confirmation_required",
        )
    async with unit_of_work(res.engine) as conn:
        due = await queue_erasure(
            conn, res.vault, identity.account_id, channel="api", delete_clerk_user=True
        )
    return json_response({"status": "deletion_pending", "erasure_due_at": iso(due)}, status=202)


@router.delete("/v1/account/usage/{generation_id}")
async def delete_usage_row(
    generation_id: str, identity: IdentityDep, res: ResourcesDep
) -> Response:
    _signed_in_only(identity, "delete usage history")
    try:
        found = await content.delete_generation_content(
            res.engine, res.store, identity.account_id, generation_id
        )
    except content.GenerationRunning as exc:
        raise Conflict(str(exc)) from None
    if not found:
        raise NotFound(f"No usage record with id {generation_id}")
    return json_response({"id": generation_id, "object": "usage", "deleted": True})


@router.delete("/v1/account/usage")
async def delete_usage(
    identity: IdentityDep, res: ResourcesDep, before: str | None = None
) -> Response:
    _signed_in_only(identity, "delete usage history")
    deleted = await content.delete_all_content(
        res.engine, res.store, identity.account_id, before=_moment(before)
    )
    return json_response({"object": "list", "deleted": deleted})


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"'before' must be an ISO 8601 date or date-time, not '{text[:40]}'", param="before"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
