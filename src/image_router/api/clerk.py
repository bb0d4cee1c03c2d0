"""Clerk over HTTP: the user webhook, signing requests in with session tokens, sign-in pages.

- `POST /webhooks/clerk` (SVX-1…6) is public: the Svix signature over the raw body is the
  authentication. Any verification failure, however malformed the headers, answers 400.
- `sign_in_with_token` turns a Clerk session token (the `__session` cookie, or
  `Authorization: Bearer eyJ…` from another origin) into an account: `identity.py` calls
  it. Only JWT-shaped bearer tokens come here, so our API keys are
  never mistaken for Clerk tokens, and no token is ever sent to Clerk (CLK-9).
- In Clerk mode our own sign-in, sign-up and password pages redirect to Clerk's
  (CLERK_SIGN_IN_URL), which sends the person back to `/account`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account import clerk_users
from image_router.account.clerk import (
    ClerkAuth,
    ClerkSession,
    ClerkUnavailable,
    InvalidSessionToken,
)
from image_router.account.personal_data import Vault
from image_router.account.sessions import SessionView
from image_router.api.bodies import read_limited
from image_router.api.deps import ResourcesDep
from image_router.api.responses import json_response
from image_router.config import Settings
from image_router.db.session import unit_of_work
from image_router.db.tables import Account
from image_router.errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    Unauthenticated,
)
from image_router.resources import Resources, public_url

log = logging.getLogger(__name__)

SESSION_COOKIE = "__session"  # set by Clerk's browser script on our domain
_MAX_WEBHOOK_BODY = 1024 * 1024  # a user event is a few kilobytes
_LOCAL_ONLY_PAGES = ("/signin", "/signup", "/password/forgot", "/password/reset")


class QueueErasure(Protocol):
    """`privacy.erasure.queue_erasure`, handed in by the app (services do not reach up)."""

    async def __call__(
        self,
        conn: AsyncConnection,
        vault: Vault,
        account_id: str,
        *,
        channel: str,
        delete_clerk_user: bool,
    ) -> datetime: ...


class AuthUnavailable(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "auth_unavailable"


@dataclass(frozen=True)
class ClerkSignIn:
    account_id: str
    session: ClerkSession


def looks_like_session_token(token: str) -> bool:
    """A JWT (`eyJ…`, three parts): never one of our API keys (`ir-…`)."""
    return token.startswith("eyJ") and token.count(".") == 2


def _clerk(res: Resources) -> ClerkAuth:
    if res.clerk is None:
        raise NotFound("Clerk is not configured here (AUTH_PROVIDER=local)")
    return res.clerk


def mirror_policy(request: Request, res: Resources) -> clerk_users.MirrorPolicy:
    # The terms in force are recorded with Clerk's "accepted" checkbox (LEG-4).
    legal = getattr(request.app.state, "legal", None)
    return clerk_users.MirrorPolicy(
        store_prompts=res.settings.privacy.default_store_prompts,
        terms_version=legal.documents.terms.version if legal is not None else None,
    )


async def sign_in_with_token(request: Request, res: Resources, token: str) -> ClerkSignIn:
    """The active account of a valid session token; 401 for anything else (CLK-1…7)."""
    clerk = _clerk(res)
    try:
        session = await clerk.verifier.verify(token)
        account_id = await clerk_users.account_for_session(
            res.engine, res.vault, clerk.backend, session.subject, mirror_policy(request, res)
        )
    except InvalidSessionToken as exc:
        log.info("Clerk session token refused: %s", exc)
        raise Unauthenticated(
            "Your session is invalid or has expired; sign in again", code="invalid_session"
        ) from None
    except ClerkUnavailable as exc:
        log.error("Clerk unavailable while signing a request in: %s", exc)
        raise AuthUnavailable("Sign-in is unavailable right now; try again shortly") from None
    if account_id is None:
        raise Unauthenticated("This account has been closed", code="account_closed")
    return ClerkSignIn(account_id, session)


async def session_view(request: Request, res: Resources, token: str) -> SessionView | None:
    """The website session of a `__session` cookie, or None when it does not sign in."""
    try:
        signed = await sign_in_with_token(request, res, token)
    except Unauthenticated:
        return None
    async with unit_of_work(res.engine) as conn:
        return await _view(conn, res, signed)


async def _view(conn: AsyncConnection, res: Resources, signed: ClerkSignIn) -> SessionView | None:
    row = (
        await conn.execute(
            select(Account.email_enc, Account.role, Account.balance).where(
                Account.id == signed.account_id
            )
        )
    ).first()
    if row is None:
        return None
    session = signed.session
    return SessionView(
        id=session.session_id,
        account_id=signed.account_id,
        email=await res.vault.open(signed.account_id, row.email_enc) or "",
        role=row.role,
        balance=int(row.balance),
        csrf_token=_clerk(res).csrf_token(session.session_id),
        expires_at=datetime.fromtimestamp(session.expires_at, UTC),
        authenticated_at=session.verified_at,
    )


# ------------------------------------------------------------------------------ routes


async def handle_webhook(request: Request, res: Resources, queue_erasure: QueueErasure) -> Response:
    """Clerk's user events (user.created, user.updated, user.deleted) via Svix."""
    clerk = _clerk(res)
    if clerk.webhook is None:
        raise NotFound("Clerk webhooks are not configured (CLERK_WEBHOOK_SIGNING_SECRET)")
    body = await read_limited(request, _MAX_WEBHOOK_BODY)
    headers = dict(request.headers)
    try:
        # svix 2.9.1 raises binascii.Error or ValueError on malformed signature headers, not
        # only WebhookVerificationError: whatever fails here is the sender's problem (SVX-1).
        clerk.webhook.verify(body, headers)
    except Exception:
        raise InvalidRequest("Invalid webhook signature", code="invalid_signature") from None
    message_id = headers.get("svix-id") or headers.get("webhook-id") or ""
    if not 0 < len(message_id) <= 255:
        raise InvalidRequest("The message id header is missing or too long")
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The webhook body is not JSON") from None
    if not isinstance(event, dict):
        raise InvalidRequest("The webhook body is not a Clerk event")

    async def erase(conn: AsyncConnection, account_id: str) -> datetime:
        # SVX-5: the erasure of DELETE /v1/account, minus deleting the user at Clerk.
        return await queue_erasure(
            conn, res.vault, account_id, channel="clerk", delete_clerk_user=False
        )

    try:
        outcome = await clerk_users.process_event(
            res.engine, res.vault, message_id, event, mirror_policy(request, res), erase
        )
    except clerk_users.InvalidUserEvent as exc:
        raise InvalidRequest(str(exc), code="invalid_event") from None
    log.info("clerk webhook %s (%s): %s", message_id, event.get("type"), outcome)
    return json_response({"received": True, "outcome": outcome})


async def to_clerk_sign_in(request: Request, res: ResourcesDep) -> Response:
    """In Clerk mode people sign in (and up) at Clerk, which sends them back here."""
    target = _clerk(res).sign_in_url
    if not target:
        raise NotFound("Sign-in is handled by Clerk; the operator has not set CLERK_SIGN_IN_URL")
    site = (res.settings.payments.site_url or public_url(res.settings)).rstrip("/")
    separator = "&" if "?" in target else "?"
    back = urlencode({"redirect_url": f"{site}/account"})
    return RedirectResponse(f"{target}{separator}{back}", status_code=303)


def clerk_routes(settings: Settings, queue_erasure: QueueErasure) -> APIRouter:
    """The webhook; in Clerk mode also the redirects that replace our password pages.

    Include it before the website's pages, so the redirects take precedence.
    """
    router = APIRouter(include_in_schema=False)

    @router.post("/webhooks/clerk")
    async def clerk_webhook(request: Request, res: ResourcesDep) -> Response:
        return await handle_webhook(request, res, queue_erasure)

    if settings.auth.auth_provider == "clerk":
        for path in _LOCAL_ONLY_PAGES:
            router.add_api_route(path, to_clerk_sign_in, methods=["GET", "POST"])
    return router
