"""Talking to Google Cloud: service-account access tokens and Google's error model.

The credential (GOOGLE_SERVICE_ACCOUNT_KEY) is the base64 of a service-account JSON key.
We sign an RS256 assertion with its private key and exchange it at the OAuth token
endpoint (the RFC 7523 jwt-bearer grant, as Google's own client libraries do), then reuse
the access token until shortly before it expires. Only one refresh runs at a time, so a
burst of requests on a cold cache costs one exchange, not one each.

`google_error` maps Google's error model (`{"error": {code, message, status}}` answers and
failed long-running operations) onto the upstream error tree, with the reference's
switch/retry strings (spec §7.2) checked first.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_for_status,
    response_json,
)
from image_router.providers.upstream_text import (
    ACCOUNT_LIMIT_PHRASES,
    OUR_KEY_PHRASES,
    RETRYABLE_PHRASES,
    PhraseRules,
    error_body,
    first_match,
)

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Google refuses assertions that live longer than an hour.
ASSERTION_LIFETIME_S = 3600
#: Refresh this long before expiry, so a token never lapses during a slow request.
REFRESH_MARGIN_S = 300.0
INVALID_KEY_MESSAGE = "Invalid GOOGLE_SERVICE_ACCOUNT_KEY format. Must be base64 encoded JSON."


@dataclass(frozen=True)
class ServiceAccount:
    """The parts of a service-account key that signing needs."""

    client_email: str
    private_key: str = field(repr=False)
    private_key_id: str | None = None
    token_uri: str | None = None


def parse_service_account(encoded: str, *, provider: str) -> ServiceAccount:
    """Decode GOOGLE_SERVICE_ACCOUNT_KEY; any malformation is our configuration's fault."""
    text = "".join(encoded.split()).translate(str.maketrans("-_", "+/"))
    try:
        info = json.loads(base64.b64decode(text + "=" * (-len(text) % 4)).decode("utf-8"))
    except (binascii.Error, ValueError):
        # Never chain the decoding error: its message may quote parts of the secret.
        raise UpstreamMisconfiguredError(INVALID_KEY_MESSAGE, provider=provider) from None
    if not isinstance(info, Mapping):
        raise UpstreamMisconfiguredError(INVALID_KEY_MESSAGE, provider=provider)
    email, key = info.get("client_email"), info.get("private_key")
    if not isinstance(email, str) or not email or not isinstance(key, str) or not key:
        raise UpstreamMisconfiguredError(
            "GOOGLE_SERVICE_ACCOUNT_KEY has no client_email or private_key: "
            "it must be a service-account key",
            provider=provider,
        )
    key_id, token_uri = info.get("private_key_id"), info.get("token_uri")
    return ServiceAccount(
        client_email=email,
        private_key=key,
        private_key_id=key_id if isinstance(key_id, str) and key_id else None,
        token_uri=token_uri if isinstance(token_uri, str) and token_uri else None,
    )


def sign_assertion(account: ServiceAccount, token_url: str, now: int, *, provider: str) -> str:
    """The RS256 JWT that asks `token_url` for a cloud-platform access token."""
    claims = {
        "iss": account.client_email,
        "scope": SCOPE,
        "aud": token_url,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_S,
    }
    headers = {"kid": account.private_key_id} if account.private_key_id else None
    try:
        return jwt.encode(claims, account.private_key, algorithm="RS256", headers=headers)
    except NotImplementedError:
        raise UpstreamMisconfiguredError(
            "signing Google service-account assertions needs the 'cryptography' package",
            provider=provider,
        ) from None
    except (ValueError, TypeError, jwt.PyJWTError):
        raise UpstreamMisconfiguredError(
            "the private_key of GOOGLE_SERVICE_ACCOUNT_KEY is not a usable RSA PEM key",
            provider=provider,
        ) from None


def token_error(provider: str, status: int, body: Any) -> UpstreamError:
    """Classify a refused exchange: a 400/401 means Google does not accept our key."""
    message = f"Google's token endpoint answered HTTP {status}"
    if isinstance(body, Mapping) and isinstance(body.get("error"), str):
        description = body.get("error_description")
        message = f"Google refused the service-account key: {body['error']}" + (
            f": {description}" if isinstance(description, str) and description else ""
        )
    if status in (400, 401):
        return UpstreamMisconfiguredError(message, provider=provider, status=status, body=body)
    return error_for_status(provider, status, message, body)


class AccessTokens:
    """A cached access token for one service account, refreshed under a lock."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        account: ServiceAccount,
        token_url: str,
        *,
        provider: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._account = account
        self._token_url = token_url
        self._provider = provider
        self._clock = clock
        self._lock = asyncio.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    async def get(self) -> str:
        """A token valid for at least a few more minutes."""
        token = self._current()
        if token is not None:
            return token
        async with self._lock:
            # Another task may have refreshed while this one waited for the lock.
            token = self._current()
            if token is None:
                token = await self._exchange()
            return token

    def invalidate(self, token: str) -> None:
        """Forget `token` after the API refused it (revoked or expired early)."""
        if self._token == token:
            self._token = None

    def _current(self) -> str | None:
        if self._token is not None and self._clock() < self._refresh_at:
            return self._token
        return None

    async def _exchange(self) -> str:
        # Expiry is tracked on `clock` (monotonic: immune to wall-clock jumps); the
        # assertion itself must carry wall-clock time, which Google checks.
        now = self._clock()
        assertion = sign_assertion(
            self._account, self._token_url, int(time.time()), provider=self._provider
        )
        response = await self._http.post(
            self._token_url,
            data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion},
            headers={"Accept": "application/json"},
        )
        if response.is_error:
            raise token_error(self._provider, response.status_code, error_body(response))
        body = response_json(self._provider, response)
        token = body.get("access_token") if isinstance(body, Mapping) else None
        lifetime = body.get("expires_in", ASSERTION_LIFETIME_S) if token else None
        if not isinstance(token, str) or not isinstance(lifetime, int | float):
            raise UpstreamProtocolError(
                "Google's token endpoint answered without an access token",
                provider=self._provider,
                status=response.status_code,
            )
        self._token = token
        self._refresh_at = now + lifetime - min(REFRESH_MARGIN_S, lifetime / 2)
        return token


# ---------------------------------------------------------------------------- Google errors

#: google.rpc.Code numbers (failed operations carry these) by name, in code order.
GOOGLE_CODES = dict(
    enumerate(
        [
            "OK",
            "CANCELLED",
            "UNKNOWN",
            "INVALID_ARGUMENT",
            "DEADLINE_EXCEEDED",
            "NOT_FOUND",
            "ALREADY_EXISTS",
            "PERMISSION_DENIED",
            "RESOURCE_EXHAUSTED",
            "FAILED_PRECONDITION",
            "ABORTED",
            "OUT_OF_RANGE",
            "UNIMPLEMENTED",
            "INTERNAL",
            "UNAVAILABLE",
            "DATA_LOSS",
            "UNAUTHENTICATED",
        ]
    )
)
_BY_STATUS: Mapping[str, type[UpstreamError]] = {
    # Our credentials, project, catalog model name or request shape: not the user's fault.
    **dict.fromkeys(
        ("UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION"),
        UpstreamMisconfiguredError,
    ),
    "UNIMPLEMENTED": UpstreamMisconfiguredError,
    "RESOURCE_EXHAUSTED": UpstreamRateLimitedError,
    "DEADLINE_EXCEEDED": UpstreamTimeoutError,
    **dict.fromkeys(
        ("INTERNAL", "UNAVAILABLE", "UNKNOWN", "ABORTED", "CANCELLED", "DATA_LOSS"),
        UpstreamUnavailableError,
    ),
    "INVALID_ARGUMENT": UpstreamRejectedError,
    "OUT_OF_RANGE": UpstreamRejectedError,
}
# Spec §7.2 as far as Google says those things; checked before the status, first match
# wins (so Google's per-model quota is a rate limit, its deadline a timeout).
_MESSAGE_RULES: PhraseRules = (
    (
        UpstreamRateLimitedError,
        (*ACCOUNT_LIMIT_PHRASES, "online_prediction_requests_per_base_model"),
    ),
    (
        UpstreamMisconfiguredError,
        (
            *OUR_KEY_PHRASES,
            "billing account",
            "invalid json payload received",  # our request shape, not the user's input
        ),
    ),
    (UpstreamTimeoutError, ("deadline expired before operation could complete",)),
    (UpstreamUnavailableError, (*RETRYABLE_PHRASES, "the model is overloaded")),
)


def google_error(
    message: str, status: str | None, http_status: int | None, body: Any, *, provider: str
) -> UpstreamError:
    """One Google error (an HTTP answer or a failed operation) as an `UpstreamError`."""
    args: dict[str, Any] = {"provider": provider, "status": http_status, "body": body}
    cls = first_match(message, _MESSAGE_RULES)
    if cls is not None:
        return cls(message, code=status, **args)
    if status is not None and status in _BY_STATUS:
        return _BY_STATUS[status](message, code=status, **args)
    if http_status is not None:
        return error_for_status(provider, http_status, message, body, status)
    return UpstreamUnavailableError(message, code=status, **args)


def error_from_response(http_status: int, body: Any, *, provider: str) -> UpstreamError:
    """Classify a Google error answer: `{"error": {code, message, status, details}}`."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]  # some Google front ends wrap the error in a list
    error = body.get("error") if isinstance(body, Mapping) else None
    fallback = f"Google answered HTTP {http_status}"
    if not isinstance(error, Mapping):
        return error_for_status(provider, http_status, fallback, body)
    status = error.get("status")
    message = str(error.get("message") or fallback)
    return google_error(
        message, status if isinstance(status, str) else None, http_status, body, provider=provider
    )


def operation_error(error: Mapping[str, Any], body: Any, *, provider: str) -> UpstreamError:
    """A finished long-running operation's `error` (a google.rpc.Status)."""
    code = error.get("code")
    status = GOOGLE_CODES.get(code) if isinstance(code, int) else None
    message = f"Vertex AI video generation failed: {error.get('message') or dict(error)}"
    return google_error(message, status, None, body, provider=provider)
