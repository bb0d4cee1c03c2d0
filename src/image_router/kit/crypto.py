"""Envelope encryption and blind indexes for personal data (privacy-payments.md SEC-1, SEC-2).

Each account has its own 256-bit data key (DEK); values are sealed with AES-256-GCM under it,
with the account id as associated data, so a value copied onto another account's row does
not open. DEKs are stored wrapped by one key-encryption key (KEK). Destroying a DEK makes
every value sealed under it unreadable, in the live database and in every backup.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE_BYTES = 12
_VERSION = b"\x01"  # first byte of every sealed value, so the format can change later


class SealError(ValueError):
    """A sealed value that does not open: wrong key, wrong account, or tampered with."""


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def decode_key(text: str, name: str) -> bytes:
    """A 32-byte key from its base64 text; `name` says which setting was wrong."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{name} is not valid base64") from exc
    if len(key) != KEY_BYTES:
        raise ValueError(f"{name} must be {KEY_BYTES} bytes (base64), not {len(key)}")
    return key


def load_or_create_key(path: Path, name: str) -> bytes:
    """The key in `path`, created (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        text = base64.b64encode(new_key()).decode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another worker wrote it first: read theirs
        else:
            with os.fdopen(fd, "w") as out:
                out.write(text + "\n")
    return decode_key(path.read_text(), f"{name} ({path})")


def key_id(key: bytes) -> str:
    """A short, non-secret name for a key, to tell which KEK wrapped a DEK."""
    return hashlib.sha256(b"image-router key id" + key).hexdigest()[:16]


def seal(key: bytes, plaintext: bytes, associated: str) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    return _VERSION + nonce + AESGCM(key).encrypt(nonce, plaintext, associated.encode())


def open_sealed(key: bytes, sealed: bytes, associated: str) -> bytes:
    if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
        raise SealError("not a sealed value")
    nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
    try:
        return AESGCM(key).decrypt(nonce, body, associated.encode())
    except InvalidTag as exc:
        raise SealError("the value does not open with this key") from exc


def blind_index(key: bytes, value: str) -> str:
    """A keyed hash for equality look-ups of a value that is stored only sealed."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
