"""What an account holder sees of their own account, and how they correct it.

- `account_details`: the profile (e-mail and name opened with the account's data key), the
  balance, the privacy choices, the restriction and the policy versions (DSR-1's live view;
  the downloadable copy is the export);
- `rectify`: correct the e-mail or name (Art. 16, DSR-3). With local sign-in they are ours
  to change; an account whose identity comes from Clerk has them mastered there, so they
  are changed in Clerk's profile and arrive here through `user.updated`;
- `usage_page`: the usage log, newest first, with each prompt opened only where it is
  stored. Reading one's own data is not audited (SEC-4 covers everyone else's reads).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account.personal_data import Vault
from image_router.account.service import AccountError, normalise_email
from image_router.db.tables import Account, Generation
from image_router.kit.clock import utcnow
from image_router.privacy import requests as dsr
from image_router.privacy.preferences import Preferences

NAME_MAX = 200
USAGE_PAGE_MAX = 100


class ProfileError(AccountError):
    """A correction that cannot be made; the message is meant for the person."""


class EmailTaken(ProfileError):
    """Another account already uses the e-mail address."""


class ManagedElsewhere(ProfileError):
    """The identity provider (Clerk) is where this field is changed."""


class UnknownAccount(ProfileError):
    """No live account with this id."""


@dataclass(frozen=True)
class Restriction:
    restricted: bool
    reason: str | None
    restricted_at: datetime | None
    lift_notified_at: datetime | None


@dataclass(frozen=True)
class Legal:
    terms_version_accepted: str | None
    terms_accepted_at: datetime | None
    privacy_version_notified: str | None


@dataclass(frozen=True)
class AccountDetails:
    id: str
    email: str
    name: str | None
    role: str
    status: str
    created_at: datetime
    balance: int  # credits
    preferences: Preferences
    restriction: Restriction
    legal: Legal
    auth_provider: str


async def account_details(conn: AsyncConnection, vault: Vault, account_id: str) -> AccountDetails:
    row = (await conn.execute(select(Account).where(Account.id == account_id))).first()
    if row is None or row.status == "deleted":
        raise UnknownAccount(f"no account with id {account_id}")
    return AccountDetails(
        id=row.id,
        email=await vault.open(row.id, row.email_enc) or "",
        name=await vault.open(row.id, row.name_enc),
        role=row.role,
        status=row.status,
        created_at=row.created_at,
        balance=int(row.balance),
        preferences=Preferences(
            store_prompts=bool(row.store_prompts),
            allow_routing_improvement=bool(row.allow_routing_improvement),
            marketing_emails=bool(row.marketing_emails),
        ),
        restriction=Restriction(
            restricted=bool(row.processing_restricted),
            reason=await vault.open(row.id, row.restricted_reason_enc),
            restricted_at=row.restricted_at,
            lift_notified_at=row.restriction_lift_notified_at,
        ),
        legal=Legal(
            terms_version_accepted=row.terms_version_accepted,
            terms_accepted_at=row.terms_accepted_at,
            privacy_version_notified=row.privacy_version_notified,
        ),
        auth_provider=row.auth_provider,
    )


_UNSET: Any = object()


async def rectify(
    conn: AsyncConnection,
    vault: Vault,
    account_id: str,
    *,
    email: str | None = _UNSET,
    name: str | None = _UNSET,
    identity_managed_elsewhere: bool = False,
    channel: str = "api",
) -> AccountDetails:
    """Correct the e-mail and/or name (each only when given; a blank name clears it).

    `identity_managed_elsewhere` is True when the deployment signs people in with Clerk;
    an account created by Clerk is refused likewise. A taken e-mail raises EmailTaken.
    The correction is recorded as a fulfilled data-subject request (rectification).
    """
    details = await account_details(conn, vault, account_id)
    if identity_managed_elsewhere or details.auth_provider != "local":
        raise ManagedElsewhere(
            "Your name and e-mail address come from your sign-in provider (Clerk): change "
            "them in your Clerk user profile, and this account follows within moments."
        )
    values: dict[str, Any] = {}
    if email is not _UNSET:
        if email is None:
            raise ProfileError("an account needs an e-mail address")
        new_email = normalise_email(email)
        if new_email != details.email:
            index = vault.email_index(new_email)
            owner = await conn.scalar(select(Account.id).where(Account.email_bidx == index))
            if owner is not None and owner != account_id:
                raise EmailTaken(f"another account already uses {new_email}")
            values["email_bidx"] = index
            values["email_enc"] = await vault.seal(account_id, new_email)
    if name is not _UNSET:
        new_name = (name or "").strip() or None
        if new_name is not None and len(new_name) > NAME_MAX:
            raise ProfileError(f"a name is at most {NAME_MAX} characters")
        if new_name != details.name:
            values["name_enc"] = await vault.seal(account_id, new_name)
    if values:
        await conn.execute(update(Account).where(Account.id == account_id).values(**values))
        await dsr.record_fulfilled(
            conn, account_id=account_id, type="rectification", channel=channel
        )
    return await account_details(conn, vault, account_id)


@dataclass(frozen=True)
class UsageRow:
    id: str
    created_at: datetime
    modality: str
    model: str
    provider: str
    status: str
    cost: int  # credits
    latency_ms: int | None
    size: str
    quality: str | None
    seconds: str | None
    api_key_id: str | None
    prompt: str | None  # None: not stored, expired, or deleted
    prompt_stored: bool
    output_urls: list[str]
    outputs_expire_at: datetime | None
    content_deleted_at: datetime | None
    error: str | None


@dataclass(frozen=True)
class UsagePage:
    rows: list[UsageRow]
    next_before: str | None  # the id to pass as `before` for the next (older) page


async def usage_page(
    conn: AsyncConnection,
    vault: Vault,
    account_id: str,
    *,
    limit: int = 50,
    before: str | datetime | None = None,
) -> UsagePage:
    """Usage rows newest first. `before` is a row id (the previous page's `next_before`),
    or a time: only older rows are listed."""
    if not 1 <= limit <= USAGE_PAGE_MAX:
        raise ProfileError(f"limit must be between 1 and {USAGE_PAGE_MAX}")
    query = select(Generation).where(Generation.account_id == account_id)
    if isinstance(before, datetime):
        query = query.where(Generation.created_at < before)
    elif before is not None:
        anchor = (
            await conn.execute(
                select(Generation.created_at).where(
                    Generation.id == before, Generation.account_id == account_id
                )
            )
        ).first()
        if anchor is None:
            raise ProfileError(f"no usage row with id {before}")
        query = query.where(
            or_(
                Generation.created_at < anchor.created_at,
                and_(Generation.created_at == anchor.created_at, Generation.id < before),
            )
        )
    query = query.order_by(Generation.created_at.desc(), Generation.id.desc()).limit(limit + 1)
    found = (await conn.execute(query)).all()
    now = utcnow()
    rows = [await _usage_row(conn, vault, r, now) for r in found[:limit]]
    return UsagePage(rows=rows, next_before=rows[-1].id if len(found) > limit else None)


async def _usage_row(conn: AsyncConnection, vault: Vault, r: Any, now: datetime) -> UsageRow:
    prompt = await vault.open(r.account_id, r.prompt_enc)
    expired = r.outputs_expire_at is not None and r.outputs_expire_at <= now
    return UsageRow(
        id=r.id,
        created_at=r.created_at,
        modality=r.modality,
        model=r.model,
        provider=r.provider,
        status=r.status,
        cost=int(r.cost),
        latency_ms=r.latency_ms,
        size=r.size,
        quality=r.quality,
        seconds=r.seconds,
        api_key_id=r.api_key_id,
        prompt=prompt,
        prompt_stored=prompt is not None,
        # Links to outputs already purged would only lead to a 404.
        output_urls=[] if expired else list(r.output_urls or []),
        outputs_expire_at=r.outputs_expire_at,
        content_deleted_at=r.content_deleted_at,
        error=r.error,
    )
