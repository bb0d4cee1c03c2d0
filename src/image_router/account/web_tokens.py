"""Website tokens (spec §4): short-lived HS256 JWTs the website's own pages call the API with.

Claims: `userId` (an account id, or `anon_user` for guests, who share one guest account)
and `jwtGeneratedWithIp`. Tokens of accounts without credit only work from the address they
were minted for, so a guest token copied elsewhere is useless. The gateway tells API keys
(64 characters) from these tokens (at least 100) by length alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account.local_auth import GUEST_ROLE
from image_router.account.personal_data import Vault
from image_router.account.service import AccountError, Caller, create_account
from image_router.db.tables import Account
from image_router.errors import GatewayError, Unauthenticated

GUEST_USER_ID = "anon_user"
GUEST_EMAIL = "guest@localhost"
MIN_TOKEN_LENGTH = 100
_ALGORITHMS = ["HS256", "HS384", "HS512"]  # what jsonwebtoken accepts for an HMAC secret
INVALID_MESSAGE = "Invalid or expired JWT token"


class GuestIpMismatch(GatewayError):
    status = 403
    error_type = "unauthorized"
    code = "ip_mismatch"


@dataclass(frozen=True)
class WebTokenClaims:
    user_id: str | None
    ip: str | None


def mint(secret: str, user_id: str, ip: str | None, ttl_s: float) -> tuple[str, int]:
    """A token for `user_id` (or GUEST_USER_ID) bound to `ip`; returns (token, exp)."""
    now = int(time.time())
    exp = now + max(1, int(ttl_s))
    claims = {"userId": user_id, "jwtGeneratedWithIp": ip, "iat": now, "exp": exp}
    token = jwt.encode(claims, secret, algorithm="HS256")
    # The header alone is 36 characters and a signature 43, so any claims set reaches 100;
    # were it ever shorter, the gateway would read it as a malformed key.
    if len(token) < MIN_TOKEN_LENGTH:
        raise RuntimeError(f"a website token of {len(token)} characters cannot be told apart")
    return token, exp


def verify(secret: str, token: str) -> WebTokenClaims:
    """The claims of a valid, unexpired token; Unauthenticated for anything else."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, secret, algorithms=_ALGORITHMS, options={"require": ["exp"]}
        )
    except jwt.PyJWTError:
        raise Unauthenticated(INVALID_MESSAGE, code="invalid_token") from None
    user_id, ip = claims.get("userId"), claims.get("jwtGeneratedWithIp")
    return WebTokenClaims(
        user_id=str(user_id) if user_id else None, ip=str(ip) if ip is not None else None
    )


async def guest_account_id(conn: AsyncConnection, vault: Vault) -> str:
    """The shared guest account, created on first use (concurrent first uses agree)."""
    found = await conn.scalar(
        select(Account.id).where(Account.email_bidx == vault.email_index(GUEST_EMAIL))
    )
    if found is not None:
        return str(found)
    try:
        return (await create_account(conn, vault, GUEST_EMAIL, name="Guest", role=GUEST_ROLE)).id
    except AccountError:
        # Another request created it between the read and the insert.
        found = await conn.scalar(
            select(Account.id).where(Account.email_bidx == vault.email_index(GUEST_EMAIL))
        )
        if found is None:
            raise
        return str(found)


async def caller_for(
    conn: AsyncConnection, vault: Vault, claims: WebTokenClaims, client_ip: str | None
) -> Caller:
    """The caller a verified token stands for (spec §4 step 3)."""
    if claims.user_id and claims.user_id != GUEST_USER_ID:
        row = (
            await conn.execute(
                select(
                    Account.id,
                    Account.balance,
                    Account.allow_routing_improvement,
                    Account.store_prompts,
                    Account.processing_restricted,
                ).where(Account.id == claims.user_id, Account.status == "active")
            )
        ).first()
        if row is None:
            raise Unauthenticated("User not found for this JWT token", code="invalid_token")
        account_id, balance, allow = row.id, int(row.balance), bool(row.allow_routing_improvement)
        store_prompts, restricted = bool(row.store_prompts), bool(row.processing_restricted)
    else:
        account_id = await guest_account_id(conn, vault)
        balance = int(
            await conn.scalar(select(Account.balance).where(Account.id == account_id)) or 0
        )
        allow, store_prompts, restricted = True, True, False
    guest = not claims.user_id or claims.user_id == GUEST_USER_ID
    if balance <= 0 and client_ip != claims.ip:
        raise GuestIpMismatch(f"Guest token IP mismatch: {client_ip} !== {claims.ip}")
    return Caller(
        account_id=account_id,
        balance=balance,
        api_key_id=None,
        via_web_token=True,
        allow_routing_improvement=allow,
        store_prompts=store_prompts,
        restricted=restricted,
        guest=guest,
    )
