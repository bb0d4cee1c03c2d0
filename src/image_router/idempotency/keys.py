"""An `Idempotency-Key`: what a valid one is, and the hashes that identify it and a request.

A key is 1 to 255 printable ASCII characters (what Stripe accepts; a UUID4 is typical).
It is scoped to its account: the stored `key_hash` is a SHA-256 of the account id (and,
for the shared guest account, the client's address) and the key, so two accounts may use
the same key and the key itself is never stored. A request is fingerprinted by a SHA-256
of its method, path and raw body bytes (multipart included, its random boundary hashed as a
fixed token so a client's retry of the same form matches): the same key with another
fingerprint is a mistake of the client's, refused rather than replayed.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

from image_router.errors import InvalidRequest

MAX_KEY_LENGTH = 255


class InvalidIdempotencyKey(InvalidRequest):
    code = "invalid_idempotency_key"


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def check_key(value: str) -> str:
    """The key, or 400 `invalid_idempotency_key` when it is empty, too long or not
    printable ASCII."""
    if not value or len(value) > MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in value):
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters",
            param="Idempotency-Key",
        )
    return value


def key_hash(account_id: str, key: str, *, scope: str = "") -> str:
    """What identifies the key within its account (the `scope` narrows it further: the
    guest account's keys are scoped to the client's address)."""
    return hashlib.sha256(f"{account_id}\n{scope}\n{key}".encode()).hexdigest()


def new_fingerprint(method: str, path: str) -> Digest:
    """A running SHA-256 of the request: feed it the raw body bytes as they arrive."""
    digest = hashlib.sha256()
    digest.update(f"{method.upper()} {path}\n".encode())
    return digest
