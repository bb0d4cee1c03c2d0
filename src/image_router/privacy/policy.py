"""Policy notices, terms acceptance and cookie choices (LEG-2, LEG-3, LEG-4, LEG-C2).

A privacy-policy change is a *notice*: people are told (a banner until they dismiss it) and
nothing is blocked. A terms change needs *acceptance*: after LEGAL_GRACE_DAYS from the day
the new version takes effect, generation answers 403 until it is accepted. Only versions
marked `material` count; a typo fix changes nothing for anyone.

Every notice, acceptance and cookie choice appends a `consents` row (the proof Art. 7(1)
asks for); the account row keeps only the current state, which the banners read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import Account, Consent
from image_router.errors import InvalidRequest
from image_router.legal.documents import LegalDocument, LegalDocuments, is_older

PURPOSE_TERMS = "terms"
PURPOSE_PRIVACY_NOTICE = "privacy_notice"
PURPOSE_ANALYTICS = "analytics_cookies"
TERMS_REQUIRED_CODE = "terms_acceptance_required"
_GUEST_ROLE = "guest"  # the shared guest account of website tokens: nobody can accept for it


class StaleDocumentVersion(InvalidRequest):
    code = "stale_document_version"


@dataclass(frozen=True)
class AccountNotices:
    """What a signed-in person must be shown about the policies."""

    privacy: LegalDocument | None = None  # a material privacy change not yet dismissed
    terms: LegalDocument | None = None  # material terms not yet accepted
    terms_deadline: datetime | None = None  # from then on, the API refuses generation


def terms_deadline(terms: LegalDocument, grace_days: int) -> datetime:
    """When an unaccepted material terms version starts blocking the API."""
    return terms.effective_at() + timedelta(days=grace_days)


def privacy_notice_due(notified: str | None, documents: LegalDocuments) -> bool:
    material = documents.privacy.material_version
    return material is not None and is_older(notified, material)


def terms_outdated(accepted: str | None, documents: LegalDocuments) -> bool:
    material = documents.terms.material_version
    return material is not None and is_older(accepted, material)


async def account_notices(
    conn: AsyncConnection, account_id: str, documents: LegalDocuments, grace_days: int
) -> AccountNotices:
    """The banners due for an account (one small read; nothing when no change is material)."""
    if documents.privacy.material_version is None and documents.terms.material_version is None:
        return AccountNotices()
    row = (
        await conn.execute(
            select(
                Account.privacy_version_notified, Account.terms_version_accepted, Account.role
            ).where(Account.id == account_id)
        )
    ).first()
    if row is None or row.role == _GUEST_ROLE:
        return AccountNotices()
    terms = documents.terms if terms_outdated(row.terms_version_accepted, documents) else None
    return AccountNotices(
        privacy=(
            documents.privacy
            if privacy_notice_due(row.privacy_version_notified, documents)
            else None
        ),
        terms=terms,
        terms_deadline=terms_deadline(terms, grace_days) if terms is not None else None,
    )


async def terms_block(
    conn: AsyncConnection,
    account_id: str,
    documents: LegalDocuments,
    now: datetime,
    grace_days: int,
) -> str | None:
    """Why generation must be refused for want of a terms acceptance, or None (LEG-3).

    Reads the database only while a material terms version is past its grace period.
    """
    terms = documents.terms
    if terms.material_version is None or now < terms_deadline(terms, grace_days):
        return None
    row = (
        await conn.execute(
            select(Account.terms_version_accepted, Account.role).where(Account.id == account_id)
        )
    ).first()
    if row is None or row.role == _GUEST_ROLE:
        return None
    if not terms_outdated(row.terms_version_accepted, documents):
        return None
    return (
        f"Our Terms of Service changed (version {terms.version}, in effect since "
        f"{terms.effective.isoformat()}). Accept them on the website (/terms) or with "
        "POST /v1/account/legal-acceptance to keep using the API."
    )


async def accept_document(
    conn: AsyncConnection,
    account_id: str,
    documents: LegalDocuments,
    name: str,
    version: str,
    *,
    source: str,
    now: datetime,
) -> LegalDocument:
    """Record that the person accepted (terms) or acknowledged (privacy) a version."""
    document = documents.get(name)
    if document is None or name == "cookies":
        raise InvalidRequest(
            "document must be 'terms' or 'privacy' (cookie choices go to /v1/consent/cookies)",
            param="document",
        )
    if version != document.version:
        raise StaleDocumentVersion(
            f"The current {name} version is {document.version!r}, not {version!r}; "
            "read the current version and accept that one",
            param="version",
        )
    if name == "privacy":
        await dismiss_privacy_notice(conn, account_id, documents, version, source=source, now=now)
        return document
    await conn.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(terms_version_accepted=version, terms_accepted_at=now)
    )
    await _append(conn, account_id, PURPOSE_TERMS, True, version, source, now)
    return document


async def dismiss_privacy_notice(
    conn: AsyncConnection,
    account_id: str,
    documents: LegalDocuments,
    version: str,
    *,
    source: str,
    now: datetime,
) -> None:
    """The person has seen the privacy policy `version` (the current one): stop the banner."""
    if version != documents.privacy.version:
        raise StaleDocumentVersion(
            f"The current privacy policy version is {documents.privacy.version!r}, not {version!r}",
            param="version",
        )
    notified = await conn.scalar(
        select(Account.privacy_version_notified).where(Account.id == account_id)
    )
    if not is_older(notified, version):
        return  # already recorded (a second tab, a double click): no second proof row
    await conn.execute(
        update(Account).where(Account.id == account_id).values(privacy_version_notified=version)
    )
    await _append(conn, account_id, PURPOSE_PRIVACY_NOTICE, True, version, source, now)


async def record_signup_consent(
    conn: AsyncConnection,
    account_id: str,
    documents: LegalDocuments,
    *,
    source: str,
    now: datetime,
) -> None:
    """LEG-4: at sign-up the person accepts the current terms and is shown the policy.

    Call it in the sign-up transaction (local sign-up; Clerk's `legal_accepted_at` as
    `now` when present).
    """
    await conn.execute(
        update(Account)
        .where(Account.id == account_id)
        .values(
            terms_version_accepted=documents.terms.version,
            terms_accepted_at=now,
            privacy_version_notified=documents.privacy.version,
        )
    )
    await _append(conn, account_id, PURPOSE_TERMS, True, documents.terms.version, source, now)
    await _append(
        conn, account_id, PURPOSE_PRIVACY_NOTICE, True, documents.privacy.version, source, now
    )


async def record_cookie_choice(
    conn: AsyncConnection,
    *,
    consent_id: str,
    account_id: str | None,
    analytics: bool,
    banner_version: str,
    source: str,
    now: datetime,
) -> None:
    """LEG-C2: the banner's answer, under the visitor's anonymous id (and account if any)."""
    await conn.execute(
        insert(Consent).values(
            account_id=account_id,
            consent_id=consent_id,
            purpose=PURPOSE_ANALYTICS,
            granted=analytics,
            document_version=banner_version,
            source=source,
            created_at=now,
        )
    )


async def _append(
    conn: AsyncConnection,
    account_id: str,
    purpose: str,
    granted: bool,
    version: str,
    source: str,
    now: datetime,
) -> None:
    await conn.execute(
        insert(Consent).values(
            account_id=account_id,
            purpose=purpose,
            granted=granted,
            document_version=version,
            source=source,
            created_at=now,
        )
    )
