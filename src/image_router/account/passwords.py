"""Password hashing for local sign-in (argon2id, as OWASP recommends).

Hashing is deliberately slow (tens of milliseconds, 64 MiB), so the async helpers run it in
a worker thread: on the event loop it would stall every other request.
"""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from image_router.account.service import AccountError

MIN_PASSWORD_LENGTH = 10
# argon2 accepts anything, but hashing a megabyte per attempt is a cheap denial of service.
MAX_PASSWORD_LENGTH = 256

_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    # Verified when the e-mail is unknown, so a miss costs as long as a wrong password and
    # the response time does not tell which accounts exist.
    return _HASHER.hash("not the password of any account")


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(f"The password must have at most {MAX_PASSWORD_LENGTH} characters.")


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when `password` matches; an account without a password never matches."""
    try:
        return _HASHER.verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the hash was made with other parameters than the current ones."""
    return _HASHER.check_needs_rehash(password_hash)


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(verify_password, password_hash, password)
