"""Who is calling: one `Identity` for the API and the website, resolved by dependencies.

An identity comes from one of five credentials:

- `api_key` and `management_key`: `Authorization: Bearer <key>` (a management key only
  manages keys; `ManagerDep` takes nothing else);
- `web_token`: `Bearer <JWT>` minted by `POST /v1/web-token` for the website's own calls;
- `session`: our `ir_session` cookie (local sign-in);
- `clerk`: Clerk's `__session` cookie, or `Bearer eyJ…` (a Clerk session token from another
  origin, CLK-9) in Clerk mode.

Cookie-authenticated API requests that change state must prove they come from our pages
(the `X-CSRF-Token` header carrying the session's token, or a same-origin `Origin`); the
website's own forms are checked by `web/common.py`. Destructive operations (erasure, export,
new credentials) need a recent sign-in, which API keys never have.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError

from image_router.account import web_tokens
from image_router.account.key_cache import authenticate
from image_router.account.service import Caller
from image_router.account.sessions import SessionView, load_session
from image_router.api.clerk import SESSION_COOKIE as CLERK_SESSION_COOKIE
from image_router.api.clerk import looks_like_session_token, session_view, sign_in_with_token
from image_router.api.deps import ResourcesDep, client_ip
from image_router.db.outage import is_outage
from image_router.db.session import unit_of_work
from image_router.errors import Forbidden, InternalError, Unauthenticated
from image_router.kit.clock import utcnow
from image_router.kit.ids import API_KEY_LENGTH
from image_router.resources import Resources

log = logging.getLogger(__name__)

SESSION_COOKIE = "ir_session"
CSRF_HEADER = "x-csrf-token"
JWT_MIN_LENGTH = web_tokens.MIN_TOKEN_LENGTH
INVALID_MANAGEMENT_KEY = "Invalid management API key"
NOT_MANAGEMENT_KEY = (
    "This API key is not a management key. Key management needs a management key "
    "(operator: image-router keys create EMAIL --management)"
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SESSION_STATE = "image_router.web_session"

Via = Literal["api_key", "management_key", "web_token", "session", "clerk"]


@dataclass(frozen=True)
class Identity:
    account_id: str
    via: Via
    # When the person last proved who they are (password, Clerk first factor); None for
    # keys and website tokens, which therefore never pass `require_recent_sign_in`.
    authenticated_at: datetime | None = None
    # Keys and website tokens: the key's state that generation and the limits read.
    caller: Caller | None = None


def session_identity(session: SessionView, res: Resources) -> Identity:
    via: Via = "clerk" if res.settings.auth.auth_provider == "clerk" else "session"
    return Identity(session.account_id, via, session.authenticated_at)


def signed_in_recently(identity: Identity, res: Resources) -> bool:
    """CLK-8: a sign-in within REVERIFY_MAX_MINUTES."""
    limit = timedelta(minutes=res.settings.auth.reverify_max_minutes)
    at = identity.authenticated_at
    return at is not None and utcnow() - at <= limit


def require_recent_sign_in(identity: Identity, res: Resources) -> None:
    """Erasure, export and new credentials need a recent sign-in (CLK-8)."""
    if not signed_in_recently(identity, res):
        raise Forbidden(
            f"Sign in again to confirm it is you (needed within "
            f"{res.settings.auth.reverify_max_minutes} minutes for this action)",
            code="reverification_required",
        )


# ------------------------------------------------------------------------- credentials


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None or not header.startswith("Bearer "):
        return None
    return header[7:].strip()


def _missing_authorization() -> Unauthenticated:
    return Unauthenticated(
        "Authorization header must be provided as Bearer token", code="missing_authorization"
    )


async def _key_identity(res: Resources, token: str) -> Identity | None:
    """The identity of an API key (only keys of active accounts), or None."""
    try:
        # Remembered for AUTH_CACHE_TTL_S at most; any change to the key or its account
        # clears it everywhere before that change's call returns (account/key_cache.py).
        caller = await authenticate(res.key_changes.cache, res.engine, token)
    except SQLAlchemyError as exc:
        if is_outage(exc):
            raise  # the app answers 503 database_unavailable (app.py `_database_outage`)
        log.exception("database error while validating an API key")
        raise InternalError("Error validating API key") from exc
    if caller is None:
        return None
    via: Via = "management_key" if caller.is_management else "api_key"
    return Identity(caller.account_id, via, caller=caller)


async def _web_token_identity(request: Request, res: Resources, token: str) -> Identity:
    secret = res.web_token_secret
    if not secret:
        # Without a secret no website token was ever minted here, so none can be valid.
        raise Unauthenticated(web_tokens.INVALID_MESSAGE, code="invalid_token")
    claims = web_tokens.verify(secret, token)
    try:
        # A unit of work: the first guest token creates the shared guest account.
        async with unit_of_work(res.engine) as conn:
            caller = await web_tokens.caller_for(conn, res.vault, claims, client_ip(request))
    except SQLAlchemyError as exc:
        if is_outage(exc):
            raise  # the app answers 503 database_unavailable (app.py `_database_outage`)
        log.exception("database error while validating a website token")
        raise InternalError("Error validating API key") from exc
    return Identity(caller.account_id, "web_token", caller=caller)


async def current_session(request: Request, res: Resources) -> SessionView | None:
    """The live website session of this request's cookie, or None (read once per request)."""
    if _SESSION_STATE in request.scope:
        cached: SessionView | None = request.scope[_SESSION_STATE]
        return cached
    session = None
    if res.clerk is not None:
        # Clerk mode: Clerk's own session cookie; ours (`ir_session`) means nothing here.
        clerk_token = request.cookies.get(CLERK_SESSION_COOKIE)
        if clerk_token:
            session = await session_view(request, res, clerk_token)
    elif token := request.cookies.get(SESSION_COOKIE):
        async with unit_of_work(res.engine) as conn:
            session = await load_session(conn, res.vault, token)
    request.scope[_SESSION_STATE] = session
    return session


# ------------------------------------------------------------------------ dependencies


async def get_caller(request: Request, res: ResourcesDep) -> Caller:
    """An API key or a website token, resolved exactly as the reference does (spec §4)."""
    token = _bearer(request)
    if token is None:
        raise _missing_authorization()
    if len(token) == API_KEY_LENGTH:
        identity = await _key_identity(res, token)
        if identity is None:
            raise Unauthenticated("Invalid API key")
    elif len(token) >= JWT_MIN_LENGTH:
        identity = await _web_token_identity(request, res, token)
    else:
        raise Unauthenticated(
            f"Invalid authorization token length: {len(token)}", code="invalid_token_length"
        )
    assert identity.caller is not None  # keys and website tokens always carry theirs
    return identity.caller


async def get_manager(request: Request, res: ResourcesDep) -> Identity:
    """A management key; normal keys get 401 `not_management_key`, which says what is
    needed instead, and anything else 401 `invalid_management_key`."""
    token = _bearer(request)
    if token is None:
        raise _missing_authorization()
    identity = None
    if len(token) == API_KEY_LENGTH:  # website tokens are longer and never manage keys
        identity = await _key_identity(res, token)
    if identity is None:
        raise Unauthenticated(INVALID_MANAGEMENT_KEY, code="invalid_management_key")
    if identity.via != "management_key":
        raise Unauthenticated(NOT_MANAGEMENT_KEY, code="not_management_key")
    return identity


async def get_identity(request: Request, res: ResourcesDep) -> Identity:
    """A person acting on their account: a website session, a Clerk session token or one of
    their (normal) API keys."""
    token = _bearer(request)
    if token is not None:
        if res.clerk is not None and looks_like_session_token(token):
            # A Clerk session token from another origin (CLK-9); API keys never get here.
            signed = await sign_in_with_token(request, res, token)
            return Identity(signed.account_id, "clerk", signed.session.verified_at)
        return await _account_key_identity(res, token)
    session = await current_session(request, res)
    if session is None:
        raise Unauthenticated("Sign in to manage your account", code="sign_in_required")
    if request.method not in _SAFE_METHODS and not _same_site(request, res, session.csrf_token):
        raise Forbidden(
            "This request did not come from this site (missing X-CSRF-Token)", code="csrf_failed"
        )
    return session_identity(session, res)


async def _account_key_identity(res: Resources, token: str) -> Identity:
    identity = await _key_identity(res, token) if len(token) == API_KEY_LENGTH else None
    if identity is None:
        raise Unauthenticated("Invalid API key")
    if identity.via == "management_key":
        raise Forbidden(
            "A management key manages API keys only; use a regular key or sign in",
            code="management_key",
        )
    return identity


def _same_site(request: Request, res: Resources, csrf_token: str) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if sent is not None:
        return sent == csrf_token
    origin = request.headers.get("origin")
    if origin is None:
        return False
    allowed = {str(request.base_url).rstrip("/")}
    for configured in (res.settings.serving.public_url, res.settings.payments.site_url):
        if configured:
            allowed.add(configured.rstrip("/"))
    allowed.update(res.settings.clerk.clerk_authorized_parties)
    return origin.rstrip("/") in allowed


async def get_session(request: Request, res: ResourcesDep) -> SessionView | None:
    return await current_session(request, res)


CallerDep = Annotated[Caller, Depends(get_caller)]
ManagerDep = Annotated[Identity, Depends(get_manager)]
IdentityDep = Annotated[Identity, Depends(get_identity)]
SessionDep = Annotated[SessionView | None, Depends(get_session)]
