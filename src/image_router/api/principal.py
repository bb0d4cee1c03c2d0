"""Who is acting on an account (the account and privacy endpoints, not generation).

A person is authenticated by a website session (our `ir_session` cookie, or Clerk's
`__session` cookie / Bearer session token in Clerk mode) or by one of their API keys.
Cookie-authenticated requests that change state must prove they come from our pages
(the `X-CSRF-Token` header carrying the session's token, or a same-origin `Origin`).
Destructive operations (erasure, export) need a recent sign-in: API keys never qualify.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import Depends, Request

from image_router.account.service import authenticate_key
from image_router.api.clerk import looks_like_session_token, sign_in_with_token
from image_router.api.deps import ResourcesDep
from image_router.db.session import autocommit
from image_router.errors import Forbidden, Unauthenticated
from image_router.kit.clock import utcnow
from image_router.kit.ids import API_KEY_LENGTH
from image_router.resources import Resources
from image_router.web.common import current_session

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Principal:
    account_id: str
    via: Literal["session", "clerk", "api_key"]
    # When the person last proved who they are (password, Clerk first factor); None for
    # API keys, which therefore never pass `require_recent_sign_in`.
    authenticated_at: datetime | None


async def get_principal(request: Request, res: ResourcesDep) -> Principal:
    header = request.headers.get("authorization")
    if header is not None and header.startswith("Bearer "):
        token = header[7:].strip()
        if res.clerk is not None and looks_like_session_token(token):
            # A Clerk session token from another origin (CLK-9); API keys never get here.
            signed = await sign_in_with_token(request, res, token)
            return Principal(signed.account_id, "clerk", signed.session.verified_at)
        return await _bearer_principal(res, token)
    session = await current_session(request)
    if session is None:
        raise Unauthenticated("Sign in to manage your account", code="sign_in_required")
    if request.method not in _SAFE_METHODS and not _same_site(request, res, session.csrf_token):
        raise Forbidden(
            "This request did not come from this site (missing X-CSRF-Token)", code="csrf_failed"
        )
    return Principal(
        session.account_id,
        "clerk" if res.settings.auth_provider == "clerk" else "session",
        session.authenticated_at,
    )


async def _bearer_principal(res: Resources, token: str) -> Principal:
    if len(token) != API_KEY_LENGTH:
        raise Unauthenticated("Invalid API key")
    async with autocommit(res.engine) as conn:
        caller = await authenticate_key(conn, token)  # only keys of active accounts
    if caller is None:
        raise Unauthenticated("Invalid API key")
    if caller.is_management:
        raise Forbidden(
            "A management key manages API keys only; use a regular key or sign in",
            code="management_key",
        )
    return Principal(caller.account_id, "api_key", None)


def _same_site(request: Request, res: Resources, csrf_token: str) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is not None:
        return sent == csrf_token
    origin = request.headers.get("origin")
    if origin is None:
        return False
    allowed = {str(request.base_url).rstrip("/")}
    for configured in (res.settings.public_url, res.settings.site_url):
        if configured:
            allowed.add(configured.rstrip("/"))
    allowed.update(res.settings.clerk_authorized_parties)
    return origin.rstrip("/") in allowed


def require_recent_sign_in(principal: Principal, res: Resources) -> None:
    """CLK-8: erasure and export need a sign-in within REVERIFY_MAX_MINUTES."""
    limit = timedelta(minutes=res.settings.reverify_max_minutes)
    if principal.authenticated_at is None or utcnow() - principal.authenticated_at > limit:
        raise Forbidden(
            f"Sign in again to confirm it is you (needed within "
            f"{res.settings.reverify_max_minutes} minutes for this action)",
            code="reverification_required",
        )


PrincipalDep = Annotated[Principal, Depends(get_principal)]
