"""The mirror of Clerk's users in `accounts` (privacy-payments.md CLK-7, SVX-2…5, LEG-4).

Clerk owns the identity; we keep only what the product needs (SVX-4): the primary e-mail,
the name, the avatar URL and timestamps, sealed under the account's data key. Rows are
found by `auth_subject_hmac`, which outlives erasure (`auth_subject` does not).

Clerk's webhooks come at least once and in any order, so:

- each message is recorded in `webhook_messages` in the transaction of its effect, and a
  redelivery does nothing;
- `user.created` and `user.updated` are both upserts, applied only when `updated_at` is
  newer than what is stored (a conditional UPDATE, so concurrent deliveries cannot undo
  a newer change);
- an account that is being or has been erased (`deletion_pending`, `deleted`) is never
  changed or recreated by a late event; a `user.deleted` for a user we never saw leaves a
  bare tombstone so a `user.created` arriving after it is ignored too.

A person may also sign in before any webhook arrived: `account_for_session` creates the
account just in time, from the Backend API when a secret key is configured, else from the
token alone. Two first requests at once create one account (the unique `auth_subject`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.account.clerk import ClerkBackend, ClerkUnavailable
from image_router.account.personal_data import Vault
from image_router.db.session import unit_of_work
from image_router.db.tables import Account, Consent, WebhookMessage
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id

log = logging.getLogger(__name__)

PROVIDER = "clerk"
GONE = ("deleted", "deletion_pending")
UPSERT_EVENTS = frozenset({"user.created", "user.updated"})
DELETED_EVENT = "user.deleted"
_MAX_TEXT = 2048  # longer names or URLs than this are not a person's profile

# Erasure is another service's job; the webhook endpoint hands it in (SVX-5).
QueueErasure = Callable[[AsyncConnection, str], Awaitable[datetime]]


class InvalidUserEvent(ValueError):
    """A verified webhook message that is not the shape of a Clerk event."""


@dataclass(frozen=True)
class MirrorPolicy:
    store_prompts: bool = True  # DEFAULT_STORE_PROMPTS, for accounts created here
    terms_version: str | None = None  # recorded with Clerk's `legal_accepted_at` (LEG-4)


@dataclass(frozen=True)
class ClerkProfile:
    """The fields of a Clerk user we keep (SVX-4); everything else is never read."""

    subject: str
    email: str | None = None
    name: str | None = None
    image_url: str | None = None
    updated_at_ms: int | None = None
    legal_accepted_at_ms: int | None = None


def profile_from_user(user: Mapping[str, Any]) -> ClerkProfile:
    subject = user.get("id")
    if not isinstance(subject, str) or not 0 < len(subject) <= 255:
        raise InvalidUserEvent("a Clerk user needs an id")
    primary = user.get("primary_email_address_id")
    email = None
    for entry in user.get("email_addresses") or []:
        if isinstance(entry, dict) and primary is not None and entry.get("id") == primary:
            email = _text(entry.get("email_address"))
    names = [_text(user.get(part)) for part in ("first_name", "last_name")]
    return ClerkProfile(
        subject=subject,
        email=email.strip().lower() if email else None,
        name=" ".join(n.strip() for n in names if n and n.strip()) or None,
        image_url=_text(user.get("image_url")),
        updated_at_ms=_millis(user.get("updated_at")),
        legal_accepted_at_ms=_millis(user.get("legal_accepted_at")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_TEXT else None


def _millis(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class Applied:
    outcome: str  # created | updated | stale | ignored: account deleted
    account_id: str | None


async def apply_profile(
    conn: AsyncConnection, vault: Vault, profile: ClerkProfile, policy: MirrorPolicy
) -> Applied:
    """Create or update the account of a Clerk user, following the ordering rules."""
    found = await _find(conn, vault, profile.subject)
    if found is None:
        account_id = await _create(conn, vault, profile, policy)
        if account_id is not None:
            return Applied("created", account_id)
        found = await _find(conn, vault, profile.subject)  # lost a race to another request
        if found is None:
            raise RuntimeError(f"the account of Clerk user {profile.subject} vanished")
    account_id, status = found
    if status in GONE:
        return Applied("ignored: account deleted", account_id)
    if not await _update(conn, vault, account_id, profile):
        return Applied("stale", account_id)
    await _record_legal_acceptance(conn, account_id, profile, policy)
    return Applied("updated", account_id)


async def _find(conn: AsyncConnection, vault: Vault, subject: str) -> tuple[str, str] | None:
    """(account id, status) of a Clerk user; a tombstone wins over anything else."""
    result = (
        await conn.execute(
            select(Account.id, Account.status).where(
                Account.auth_subject_hmac == vault.subject_index(subject),
                Account.auth_provider == PROVIDER,
            )
        )
    ).all()
    rows = sorted(result, key=lambda r: r.status not in GONE)
    return (rows[0].id, rows[0].status) if rows else None


async def _create(
    conn: AsyncConnection, vault: Vault, profile: ClerkProfile, policy: MirrorPolicy
) -> str | None:
    """A new account with its data key; None if another transaction created it first."""
    account_id = new_id()
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(Account).values(
                    id=account_id,
                    auth_provider=PROVIDER,
                    auth_subject=profile.subject,
                    auth_subject_hmac=vault.subject_index(profile.subject),
                    auth_updated_at_ms=profile.updated_at_ms,
                    status="active",
                    role="user",
                    balance=0,
                    created_at=utcnow(),
                    store_prompts=policy.store_prompts,
                )
            )
    except IntegrityError:
        return None
    await vault.create_key(account_id)
    await _write_profile(conn, vault, account_id, profile)
    await _record_legal_acceptance(conn, account_id, profile, policy)
    return account_id


async def _update(
    conn: AsyncConnection, vault: Vault, account_id: str, profile: ClerkProfile
) -> bool:
    """Apply a strictly newer profile; False when stale or the account is being erased."""
    if profile.updated_at_ms is None:
        return False  # a profile from a token alone carries nothing to update
    result = await conn.execute(
        update(Account)
        .where(
            Account.id == account_id,
            Account.status.not_in(GONE),
            (Account.auth_updated_at_ms.is_(None))
            | (Account.auth_updated_at_ms < profile.updated_at_ms),
        )
        .values(auth_updated_at_ms=profile.updated_at_ms)
    )
    if result.rowcount != 1:
        return False
    await _write_profile(conn, vault, account_id, profile)
    return True


async def _write_profile(
    conn: AsyncConnection, vault: Vault, account_id: str, profile: ClerkProfile
) -> None:
    await conn.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(
            email_enc=await vault.seal(account_id, profile.email),
            name_enc=await vault.seal(account_id, profile.name),
            image_url_enc=await vault.seal(account_id, profile.image_url),
            email_bidx=None,
        )
    )
    if profile.email is None:
        return
    try:
        async with conn.begin_nested():
            await conn.execute(
                update(Account)
                .where(Account.id == account_id)
                .values(email_bidx=vault.email_index(profile.email))
            )
    except IntegrityError:
        # Another account (a local one, or a Clerk user who had this address before)
        # holds it. Accounts are never merged by e-mail: that would hand one person's
        # credits to whoever controls the address at Clerk.
        log.warning("account %s: e-mail already indexed for another account", account_id)


async def _record_legal_acceptance(
    conn: AsyncConnection, account_id: str, profile: ClerkProfile, policy: MirrorPolicy
) -> None:
    """LEG-4: Clerk's "require express consent" checkbox, recorded once per account."""
    if profile.legal_accepted_at_ms is None:
        return
    known = await conn.scalar(
        select(Consent.id)
        .where(
            Consent.account_id == account_id,
            Consent.purpose == "terms",
            Consent.source == PROVIDER,
        )
        .limit(1)
    )
    if known is not None:
        return
    accepted_at = datetime.fromtimestamp(profile.legal_accepted_at_ms / 1000, UTC)
    await conn.execute(
        insert(Consent).values(
            account_id=account_id,
            purpose="terms",
            granted=True,
            document_version=policy.terms_version,
            source=PROVIDER,
            created_at=accepted_at,
        )
    )
    if policy.terms_version is not None:
        await conn.execute(
            update(Account)
            .where(Account.id == account_id, Account.terms_version_accepted.is_(None))
            .values(terms_version_accepted=policy.terms_version, terms_accepted_at=accepted_at)
        )


async def claim_message(conn: AsyncConnection, message_id: str, event_type: str) -> bool:
    """Record a webhook message (SVX-2); False when it was handled before."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(WebhookMessage).values(
                    source=PROVIDER,
                    message_id=message_id,
                    type=event_type[:100],
                    received_at=utcnow(),
                )
            )
    except IntegrityError:
        return False
    return True


async def erasure_target(conn: AsyncConnection, vault: Vault, subject: str) -> str | None:
    """The live account to erase for `user.deleted`, or None.

    For a user never seen, a bare tombstone (no personal data, no data key) is left so
    that a `user.created` delivered late cannot create the account afterwards.
    """
    found = await _find(conn, vault, subject)
    if found is not None:
        return None if found[1] in GONE else found[0]
    now = utcnow()
    await conn.execute(
        insert(Account).values(
            id=new_id(),
            auth_provider=PROVIDER,
            auth_subject=None,
            auth_subject_hmac=vault.subject_index(subject),
            status="deleted",
            role="user",
            balance=0,
            created_at=now,
            deleted_at=now,
            store_prompts=False,
        )
    )
    return None


async def process_event(
    engine: AsyncEngine,
    vault: Vault,
    message_id: str,
    event: Mapping[str, Any],
    policy: MirrorPolicy,
    queue_erasure: QueueErasure,
) -> str:
    """Apply one verified Clerk webhook message exactly once; returns what was done."""
    event_type, data = event.get("type"), event.get("data")
    if not isinstance(event_type, str) or not isinstance(data, dict):
        raise InvalidUserEvent("a Clerk event needs a type and a data object")
    async with unit_of_work(engine) as conn:
        if not await claim_message(conn, message_id, event_type):
            return "duplicate: already processed"
        if event_type in UPSERT_EVENTS:
            return (await apply_profile(conn, vault, profile_from_user(data), policy)).outcome
        if event_type == DELETED_EVENT:
            subject = data.get("id")
            if not isinstance(subject, str) or not 0 < len(subject) <= 255:
                raise InvalidUserEvent("user.deleted needs the user's id")
            account_id = await erasure_target(conn, vault, subject)
            if account_id is None:
                return "ignored: account already deleted"
            due = await queue_erasure(conn, account_id)
            return f"erasure queued, due {due.isoformat()}"
        return f"ignored: {event_type[:100]} is not handled"


async def account_for_session(
    engine: AsyncEngine,
    vault: Vault,
    backend: ClerkBackend | None,
    subject: str,
    policy: MirrorPolicy,
) -> str | None:
    """The id of the active account of a signed-in Clerk user, created just in time.

    None when the account is being or has been erased, or when Clerk says the user no
    longer exists: such a session is treated as signed out.
    """
    async with unit_of_work(engine) as conn:
        found = await _find(conn, vault, subject)
    if found is not None:
        return found[0] if found[1] not in GONE else None
    profile = ClerkProfile(subject=subject)
    if backend is not None:
        try:
            user = await backend.get_user(subject)
        except ClerkUnavailable as exc:
            # The webhook will fill in the profile; signing in must not depend on Clerk's API.
            log.warning("creating Clerk user's account from the token alone: %s", exc)
        else:
            if user is None:
                return None
            profile = profile_from_user(user)
            if profile.subject != subject:
                raise ClerkUnavailable("Clerk answered another user than the one asked for")
    async with unit_of_work(engine) as conn:
        applied = await apply_profile(conn, vault, profile, policy)
    if applied.outcome.startswith("ignored"):
        return None
    return applied.account_id
