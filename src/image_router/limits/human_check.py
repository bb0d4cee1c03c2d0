"""The human check before a website token: a self-hosted proof-of-work challenge (ALTCHA).

A guest, or an account without credit, asks `GET /v1/web-token/challenge` for a challenge:
a salt (carrying its expiry), the SHA-256 of the salt followed by a secret number below
`max_number`, and our HMAC of that hash. The browser tries numbers until the hash matches
(`web/static/altcha-solver.js`, WebCrypto) and sends the payload back with
`POST /v1/web-token`. Nobody else is asked: no third party sees the visitor.

ALTCHA's own library (`altcha`, protocol v1) makes and checks challenges. A solved
challenge works once: its hash is remembered in the limiter's storage (in-process, or
Redis with `REDIS_URL`, shared by every worker) until the challenge expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from altcha.v1 import ChallengeOptions, create_challenge, verify_solution

from image_router.errors import Forbidden
from image_router.limits.rates import WindowCounter

log = logging.getLogger(__name__)

#: A solved payload is ~300 characters; anything much longer is not one.
MAX_PAYLOAD_CHARS = 2048
REQUIRED = (
    "Prove you are a person first: solve the challenge of GET /v1/web-token/challenge and "
    'send its payload as {"altcha": "..."}'
)
FAILED = "The human check failed or expired: ask for a new challenge and solve it again"
REPLAYED = "This human check was already used: ask for a new challenge"


class HumanCheckRequired(Forbidden):
    code = "human_check_required"


class HumanCheckFailed(Forbidden):
    code = "human_check_failed"


def derive_key(web_token_secret: str) -> bytes:
    """The challenges' HMAC key, derived from the website-token secret (no second key to
    keep: whoever can mint website tokens can sign challenges anyway)."""
    return hmac.new(
        web_token_secret.encode(), b"image-router human check (ALTCHA)", hashlib.sha256
    ).digest()


@dataclass(frozen=True)
class HumanCheck:
    hmac_key: bytes
    counter: WindowCounter  # remembers solved challenges until they expire
    max_number: int = 100_000
    expire_s: int = 600

    def challenge(self) -> dict[str, Any]:
        """A fresh challenge, as ALTCHA's widget and our solver read it."""
        expires = datetime.now(UTC) + timedelta(seconds=self.expire_s)
        made = create_challenge(
            ChallengeOptions(hmac_key=self.hmac_key, max_number=self.max_number, expires=expires)
        )
        body: dict[str, Any] = made.to_dict()
        body["maxnumber"] = made.max_number  # the spelling of ALTCHA's widget
        body["expires_at"] = int(expires.timestamp())
        return body

    async def verify(self, payload: str | None) -> None:
        """Accept a solved, unexpired challenge of ours once; raise `Forbidden` otherwise."""
        if not payload:
            raise HumanCheckRequired(REQUIRED)
        fields = _decode(payload)
        if fields is None:
            raise HumanCheckFailed(FAILED)
        expires = _expiry(str(fields.get("salt", "")))
        try:
            solved, _ = verify_solution(payload, self.hmac_key, check_expires=True)
        except (TypeError, ValueError, KeyError):
            solved = False
        # Our challenges always carry an expiry; one without is not ours.
        if not solved or expires is None:
            raise HumanCheckFailed(FAILED)
        remaining = int(expires - time.time()) + 1
        if not await self.counter.first_use(f"human-check/{fields['challenge']}", remaining):
            raise HumanCheckFailed(REPLAYED, code="human_check_replayed")


def _decode(payload: str) -> dict[str, Any] | None:
    if len(payload) > MAX_PAYLOAD_CHARS:
        return None
    try:
        fields = json.loads(base64.b64decode(payload, validate=True))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(fields, dict) or not isinstance(fields.get("challenge"), str):
        return None
    return fields


def _expiry(salt: str) -> float | None:
    """The `expires=` timestamp a salt carries (`<hex>?expires=<unix>&`), or None."""
    _, _, query = salt.partition("?")
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "expires":
            try:
                return float(value)
            except ValueError:
                return None
    return None
