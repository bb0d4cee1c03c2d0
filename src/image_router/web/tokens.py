"""`POST /v1/web-token`: a short-lived token for the website's own API calls (spec §4).

A signed-in browser gets a token for its account and must send its session's CSRF token in
`X-CSRF-Token` (the cookie alone proves nothing about who built the request). Anyone else
gets a guest token, bound to their address.
"""

from __future__ import annotations

import secrets

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from image_router.account.web_tokens import GUEST_USER_ID, mint
from image_router.api.deps import ResourcesDep, client_ip
from image_router.errors import Forbidden, GatewayError
from image_router.web.common import current_session

router = APIRouter(tags=["website"])


class WebTokensUnavailable(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "web_tokens_disabled"


@router.post("/v1/web-token")
async def web_token(request: Request, res: ResourcesDep) -> Response:
    """Mint a website token for the signed-in account (cookie + `X-CSRF-Token`) or a guest."""
    secret = res.settings.jwt_secret.get_secret_value() if res.settings.jwt_secret else ""
    if not secret:
        raise WebTokensUnavailable(
            "Website tokens are not available: the operator has not set JWT_SECRET"
        )
    session = await current_session(request)
    user_id = GUEST_USER_ID
    if session is not None:
        given = request.headers.get("x-csrf-token", "")
        if not given or not secrets.compare_digest(given, session.csrf_token):
            raise Forbidden("Missing or invalid X-CSRF-Token header", code="csrf_failed")
        user_id = session.account_id
    token, exp = mint(secret, user_id, client_ip(request), res.settings.web_token_ttl_s)
    body = {"token": token, "expires_at": exp, "user_id": user_id}
    return Response(
        orjson.dumps(body), media_type="application/json", headers={"Cache-Control": "no-store"}
    )
