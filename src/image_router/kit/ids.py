"""Identifiers and secrets."""

from __future__ import annotations

import hashlib
import secrets
import string
import uuid

API_KEY_PREFIX = "ir-"
API_KEY_LENGTH = 64  # the reference tells API keys from web tokens by this length
_ALPHABET = string.ascii_letters + string.digits


def new_id() -> str:
    """A random UUID4 string: 122 random bits, so ids in public URLs cannot be guessed."""
    return str(uuid.uuid4())


def new_api_key() -> str:
    body = "".join(secrets.choice(_ALPHABET) for _ in range(API_KEY_LENGTH - len(API_KEY_PREFIX)))
    return API_KEY_PREFIX + body


def hash_secret(secret: str) -> str:
    """SHA-256 is enough: keys carry ~360 random bits, so no slow hash is needed."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
