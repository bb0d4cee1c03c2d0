"""The policy pages, cookie consent, policy acceptance and security.txt.

LEG-1 (pages and versions), LEG-2 (dismissing a privacy notice), LEG-3 (accepting terms),
LEG-C2 (the cookie banner's answer) and SEC-6 (security.txt). What the pages show is
prepared in `legal_site`.
"""

from __future__ import annotations

import contextlib
import secrets
from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request
from markupsafe import Markup
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import PlainTextResponse, Response

from image_router.account.sessions import SessionView
from image_router.api.deps import ResourcesDep
from image_router.api.identity import IdentityDep, SessionDep, current_session
from image_router.api.responses import json_response
from image_router.db.session import unit_of_work
from image_router.errors import Forbidden, InvalidRequest, NotFound
from image_router.kit.clock import utcnow
from image_router.legal.consent_cookie import (
    CONSENT_COOKIE,
    CONSENT_MAX_AGE,
    ConsentCookie,
    new_consent_id,
    parse_consent_cookie,
)
from image_router.privacy import policy
from image_router.web.common import (
    CSRF_COOKIE,
    SignedInFormDep,
    csrf_ok,
    csrf_refused,
    field,
    is_secure,
    redirect,
    render,
)
from image_router.web.legal_site import LegalUiDep, legal_site, local_path

router = APIRouter()
SECURITY_TXT_LIFETIME = timedelta(days=180)  # RFC 9116: Expires < 1 year; never lapses


# ------------------------------------------------------------------ pages


async def _document_page(request: Request, session: SessionView | None, name: str) -> Response:
    site = legal_site(request)
    document = site.documents.get(name)
    assert document is not None
    return render(
        request,
        "legal.html",
        session,
        document=document,
        body=Markup(site.html[name]),  # safe: documents cannot contain raw HTML (render.py)
    )


# The banners (`LegalUiDep`) on these pages, but not on this router's API endpoints.
@router.get("/privacy", include_in_schema=False)
async def privacy_page(request: Request, session: SessionDep, _: LegalUiDep) -> Response:
    return await _document_page(request, session, "privacy")


@router.get("/terms", include_in_schema=False)
async def terms_page(request: Request, session: SessionDep, _: LegalUiDep) -> Response:
    return await _document_page(request, session, "terms")


@router.get("/cookies", include_in_schema=False)
async def cookies_page(request: Request, session: SessionDep, _: LegalUiDep) -> Response:
    return await _document_page(request, session, "cookies")


@router.get("/v1/legal")
async def legal_versions(request: Request) -> dict[str, Any]:
    """The current policy versions (LEG-1)."""
    site = legal_site(request)
    base = site.site_url or str(request.base_url).rstrip("/")
    return {
        "contact_email": site.contact_email,
        "documents": [
            {
                "document": doc.name,
                "title": doc.title,
                "version": doc.version,
                "last_updated": doc.last_updated.isoformat(),
                "effective_at": doc.effective.isoformat(),
                "material": doc.material,
                "url": f"{base}/{doc.name}",
                "sha256": doc.sha256,
            }
            for doc in site.documents.all()
        ],
    }


@router.get("/.well-known/security.txt", include_in_schema=False)
async def security_txt(request: Request) -> Response:
    """RFC 9116; Expires is renewed by every start, so the file never lapses (SEC-6)."""
    site = legal_site(request)
    base = site.site_url or str(request.base_url).rstrip("/")
    expires = (site.started_at + SECURITY_TXT_LIFETIME).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [f"Contact: {site.security_contact}", f"Expires: {expires}"]
    if site.security_policy_url:
        lines.append(f"Policy: {site.security_policy_url}")
    lines += ["Preferred-Languages: en", f"Canonical: {base}/.well-known/security.txt"]
    return PlainTextResponse("\n".join(lines) + "\n")


# ------------------------------------------------------------------ choices


class CookieChoice(BaseModel):
    analytics: bool
    banner_version: str = Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._-]+$")


@router.post("/v1/consent/cookies")
async def cookie_consent(request: Request, res: ResourcesDep) -> Response:
    """Record the cookie banner's answer (LEG-C2): a form post from the banner, or JSON."""
    site = legal_site(request)
    if site.analytics_script_url is None:
        raise NotFound("This site sets no optional cookies, so there is nothing to consent to")
    session = await current_session(request, res)
    content_type = request.headers.get("content-type", "")
    back: str | None = None
    try:
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            if not csrf_ok(request, form, session):
                return csrf_refused(request, session)
            choice = CookieChoice(
                analytics=field(form, "analytics") in ("true", "1", "yes", "on", "accept"),
                banner_version=field(form, "banner_version") or site.documents.cookies.version,
            )
            back = local_path(field(form, "next") or "/")
        else:
            expected = session.csrf_token if session else request.cookies.get(CSRF_COOKIE)
            sent = request.headers.get("x-csrf-token", "")
            if not expected or not secrets.compare_digest(sent.encode(), expected.encode()):
                raise Forbidden("Send the page's csrf-token as X-CSRF-Token", code="csrf_failed")
            choice = CookieChoice.model_validate_json(await request.body())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "body"
        raise InvalidRequest(f"{where}: {first.get('msg', 'invalid')}", param=where) from exc
    previous = parse_consent_cookie(request.cookies.get(CONSENT_COOKIE))
    stored = ConsentCookie(
        consent_id=previous.consent_id if previous else new_consent_id(),
        analytics=choice.analytics,
        at=utcnow(),
        banner_version=choice.banner_version,
    )
    async with unit_of_work(res.engine) as conn:
        await policy.record_cookie_choice(
            conn,
            consent_id=stored.consent_id,
            account_id=session.account_id if session else None,
            analytics=stored.analytics,
            banner_version=stored.banner_version,
            source="banner",
            now=stored.at,
        )
    response: Response
    if back is not None:
        response = redirect(request, back)
    else:
        response = json_response(
            {
                "analytics": stored.analytics,
                "banner_version": stored.banner_version,
                "consent_id": stored.consent_id,
            }
        )
    response.set_cookie(
        CONSENT_COOKIE,
        stored.value(),
        max_age=int(CONSENT_MAX_AGE.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_secure(request),
    )
    return response


@router.post("/account/policy-notice", include_in_schema=False)
async def dismiss_policy_notice(
    request: Request, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    """The privacy-change banner's "Dismiss" (LEG-2): record the version as notified."""
    session, form = signed
    site = legal_site(request)
    async with unit_of_work(res.engine) as conn:
        # A stale version: the policy changed meanwhile, and the banner shows the new one.
        with contextlib.suppress(policy.StaleDocumentVersion):
            await policy.dismiss_privacy_notice(
                conn,
                session.account_id,
                site.documents,
                field(form, "version"),
                source="banner",
                now=utcnow(),
            )
    return redirect(request, local_path(field(form, "next") or "/"))


@router.post("/account/legal-acceptance", include_in_schema=False)
async def accept_terms_form(
    request: Request, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    """The terms banner's "Accept" (LEG-3), as a website form."""
    session, form = signed
    site = legal_site(request)
    async with unit_of_work(res.engine) as conn:
        # A stale version: the terms changed meanwhile, and the banner asks for the new one.
        with contextlib.suppress(policy.StaleDocumentVersion):
            await policy.accept_document(
                conn,
                session.account_id,
                site.documents,
                field(form, "document") or "terms",
                field(form, "version"),
                source="banner",
                now=utcnow(),
            )
    return redirect(request, local_path(field(form, "next") or "/"))


class Acceptance(BaseModel):
    document: Literal["terms", "privacy"]
    version: str = Field(min_length=1, max_length=40)


@router.post("/v1/account/legal-acceptance")
async def accept_document(
    request: Request, body: Acceptance, identity: IdentityDep, res: ResourcesDep
) -> dict[str, Any]:
    """Accept the current terms (or acknowledge the privacy policy) version (LEG-3)."""
    if identity.via == "api_key":
        # Accepting terms is the person's act: a script holding a key cannot do it for them.
        raise Forbidden(
            "Accept the terms signed in (website session), not with an API key",
            code="session_required",
        )
    now = utcnow()
    async with unit_of_work(res.engine) as conn:
        document = await policy.accept_document(
            conn,
            identity.account_id,
            legal_site(request).documents,
            body.document,
            body.version,
            source="api",
            now=now,
        )
    return {"document": document.name, "version": document.version, "accepted_at": now}
