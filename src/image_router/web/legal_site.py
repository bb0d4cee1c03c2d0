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
from urllib.parse import urlsplit

from fastapi import Depends, Request

from image_router.account.mailer import build_mailer
from image_router.config import Settings
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.legal.consent_cookie import CONSENT_COOKIE, CONSENT_MAX_AGE, parse_consent_cookie
from image_router.legal.documents import LegalDocument, LegalDocuments, load_documents
from image_router.legal.render import PolicyFacts, RetentionRow, render_document
from image_router.privacy import jobs, policy, policy_mail
from image_router.providers import PROVIDERS
from image_router.resources import Resources, provider_problem, public_url
from image_router.web.common import current_session, resources_of


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
    documents = load_documents(settings.legal_dir)
    facts = policy_facts(settings)
    contact = settings.security_contact or f"mailto:{settings.privacy_contact_email}"
    if "@" in contact and ":" not in contact:
        contact = f"mailto:{contact}"
    return LegalSite(
        documents=documents,
        html={doc.name: render_document(doc, facts) for doc in documents.all()},
        analytics_script_url=settings.analytics_script_url or None,
        consent_reask_days=settings.consent_reask_days,
        grace_days=settings.legal_grace_days,
        contact_email=settings.privacy_contact_email,
        security_contact=contact,
        security_policy_url=settings.security_policy_url,
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


async def attach_legal_ui(request: Request) -> LegalUI:
    """Work out the banners of this request and leave them for the templates."""
    site = legal_site(request)
    session = await current_session(request)
    notices = policy.AccountNotices()
    if session is not None:
        async with unit_of_work(resources_of(request).engine) as conn:
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


# ------------------------------------------------------------------ facts


# Who a provider id stands for, as a reader of the policy knows them.
VENDOR_NAMES = {
    "openai": "OpenAI",
    "deepinfra": "DeepInfra",
    "together": "Together AI",
    "chutes": "Chutes",
    "vertex": "Google Cloud (Vertex AI)",
    "nanogpt": "NanoGPT",
    "openrouter": "OpenRouter",
    "fal": "fal.ai",
    "zai": "Z.ai",
    "grok": "xAI",
    "replicate": "Replicate",
    "wavespeed": "WaveSpeedAI",
    "gemini": "Google (Gemini API)",
    "geminiImagen": "Google (Gemini API)",
    "runware": "Runware",
}


def site_base(settings: Settings) -> str | None:
    """The website's address when configured (SITE_URL, else PUBLIC_URL), without a slash."""
    configured = settings.site_url or settings.public_url
    return configured.rstrip("/") if configured else None


def policy_facts(settings: Settings) -> PolicyFacts:
    analytics = settings.analytics_script_url
    return PolicyFacts(
        contact_email=settings.privacy_contact_email,
        site_url=site_base(settings) or public_url(settings),
        retention=retention_rows(settings),
        clerk=settings.auth_provider == "clerk",
        stripe=settings.payments_provider == "stripe",
        analytics_host=_host(analytics) if analytics else None,
        store_prompts_default=settings.default_store_prompts,
        object_storage=bool(settings.storage_url and settings.storage_url.startswith("s3://")),
        vendors=configured_vendors(settings),
        grace_days=settings.legal_grace_days,
        consent_reask_days=settings.consent_reask_days,
        consent_cookie_days=CONSENT_MAX_AGE.days,
        session_days=max(1, round(settings.session_ttl_s / 86400)),
    )


def configured_vendors(settings: Settings) -> tuple[str, ...]:
    """The AI vendors this deployment can send requests to (those with a key)."""
    names: list[str] = []
    for provider_id in PROVIDERS:
        if provider_id == "test" or provider_problem(settings, provider_id) is not None:
            continue
        name = VENDOR_NAMES.get(provider_id, provider_id)
        if name not in names:
            names.append(name)
    return tuple(names)


def retention_rows(settings: Settings) -> tuple[RetentionRow, ...]:
    s = settings
    prompts = (
        "not stored"
        if s.retention_prompts_days == 0
        else f"{_days(s.retention_prompts_days)} (not stored at all while prompt storage is off)"
    )
    return (
        RetentionRow(
            "Prompts and request parameters of your generations",
            prompts,
            "RETENTION_PROMPTS_DAYS",
        ),
        RetentionRow(
            "Generated images and videos hosted for download",
            _count(s.retention_outputs_hours, "hour"),
            "RETENTION_OUTPUTS_HOURS",
        ),
        RetentionRow(
            "Usage records without content (time, model, size, status, cost)",
            _days(s.retention_usage_meta_days),
            "RETENTION_USAGE_META_DAYS",
        ),
        RetentionRow(
            "IP addresses and browser names in request and sign-in records (security)",
            _days(s.retention_security_log_days),
            "RETENTION_SECURITY_LOG_DAYS",
        ),
        RetentionRow(
            "Payments, refunds and the credit ledger (accounting law)",
            _count(s.retention_accounting_years, "year"),
            "RETENTION_ACCOUNTING_YEARS",
        ),
        RetentionRow(
            "Identifiers of payment and sign-in webhooks (to process each once)",
            _days(s.retention_webhook_ids_days),
            "RETENTION_WEBHOOK_IDS_DAYS",
        ),
        RetentionRow(
            "Audit log of privacy actions and staff access to personal data",
            _days(s.retention_audit_days),
            "RETENTION_AUDIT_DAYS",
        ),
        RetentionRow(
            "Records of your consents and policy acceptances (proof)",
            f"{_days(s.retention_consent_proof_days)} after your account is closed",
            "RETENTION_CONSENT_PROOF_DAYS",
        ),
        RetentionRow(
            "Data exports you request (the download)",
            f"{_count(s.export_ttl_hours, 'hour')} after they are ready",
            "EXPORT_TTL_HOURS",
        ),
    )


def _days(days: int) -> str:
    return _count(days, "day")


def _count(number: int, unit: str) -> str:
    return f"{number} {unit}" if number == 1 else f"{number} {unit}s"


def _host(url: str) -> str:
    return urlsplit(url).netloc or url


# ------------------------------------------------- LEG-2: material privacy changes by e-mail


async def queue_privacy_notice(res: Resources, site: LegalSite) -> bool:
    """At start-up: queue the e-mail announcing a new material privacy version (once)."""
    url = f"{site_base(res.settings) or public_url(res.settings)}/privacy"
    async with unit_of_work(res.engine) as conn:
        return await policy_mail.queue_notice(conn, site.documents, url, utcnow())


async def _mail_privacy_notice(res: Resources, job: jobs.JobRow) -> None:
    mailer = build_mailer(res.settings.smtp_url, res.settings.smtp_from)
    await policy_mail.mail_notice(res.engine, res.vault, mailer, job.payload, job.now)


jobs.register(policy_mail.JOB_KIND, _mail_privacy_notice)
