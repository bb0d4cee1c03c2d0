"""`POST /v1/web-token`: a short-lived token for the website's own API calls (spec §4).

A signed-in browser gets a token for its account and must send its session's CSRF token in
`X-CSRF-Token` (the cookie alone proves nothing about who built the request). Anyone else
gets a guest token, bound to their address.

A guest, or an account without credit, first proves to be a person (`HUMAN_CHECK=altcha`):
`GET /v1/web-token/challenge` gives an ALTCHA proof-of-work challenge, and the solved
payload comes back as `{"altcha": "<base64>"}` in the body of `POST /v1/web-token`
(`limits/human_check.py`; each payload works once).
"""

from __future__ import annotations

import secrets

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from image_router.account.web_tokens import GUEST_USER_ID, mint
from image_router.api.deps import ResourcesDep, client_ip
from image_router.api.identity import SessionDep
from image_router.api.responses import json_response
from image_router.db.session import autocommit
from image_router.errors import Forbidden, GatewayError, InvalidRequest
from image_router.ledger import service as ledger

router = APIRouter(tags=["website"])

#: The body of `POST /v1/web-token` is at most `{"altcha": "<a few hundred characters>"}`.
MAX_BODY_BYTES = 8192


class WebTokensUnavailable(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "web_tokens_disabled"


def _no_store(body: object) -> Response:
    return json_response(body, headers={"Cache-Control": "no-store"})


@router.get("/v1/web-token/challenge", include_in_schema=False)
async def human_check_challenge(res: ResourcesDep) -> Response:
    """An ALTCHA challenge to solve before a guest's token; `{"required": false}` when the
    operator turned the human check off."""
    if res.human_check is None:
        return _no_store({"required": False})
    return _no_store({"required": True, **res.human_check.challenge()})


@router.post("/v1/web-token")
async def web_token(request: Request, res: ResourcesDep, session: SessionDep) -> Response:
    """Mint a website token for the signed-in account (cookie + `X-CSRF-Token`) or a guest;
    guests and accounts without credit send a solved human check (`{"altcha": ...}`)."""
    secret = res.web_token_secret
    if not secret:
        raise WebTokensUnavailable("Website tokens are not available on this server")
    user_id, funded = GUEST_USER_ID, False
    if session is not None:
        given = request.headers.get("x-csrf-token", "")
        if not given or not secrets.compare_digest(given, session.csrf_token):
            raise Forbidden("Missing or invalid X-CSRF-Token header", code="csrf_failed")
        user_id = session.account_id
        async with autocommit(res.engine) as conn:
            funded = await ledger.balance(conn, user_id) > 0
    if res.human_check is not None and not funded:
        await res.human_check.verify(await _altcha_payload(request))
    token, exp = mint(secret, user_id, client_ip(request), res.settings.auth.web_token_ttl_s)
    return _no_store({"token": token, "expires_at": exp, "user_id": user_id})


async def _altcha_payload(request: Request) -> str | None:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise InvalidRequest("The request body is too large")
    if not raw.strip():
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest('The body must be JSON: {"altcha": "<payload>"}') from None
    value = body.get("altcha") if isinstance(body, dict) else None
    return value if isinstance(value, str) else None
