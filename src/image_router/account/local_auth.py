"""Local accounts (AUTH_PROVIDER=local): sign-up, password sign-in and password reset.

Failures are deliberately vague towards the person ("Invalid e-mail or password", a
generic sign-up refusal, the same answer to every reset request) so the pages cannot be
used to find out which e-mail addresses have accounts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account import passwords
from image_router.account.personal_data import Vault
from image_router.account.service import AccountError, create_account, normalise_email
from image_router.account.sessions import revoke_account_sessions
from image_router.db.tables import Account, PasswordReset
from image_router.kit.clock import utcnow
from image_router.kit.ids import hash_secret

RESET_TTL = timedelta(hours=1)
GUEST_ROLE = "guest"
SIGNUP_REFUSED = (
    "We could not create an account with these details. If you already have an account, "
    "sign in or reset your password."
)


class SignUpRefused(AccountError):
    """The e-mail is taken; the message does not say so."""


@dataclass(frozen=True)
class SignedIn:
    account_id: str
    email: str


async def sign_up(
    conn: AsyncConnection, vault: Vault, email: str, password: str, *, store_prompts: bool = True
) -> SignedIn:
    """Create an account with a password. Raises AccountError with a message for the person."""
    passwords.check_password_rules(password)
    email = normalise_email(email)
    password_hash = await passwords.hash_password_async(password)
    try:
        account = await create_account(conn, vault, email, store_prompts=store_prompts)
    except AccountError:
        raise SignUpRefused(SIGNUP_REFUSED) from None
    await conn.execute(
        update(Account).where(Account.id == account.id).values(password_hash=password_hash)
    )
    return SignedIn(account.id, account.email)


async def sign_in(
    conn: AsyncConnection, vault: Vault, email: str, password: str
) -> SignedIn | None:
    """The account when the password matches, else None. Upgrades outdated hashes."""
    try:
        email = normalise_email(email)
    except AccountError:
        email = ""
    row = (
        await conn.execute(
            select(Account.id, Account.password_hash, Account.role).where(
                Account.email_bidx == vault.email_index(email), Account.status == "active"
            )
        )
    ).first()
    stored = row.password_hash if row is not None and row.role != GUEST_ROLE else None
    # Always verify (against a dummy hash when there is no account) so timing says nothing.
    if not await passwords.verify_password_async(stored, password) or row is None:
        return None
    if stored is not None and passwords.needs_rehash(stored):
        await conn.execute(
            update(Account)
            .where(Account.id == row.id)
            .values(password_hash=await passwords.hash_password_async(password))
        )
    return SignedIn(row.id, email)


async def request_reset(conn: AsyncConnection, vault: Vault, email: str) -> tuple[str, str] | None:
    """A reset token for the account of `email` as (e-mail, token), or None when there is no
    such account. Only the token's hash is stored; it works once, within RESET_TTL."""
    try:
        email = normalise_email(email)
    except AccountError:
        return None
    row = (
        await conn.execute(
            select(Account.id).where(
                Account.email_bidx == vault.email_index(email),
                Account.role != GUEST_ROLE,
                Account.status == "active",
            )
        )
    ).first()
    if row is None:
        return None
    token = secrets.token_urlsafe(32)
    now = utcnow()
    await conn.execute(
        insert(PasswordReset).values(
            token_hash=hash_secret(token),
            account_id=row.id,
            created_at=now,
            expires_at=now + RESET_TTL,
        )
    )
    return email, token


async def issue_signin_link(conn: AsyncConnection, account_id: str, *, ttl: timedelta) -> str:
    """A one-time sign-in token for the account (the admin's way in at first start,
    `image-router users signin-link`). It is a password reset token with its own lifetime:
    stored hashed, single use; `/signin/once` asks for a new password, then signs in."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    await conn.execute(
        insert(PasswordReset).values(
            token_hash=hash_secret(token),
            account_id=account_id,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return token


async def reset_account(conn: AsyncConnection, token: str) -> str | None:
    """The account a usable (unused, unexpired) reset or sign-in token belongs to."""
    found: str | None = await conn.scalar(select(PasswordReset.account_id).where(*_usable(token)))
    return found


async def set_password(conn: AsyncConnection, account_id: str, password: str) -> None:
    """Set an account's password (the operator's `users set-password`); every session of
    the account is signed out."""
    passwords.check_password_rules(password)
    password_hash = await passwords.hash_password_async(password)
    updated = await conn.execute(
        update(Account)
        .where(Account.id == account_id, Account.role != GUEST_ROLE)
        .values(password_hash=password_hash)
    )
    if updated.rowcount != 1:
        raise AccountError("this account cannot have a password")
    await revoke_account_sessions(conn, account_id)


def _usable(token: str) -> list[ColumnElement[bool]]:
    return [
        PasswordReset.token_hash == hash_secret(token),
        PasswordReset.used_at.is_(None),
        PasswordReset.expires_at > utcnow(),
    ]


async def reset_is_valid(conn: AsyncConnection, token: str) -> bool:
    found = await conn.scalar(select(PasswordReset.account_id).where(*_usable(token)))
    return found is not None


async def reset_password(conn: AsyncConnection, token: str, password: str) -> str | None:
    """Set a new password with a reset token; returns the account id, or None when the
    token is unknown, used or expired. Every session of the account is signed out."""
    passwords.check_password_rules(password)
    account_id = await conn.scalar(
        update(PasswordReset)
        .where(*_usable(token))
        .values(used_at=utcnow())
        .returning(PasswordReset.account_id)
    )
    if account_id is None:
        return None
    await conn.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(password_hash=await passwords.hash_password_async(password))
    )
    await revoke_account_sessions(conn, account_id)
    return str(account_id)


WRONG_PASSWORD = "Your current password is not correct."


class WrongPassword(AccountError):
    """The current password given to change it does not match."""


async def change_password(
    conn: AsyncConnection, account_id: str, current: str, new: str, *, keep_session: str | None
) -> int:
    """Replace a local account's password after checking the current one (argon2, as at
    sign-up). Every other session of the account ends; returns how many did.

    Raises WrongPassword, or AccountError when the new password breaks the rules.
    """
    stored = await conn.scalar(
        select(Account.password_hash).where(
            Account.id == account_id, Account.status == "active", Account.role != GUEST_ROLE
        )
    )
    # Verified even without a stored hash (against a dummy), so timing says nothing.
    if not await passwords.verify_password_async(stored, current) or stored is None:
        raise WrongPassword(WRONG_PASSWORD)
    passwords.check_password_rules(new)
    await conn.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(password_hash=await passwords.hash_password_async(new))
    )
    return await revoke_account_sessions(conn, account_id, keep=keep_session)
