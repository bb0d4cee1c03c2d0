"""Signed-in browsers: server-side session rows behind a random cookie token.

The cookie carries 256 random bits; the row is keyed by their SHA-256, so a database leak
does not hand out sessions. A session ends when it expires or is revoked (sign-out, a
password reset), and the next request is then signed out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account.personal_data import Vault
from image_router.db.tables import Account, WebSession
from image_router.kit.clock import utcnow
from image_router.kit.ids import hash_secret

LAST_SEEN_RESOLUTION = timedelta(minutes=1)
_USER_AGENT_MAX = 400
_IP_MAX = 64


@dataclass(frozen=True)
class SessionView:
    id: str
    account_id: str
    email: str
    role: str
    balance: int
    csrf_token: str
    expires_at: datetime
    # When the person last proved who they are (sign-in); erasure and export need it recent.
    authenticated_at: datetime | None = None


async def start_session(
    conn: AsyncConnection,
    account_id: str,
    *,
    ttl_s: float,
    ip: str | None,
    user_agent: str | None,
) -> str:
    """Open a session; returns the cookie token (never stored)."""
    token = secrets.token_urlsafe(32)
    now = utcnow()
    await conn.execute(
        insert(WebSession).values(
            id=hash_secret(token),
            account_id=account_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_s),
            last_seen_at=now,
            reauthenticated_at=now,
            ip=ip[:_IP_MAX] if ip else None,
            user_agent=user_agent[:_USER_AGENT_MAX] if user_agent else None,
        )
    )
    return token


_LOAD = select(
    WebSession.id,
    WebSession.account_id,
    WebSession.csrf_token,
    WebSession.expires_at,
    WebSession.last_seen_at,
    WebSession.reauthenticated_at,
    Account.email_enc,
    Account.role,
    Account.balance,
).join(Account, Account.id == WebSession.account_id)


async def load_session(conn: AsyncConnection, vault: Vault, token: str) -> SessionView | None:
    """The live session of a cookie token, or None (unknown, expired or revoked)."""
    now = utcnow()
    row = (
        await conn.execute(
            _LOAD.where(
                WebSession.id == hash_secret(token),
                WebSession.revoked_at.is_(None),
                WebSession.expires_at > now,
                Account.status == "active",
            )
        )
    ).first()
    if row is None:
        return None
    if now - row.last_seen_at >= LAST_SEEN_RESOLUTION:
        await conn.execute(
            update(WebSession).where(WebSession.id == row.id).values(last_seen_at=now)
        )
    return SessionView(
        id=row.id,
        account_id=row.account_id,
        email=await vault.open(row.account_id, row.email_enc) or "",
        role=row.role,
        balance=int(row.balance),
        csrf_token=row.csrf_token,
        expires_at=row.expires_at,
        authenticated_at=row.reauthenticated_at,
    )


async def revoke_session(conn: AsyncConnection, session_id: str) -> None:
    await conn.execute(
        update(WebSession)
        .where(WebSession.id == session_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


async def revoke_account_sessions(
    conn: AsyncConnection, account_id: str, *, keep: str | None = None
) -> int:
    """Sign an account out everywhere (after a password change) but in the session `keep`;
    returns how many ended."""
    query = update(WebSession).where(
        WebSession.account_id == account_id, WebSession.revoked_at.is_(None)
    )
    if keep is not None:
        query = query.where(WebSession.id != keep)
    result = await conn.execute(query.values(revoked_at=utcnow()))
    return int(result.rowcount)
