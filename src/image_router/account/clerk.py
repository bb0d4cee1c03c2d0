"""Clerk: verifying session tokens ourselves, and the two Backend API calls we need.

Session tokens (privacy-payments.md CLK-1…6) are RS256 JWTs that Clerk's browser script
keeps fresh in the `__session` cookie. They are checked here with PyJWT rather than with
Clerk's SDK, which skips `iss` and ignores `sts`. The key is the PEM from the dashboard
(no network at all) or the JWKS, fetched with the shared HTTP client, kept
`CLERK_JWKS_CACHE_S` and fetched again once when a token names a key we do not have (key
rotation); a short cooldown keeps made-up `kid`s from turning into a fetch per request.

The Backend API is used only to read a user who signs in before Clerk's webhook arrived,
and to delete the user when the person erases their account. Nothing but Clerk's own
tokens and secret key is ever sent to Clerk: our API keys never leave this process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from svix.webhooks import Webhook

log = logging.getLogger(__name__)

ALGORITHM = "RS256"
LEEWAY_S = 5  # Clerk's SDKs allow 5 s of clock skew
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "sub", "sid"]
# After any JWKS fetch, an unknown `kid` waits this long before it may cause another one.
KID_MISS_COOLDOWN_S = 10.0
_API_TIMEOUT = httpx.Timeout(10.0)
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.S)


class InvalidSessionToken(ValueError):
    """Not a valid session token for this instance (the caller is signed out)."""


class ClerkUnavailable(RuntimeError):
    """Clerk could not be reached or answered something unexpected."""


@dataclass(frozen=True)
class ClerkSession:
    """The verified claims of a session token."""

    subject: str  # the Clerk user id (`sub`)
    session_id: str  # `sid`
    issued_at: int
    expires_at: int
    authorized_party: str
    # Minutes since the first factor was verified when the token was issued (`fva[0]`);
    # None when Clerk did not say (older tokens, or -1).
    first_factor_age_min: int | None
    claims: Mapping[str, Any] = field(repr=False)

    @property
    def verified_at(self) -> datetime | None:
        """When the person last proved who they are, for step-up checks (CLK-8)."""
        if self.first_factor_age_min is None:
            return None
        issued = datetime.fromtimestamp(self.issued_at, UTC)
        return issued - timedelta(minutes=self.first_factor_age_min)


def load_pem_key(text: str) -> RSAPublicKey:
    """The RSA public key of a PEM, also when pasted as one line (newlines lost or `\\n`)."""
    found = _PEM.search(text.replace("\\n", "\n"))
    if found is None:
        raise ValueError("CLERK_JWT_KEY is not a PEM public key (-----BEGIN PUBLIC KEY-----)")
    label, body = found.group(1), re.sub(r"\s+", "", found.group(2))
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    key = load_pem_public_key(f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n".encode())
    if not isinstance(key, RSAPublicKey):
        raise ValueError("CLERK_JWT_KEY must be an RSA public key")
    return key


class ClerkVerifier:
    """Verifies session tokens (CLK-1…6). Safe to share between concurrent requests."""

    def __init__(
        self,
        *,
        issuer: str,
        authorized_parties: list[str],
        jwt_key: str | None = None,
        jwks_url: str | None = None,
        http: httpx.AsyncClient | None = None,
        jwks_headers: Mapping[str, str] | None = None,
        jwks_cache_s: float = 300.0,
        kid_miss_cooldown_s: float = KID_MISS_COOLDOWN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if jwt_key is None and (jwks_url is None or http is None):
            raise ValueError("a Clerk verifier needs CLERK_JWT_KEY or CLERK_JWKS_URL")
        self.issuer = issuer
        self.authorized_parties = frozenset(p.rstrip("/") for p in authorized_parties)
        self._pem_key = load_pem_key(jwt_key) if jwt_key else None
        self._jwks_url = jwks_url
        self._http = http
        self._jwks_headers = dict(jwks_headers or {})
        self._cache_s = jwks_cache_s
        self._cooldown_s = kid_miss_cooldown_s
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def verify(self, token: str) -> ClerkSession:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidSessionToken(f"not a JWT: {exc}") from None
        # Checked before any key is looked up: `none`, HS256 and friends never cost a fetch.
        if header.get("alg") != ALGORITHM:
            raise InvalidSessionToken(f"algorithm {header.get('alg')!r} is not accepted")
        key = self._pem_key or await self._jwks_key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": REQUIRED_CLAIMS},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidSessionToken(str(exc)) from None
        return self._session(claims)

    def _session(self, claims: dict[str, Any]) -> ClerkSession:
        azp = claims.get("azp")
        if not isinstance(azp, str) or azp.rstrip("/") not in self.authorized_parties:
            raise InvalidSessionToken(f"authorized party {azp!r} is not accepted")
        if claims.get("sts") == "pending":
            # Clerk's SDKs treat a session with open tasks as signed out (CLK-6).
            raise InvalidSessionToken("the session is pending")
        sub, sid = claims.get("sub"), claims.get("sid")
        if not isinstance(sub, str) or not sub or not isinstance(sid, str) or not sid:
            raise InvalidSessionToken("sub and sid must be non-empty strings")
        return ClerkSession(
            subject=sub,
            session_id=sid,
            issued_at=int(claims["iat"]),
            expires_at=int(claims["exp"]),
            authorized_party=azp,
            first_factor_age_min=_first_factor_age(claims.get("fva")),
            claims=claims,
        )

    async def _jwks_key(self, kid: object) -> Any:
        if not isinstance(kid, str) or not kid:
            raise InvalidSessionToken("the token names no key (kid)")
        seen = self._fetched_at
        if seen is not None and self._clock() - seen < self._cache_s and kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if self._fetched_at != seen and kid in self._keys:
                return self._keys[kid]  # another request fetched while this one waited
            if self._should_fetch(kid):
                await self._fetch()
        if kid not in self._keys:
            raise InvalidSessionToken(f"no published key has kid {kid!r}")
        return self._keys[kid]

    def _should_fetch(self, kid: str) -> bool:
        if self._fetched_at is None:
            return True
        age = self._clock() - self._fetched_at
        if age >= self._cache_s:
            return True
        # A kid we do not know: perhaps Clerk rotated its key. Fetch once, not per request.
        return kid not in self._keys and age >= self._cooldown_s

    async def _fetch(self) -> None:
        assert self._http is not None and self._jwks_url is not None
        try:
            response = await self._http.get(
                self._jwks_url, headers=self._jwks_headers, timeout=_API_TIMEOUT
            )
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            if self._keys:
                # Keep verifying with the keys we have; try again after the cooldown.
                log.warning("Clerk JWKS refresh failed, keeping the cached keys: %s", exc)
                self._fetched_at = self._clock() - self._cache_s + self._cooldown_s
                return
            raise ClerkUnavailable(f"cannot fetch Clerk's signing keys: {exc}") from exc
        self._keys = keys
        self._fetched_at = self._clock()


def _parse_jwks(document: object) -> dict[str, Any]:
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError("the JWKS has no key list")
    keys: dict[str, Any] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use") == "enc":
            continue
        kid = entry.get("kid")
        if isinstance(kid, str) and kid:
            try:
                keys[kid] = jwt.PyJWK(entry, algorithm=ALGORITHM).key
            except jwt.PyJWTError:
                continue
    return keys


def _first_factor_age(fva: object) -> int | None:
    if not isinstance(fva, list) or not fva:
        return None
    age = fva[0]
    if isinstance(age, bool) or not isinstance(age, int) or age < 0:
        return None
    return age


class ClerkBackend:
    """The Backend API calls of the mirror and of erasure (CLERK_API_URL, secret key)."""

    def __init__(self, http: httpx.AsyncClient, *, secret_key: str, api_url: str) -> None:
        self._http = http
        self._headers = {"Authorization": f"Bearer {secret_key}"}
        self._base = api_url.rstrip("/")

    async def get_user(self, user_id: str) -> dict[str, Any] | None:
        """The user, or None when Clerk has no such user."""
        response = await self._call("GET", user_id)
        if response.status_code == 404:
            return None
        body = response.json()
        if not isinstance(body, dict):
            raise ClerkUnavailable("Clerk answered a user that is not an object")
        return body

    async def delete_user(self, user_id: str) -> bool:
        """Delete the user; False when it was already gone (which is success too)."""
        response = await self._call("DELETE", user_id)
        return response.status_code != 404

    async def _call(self, method: str, user_id: str) -> httpx.Response:
        url = f"{self._base}/v1/users/{quote(user_id, safe='')}"
        try:
            response = await self._http.request(
                method, url, headers=self._headers, timeout=_API_TIMEOUT
            )
        except httpx.HTTPError as exc:
            raise ClerkUnavailable(f"Clerk {method} /v1/users failed: {exc}") from exc
        if response.status_code != 404 and not response.is_success:
            raise ClerkUnavailable(f"Clerk {method} /v1/users answered {response.status_code}")
        return response


@dataclass
class ClerkAuth:
    """Everything Clerk mode needs at request time (built once in `resources`)."""

    verifier: ClerkVerifier
    backend: ClerkBackend | None  # None without CLERK_SECRET_KEY: users come from tokens
    webhook: Webhook | None  # None without CLERK_WEBHOOK_SIGNING_SECRET
    csrf_key: bytes
    sign_in_url: str | None = None

    def csrf_token(self, session_id: str) -> str:
        """The CSRF token of a Clerk session: derived from `sid`, so nothing is stored."""
        return hmac.new(self.csrf_key, b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()


def csrf_key(index_key: bytes) -> bytes:
    """The key of Clerk sessions' CSRF tokens, derived from the blind-index key."""
    return hmac.new(index_key, b"clerk csrf key", hashlib.sha256).digest()


def webhook_verifier(signing_secret: str | None) -> Webhook | None:
    """Svix's verifier for CLERK_WEBHOOK_SIGNING_SECRET; a malformed secret fails here, at
    start-up, rather than turning every delivery into a 400 (Svix decodes leniently)."""
    if not signing_secret:
        return None
    encoded = signing_secret.strip().removeprefix("whsec_")
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        key = b""
    if not key:
        raise ValueError("CLERK_WEBHOOK_SIGNING_SECRET must be the endpoint's whsec_... secret")
    return Webhook(signing_secret.strip())
