"""The policy documents of this process and what each page shows about them.

`build_legal_site` runs when the app is created: it loads the documents (a malformed one
stops the start, naming the file) and renders them once with this deployment's facts
(RET-2: the retention table is generated from the `RETENTION_*` settings, so the published
policy changes with them; the recipients list only what is configured).

`attach_legal_ui` (the `LEGAL_UI` dependency) works out a page's banners and leaves them on
`request.state.legal_ui`, which `base.html` reads. A page without it shows no banner and,
safely, loads no analytics script.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Request

from image_router.api.deps import ResourcesDep
from image_router.api.identity import SessionDep
from image_router.config import Settings
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.legal.consent_cookie import CONSENT_COOKIE, parse_consent_cookie
from image_router.legal.documents import LegalDocument, LegalDocuments, load_documents
from image_router.legal.render import render_document
from image_router.privacy import policy, policy_mail
from image_router.resources import Resources, policy_facts, public_url, site_base


@dataclass(frozen=True)
class LegalSite:
    """The documents of this process, rendered, and the settings the pages need."""

    documents: LegalDocuments
    html: dict[str, str]
    analytics_script_url: str | None
    consent_reask_days: int
    grace_days: int
    contact_email: str
    security_contact: str
    security_policy_url: str | None
    site_url: str | None
    started_at: datetime


def build_legal_site(settings: Settings, now: datetime | None = None) -> LegalSite:
    """Load and render the documents; raises LegalDocumentError naming the broken file."""
    documents = load_documents(settings.legal.legal_dir)
    facts = policy_facts(settings)
    contact = settings.legal.security_contact or f"mailto:{settings.legal.privacy_contact_email}"
    if "@" in contact and ":" not in contact:
        contact = f"mailto:{contact}"
    return LegalSite(
        documents=documents,
        html={doc.name: render_document(doc, facts) for doc in documents.all()},
        analytics_script_url=settings.legal.analytics_script_url or None,
        consent_reask_days=settings.legal.consent_reask_days,
        grace_days=settings.legal.legal_grace_days,
        contact_email=settings.legal.privacy_contact_email,
        security_contact=contact,
        security_policy_url=settings.legal.security_policy_url,
        site_url=site_base(settings),
        started_at=now or utcnow(),
    )


def legal_site(request: Request) -> LegalSite:
    site: LegalSite = request.app.state.legal
    return site


@dataclass(frozen=True)
class LegalUI:
    """What `base.html` shows about the policies on this page."""

    here: str  # where the banner forms return to
    privacy_notice: LegalDocument | None = None
    terms: LegalDocument | None = None
    terms_deadline: date | None = None
    terms_overdue: bool = False  # past the deadline: generation is refused until accepted
    analytics_enabled: bool = False
    cookie_banner: bool = False
    banner_version: str = ""
    analytics_choice: bool | None = None  # the current, still valid choice
    analytics_script_url: str | None = None  # set only after consent (LEG-C2)


async def attach_legal_ui(request: Request, res: ResourcesDep, session: SessionDep) -> LegalUI:
    """Work out the banners of this request and leave them for the templates."""
    site = legal_site(request)
    notices = policy.AccountNotices()
    if session is not None:
        async with unit_of_work(res.engine) as conn:
            notices = await policy.account_notices(
                conn, session.account_id, site.documents, site.grace_days
            )
    choice = _current_choice(request, site)
    analytics = site.analytics_script_url is not None
    ui = LegalUI(
        here=local_path(request.url.path + (f"?{request.url.query}" if request.url.query else "")),
        privacy_notice=notices.privacy,
        terms=notices.terms,
        terms_deadline=notices.terms_deadline.date() if notices.terms_deadline else None,
        terms_overdue=notices.terms_deadline is not None and notices.terms_deadline <= utcnow(),
        analytics_enabled=analytics,
        cookie_banner=analytics and choice is None,
        banner_version=site.documents.cookies.version,
        analytics_choice=choice,
        analytics_script_url=site.analytics_script_url if choice else None,
    )
    request.state.legal_ui = ui
    return ui


LegalUiDep = Annotated[LegalUI, Depends(attach_legal_ui)]
LEGAL_UI = Depends(attach_legal_ui)


def _current_choice(request: Request, site: LegalSite) -> bool | None:
    if site.analytics_script_url is None:
        return None
    stored = parse_consent_cookie(request.cookies.get(CONSENT_COOKIE))
    if stored is None or not stored.is_current(
        site.documents.cookies.version, utcnow(), site.consent_reask_days
    ):
        return None
    return stored.analytics


def local_path(target: str) -> str:
    """`target` if it is a path on this site, else "/" (no open redirect)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target:
        return "/"
    return target


# ------------------------------------------------- LEG-2: material privacy changes by e-mail


async def queue_privacy_notice(res: Resources, site: LegalSite) -> bool:
    """At start-up: queue the e-mail announcing a new material privacy version (once)."""
    url = f"{site_base(res.settings) or public_url(res.settings)}/privacy"
    async with unit_of_work(res.engine) as conn:
        return await policy_mail.queue_notice(conn, site.documents, url, utcnow())
