"""A fake Clerk: its signing keys, JWKS, the Backend API's users, and a Svix signer.

- `mint(sub, **claims)` makes a v2 session token signed with the current key (RS256, with
  its `kid`); `claims(...)` is the default claim set, for tests that tamper with it;
- `GET /v1/jwks` (Backend API: needs `Authorization: Bearer <secret key>`) and
  `GET /.well-known/jwks.json` (Frontend API: public) publish the keys; `rotate()` makes a
  new key current and, unless asked to keep it, withdraws the old one;
- `GET /v1/users/{id}` and `DELETE /v1/users/{id}` serve `users` in Clerk's shape, with
  Clerk's error body for unknown ids; `deleted_users` records deletions;
- `requests` (from `FakeVendor`) records every call, so tests count JWKS fetches and can
  check that nothing but Clerk's own credentials ever reached Clerk.

`svix_headers(secret, body)` signs a webhook as Svix does, computed here from the
documented scheme (HMAC-SHA256 over `{id}.{timestamp}.{body}` keyed with the base64 part of
the `whsec_` secret), not with the library the gateway verifies with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.upstream import FakeVendor, Recorded

if TYPE_CHECKING:
    from fastapi import FastAPI

    from tests.conftest import Gateway

ISSUER = "https://clerk.example.test"
ORIGIN = "https://app.example.test"  # the site's origin: the token's `azp`
SECRET_KEY = "sk_test_fake_clerk_0123456789"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"clerk-webhook-secret-for-tests!!").decode()
SIGN_IN_URL = "https://accounts.example.test/sign-in"


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _not_found(kind: str) -> Response:
    error = {
        "message": "not found",
        "long_message": f"{kind} not found",
        "code": "resource_not_found",
    }
    return JSONResponse({"errors": [error]}, status_code=404)


class FakeClerk(FakeVendor):
    def __init__(self, issuer: str = ISSUER, secret_key: str = SECRET_KEY) -> None:
        super().__init__()
        self.issuer = issuer
        self.secret_key = secret_key
        self.keys: dict[str, rsa.RSAPrivateKey] = {}  # kid → key, the published set
        self.current_kid = ""
        self.rotate()
        self.users: dict[str, dict[str, Any]] = {}
        self.deleted_users: list[str] = []
        self.add_route("/v1/jwks", self._backend_jwks, ["GET"])
        self.add_route("/.well-known/jwks.json", self._frontend_jwks, ["GET"])
        self.add_route("/v1/users/{user_id}", self._get_user, ["GET"])
        self.add_route("/v1/users/{user_id}", self._delete_user, ["DELETE"])

    # ----------------------------------------------------------------- keys and tokens

    @property
    def current_key(self) -> rsa.RSAPrivateKey:
        return self.keys[self.current_kid]

    def rotate(self, *, keep_old: bool = False) -> str:
        """Sign with a new key from now on; returns its kid."""
        kid = f"ins_{uuid.uuid4().hex[:12]}"
        if not keep_old:
            self.keys.clear()
        self.keys[kid] = new_rsa_key()
        self.current_kid = kid
        return kid

    def public_pem(self) -> str:
        return public_pem(self.current_key)

    def claims(self, sub: str = "user_test", **overrides: Any) -> dict[str, Any]:
        """Clerk's v2 session claims, valid for a minute; `None` values are removed."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "azp": ORIGIN,
            "exp": now + 60,
            "fva": [2, -1],
            "iat": now,
            "iss": self.issuer,
            "nbf": now - 5,
            "sid": f"sess_{uuid.uuid4().hex[:20]}",
            "sts": "active",
            "sub": sub,
            "v": 2,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(
        self,
        sub: str = "user_test",
        *,
        key: rsa.RSAPrivateKey | None = None,
        kid: str | None = None,
        **overrides: Any,
    ) -> str:
        return jwt.encode(
            self.claims(sub, **overrides),
            key or self.current_key,
            algorithm="RS256",
            headers={"kid": kid or self.current_kid},
        )

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def jwks_hits(self) -> int:
        return sum(1 for r in self.requests if r.path.endswith("jwks") or "jwks.json" in r.path)

    # ----------------------------------------------------------------- users

    def add_user(
        self,
        user_id: str | None = None,
        *,
        email: str = "ada@example.com",
        first_name: str | None = "Ada",
        last_name: str | None = "Lovelace",
        updated_at: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """A user in Clerk's shape, with the data we must not copy (phone, metadata...)."""
        user = clerk_user(
            user_id or f"user_{uuid.uuid4().hex[:24]}",
            email=email,
            first_name=first_name,
            last_name=last_name,
            updated_at=updated_at,
            **extra,
        )
        self.users[user["id"]] = user
        return user

    async def _get_user(self, request: Request, recorded: Recorded) -> Response:
        if (denied := self._unauthorised(recorded)) is not None:
            return denied
        user = self.users.get(request.path_params["user_id"])
        return JSONResponse(user) if user is not None else _not_found("user")

    async def _delete_user(self, request: Request, recorded: Recorded) -> Response:
        if (denied := self._unauthorised(recorded)) is not None:
            return denied
        user_id = request.path_params["user_id"]
        if self.users.pop(user_id, None) is None:
            return _not_found("user")
        self.deleted_users.append(user_id)
        return JSONResponse({"id": user_id, "object": "user", "deleted": True})

    async def _backend_jwks(self, request: Request, recorded: Recorded) -> Response:
        return self._unauthorised(recorded) or JSONResponse(self.jwks())

    async def _frontend_jwks(self, request: Request, recorded: Recorded) -> Response:
        return JSONResponse(self.jwks())

    def _unauthorised(self, recorded: Recorded) -> Response | None:
        if recorded.headers.get("authorization") == f"Bearer {self.secret_key}":
            return None
        error = {"message": "Unauthorized", "code": "authentication_invalid"}
        return JSONResponse({"errors": [error]}, status_code=401)


def clerk_user(
    user_id: str,
    *,
    email: str = "ada@example.com",
    first_name: str | None = "Ada",
    last_name: str | None = "Lovelace",
    updated_at: int | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Clerk Backend API `User` (the shape webhooks carry in `data` too)."""
    now = int(time.time() * 1000)
    user: dict[str, Any] = {
        "id": user_id,
        "object": "user",
        "username": None,
        "first_name": first_name,
        "last_name": last_name,
        "image_url": f"https://img.clerk.test/{user_id}.png",
        "has_image": True,
        "primary_email_address_id": "idn_primary",
        "primary_phone_number_id": "idn_phone",
        "email_addresses": [
            {
                "id": "idn_old",
                "object": "email_address",
                "email_address": "secondary-address@example.net",
                "verification": {"status": "verified", "strategy": "email_code"},
            },
            {
                "id": "idn_primary",
                "object": "email_address",
                "email_address": email,
                "verification": {"status": "verified", "strategy": "email_code"},
            },
        ],
        "phone_numbers": [
            {"id": "idn_phone", "object": "phone_number", "phone_number": "+15555550123"}
        ],
        "external_accounts": [
            {"provider": "oauth_github", "email_address": "external-account@example.org"}
        ],
        "public_metadata": {},
        "private_metadata": {"internal_note": "private-metadata-sentinel"},
        "unsafe_metadata": {"favourite": "unsafe-metadata-sentinel"},
        "password_enabled": True,
        "two_factor_enabled": False,
        "banned": False,
        "locked": False,
        "last_sign_in_at": now,
        "last_active_at": now,
        "created_at": now - 1000,
        "updated_at": updated_at if updated_at is not None else now,
        "legal_accepted_at": None,
        "delete_self_enabled": True,
    }
    user.update(extra)
    return user


def user_event(event_type: str, data: dict[str, Any]) -> bytes:
    """A Clerk webhook envelope, with the request metadata we must not copy."""
    envelope = {
        "data": data,
        "object": "event",
        "type": event_type,
        "timestamp": int(time.time() * 1000),
        "instance_id": "ins_fake",
        "event_attributes": {
            "http_request": {"client_ip": "203.0.113.77", "user_agent": "ua-sentinel/1.0"}
        },
    }
    return json.dumps(envelope).encode()


def svix_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def svix_headers(
    body: bytes,
    secret: str = WEBHOOK_SECRET,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "svix-id": msg_id,
        "svix-timestamp": str(ts),
        "svix-signature": svix_signature(secret, msg_id, ts, body),
        "content-type": "application/json",
    }


def clerk_settings(root: str, **overrides: Any) -> dict[str, Any]:
    """Settings for Clerk mode with this fake served under `root/clerk`."""
    values: dict[str, Any] = {
        "auth_provider": "clerk",
        "clerk_issuer": ISSUER,
        "clerk_authorized_parties": ORIGIN,
        "clerk_jwks_url": f"{root}/clerk/v1/jwks",
        "clerk_api_url": f"{root}/clerk",
        "clerk_secret_key": SECRET_KEY,
        "clerk_webhook_signing_secret": WEBHOOK_SECRET,
        "clerk_sign_in_url": SIGN_IN_URL,
    }
    values.update(overrides)
    return values


# ------------------------------------------------------------------ the gateway in Clerk mode


@asynccontextmanager
async def clerk_gateway(
    db_url: str,
    data_dir: Path,
    fake: FakeClerk,
    others: dict[str, FakeVendor] | None = None,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    """The gateway in Clerk mode, with this fake under `http://fakes/clerk` (and `others`
    under `http://fakes/<name>`), plus two routes that show what `IdentityDep` resolved
    (`/test/principal`) and apply the step-up rule of destructive operations
    (`/test/step-up`)."""
    from image_router.app import create_app
    from image_router.resources import build_resources
    from tests.conftest import Gateway, fakes_transport, gateway_settings
    from tests.fakes.openai import FakeOpenAI

    openai = FakeOpenAI()
    settings = gateway_settings(db_url, data_dir, **(clerk_settings("http://fakes") | overrides))
    fakes: dict[str, FakeVendor] = {"clerk": fake, **(others or {})}
    res = build_resources(settings, http_transport=fakes_transport(openai, fakes))
    app = create_app(settings, resources=res)
    _add_principal_routes(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
        ) as client,
    ):
        yield Gateway(client=client, res=res, openai=openai, fakes=fakes)


def _add_principal_routes(app: FastAPI) -> None:
    from image_router.api.identity import get_identity, require_recent_sign_in

    async def principal(request: Request) -> dict[str, Any]:
        who = await get_identity(request, request.app.state.resources)
        at = who.authenticated_at
        return {
            "account_id": who.account_id,
            "via": who.via,
            "authenticated_at": at.timestamp() if at else None,
        }

    async def step_up(request: Request) -> dict[str, bool]:
        res = request.app.state.resources
        require_recent_sign_in(await get_identity(request, res), res)
        return {"ok": True}

    app.add_api_route("/test/principal", principal, methods=["GET", "POST"])
    app.add_api_route("/test/step-up", step_up, methods=["POST"])
