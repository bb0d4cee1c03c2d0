"""The privacy settings pages (privacy-payments.md §4.3).

- `/account/privacy`: the three privacy switches, "Download my data" (a link to
  `GET /v1/account/export`, which the session cookie authorises), "Delete prompt history",
  "Request restriction" and the way to "Delete account";
- `/account/privacy/delete`: what deletion removes and keeps, the remaining balance, a
  re-sign-in prompt when the sign-in is older than REVERIFY_MAX_MINUTES, and the typed
  confirmation. After it the session has ended and the page says what happens next;
- `/account/profile`: correct name and e-mail (local sign-in; Clerk's profile otherwise).

The usage log (`/usage`, formerly `/account/logs`) is `usage.py`.

Every change is a POST carrying the session's CSRF token. Outcomes travel back as a code
in the redirect's query (`?done=`), so a link cannot put words on the page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from image_router.account.sessions import SessionView
from image_router.api.deps import ResourcesDep
from image_router.api.identity import session_identity, signed_in_recently
from image_router.api.privacy import privacy_version
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.privacy import content, erasure, export, preferences, profile, restriction
from image_router.resources import Resources
from image_router.web.common import (
    SignedInDep,
    SignedInFormDep,
    clear_session_cookie,
    field,
    redirect,
    render,
)
from image_router.web.keys import when

router = APIRouter(include_in_schema=False)

PRIVACY_URL = "/account/privacy"
DELETE_URL = "/account/privacy/delete"
PROFILE_URL = "/account/profile"
CONFIRMATION = "DELETE MY ACCOUNT"
DONE = {
    "saved": "Your privacy choices have been saved.",
    "history_deleted": "Your prompt history and stored images have been deleted.",
    "restricted": "Processing of your account is now restricted. Generation is paused.",
    "profile_saved": "Your profile has been updated.",
    "export_started": "Your data is being gathered. It is listed below (and e-mailed to you) "
    "as soon as it is ready to download.",
}
# Shown next to each switch: what it does, in one line.
EXPLAINED = {
    "store_prompts": "Keep your prompts (encrypted) in your usage log so you can see them "
    "later. Off: only the request's metadata (model, size, cost) is kept.",
    "allow_routing_improvement": "Let your requests count, anonymously, in the statistics "
    "that steer traffic away from failing providers. Off: your requests are left out.",
    "marketing_emails": "Send me occasional e-mails about new models and features.",
}
LABELS = {
    "store_prompts": "Store my prompts",
    "allow_routing_improvement": "Help improve routing",
    "marketing_emails": "Product news by e-mail",
}


def _recent_sign_in(session: SessionView, res: Resources) -> bool:
    """The rule of `identity.require_recent_sign_in`, for a page deciding what to show."""
    return signed_in_recently(session_identity(session, res), res)


async def _privacy_page(
    request: Request, res: Resources, session: SessionView, *, status: int = 200, **context: Any
) -> Response:
    async with unit_of_work(res.engine) as conn:
        details = await profile.account_details(conn, res.vault, session.account_id)
        archives = await export.open_archives(conn, session.account_id, utcnow())
    return render(
        request,
        "settings_privacy.html",
        session,
        status=status,
        details=details,
        choices=[
            (name, LABELS[name], EXPLAINED[name], getattr(details.preferences, name))
            for name in preferences.PURPOSES
        ],
        restricted_since=when(details.restriction.restricted_at),
        archives=[(a, when(a.expires_at)) for a in archives],
        recent=_recent_sign_in(session, res),
        reverify_minutes=res.settings.auth.reverify_max_minutes,
        contact=res.settings.legal.privacy_contact_email,
        notice=DONE.get(request.query_params.get("done", "")),
        **context,
    )


@router.get(PRIVACY_URL)
async def privacy_settings(request: Request, res: ResourcesDep, session: SignedInDep) -> Response:
    return await _privacy_page(request, res, session)


@router.post(f"{PRIVACY_URL}/preferences")
async def save_preferences(
    request: Request, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    session, form = signed
    # A checkbox that is not ticked is simply absent from the form.
    wanted = {name: field(form, name) == "on" for name in preferences.PURPOSES}
    async with unit_of_work(res.engine) as conn:
        await preferences.update_preferences(
            conn,
            session.account_id,
            wanted,
            source="settings",
            document_version=privacy_version(request),
        )
    return redirect(request, f"{PRIVACY_URL}?done=saved")


@router.post(f"{PRIVACY_URL}/history/delete")
async def delete_history(request: Request, res: ResourcesDep, signed: SignedInFormDep) -> Response:
    session, _ = signed
    await content.delete_all_content(res.engine, res.store, session.account_id)
    return redirect(request, f"{PRIVACY_URL}?done=history_deleted")


@router.post(f"{PRIVACY_URL}/restriction")
async def request_restriction(
    request: Request, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    session, form = signed
    reason = field(form, "reason").strip()[:2000] or None
    async with unit_of_work(res.engine) as conn:
        await restriction.request_restriction(
            conn, res.vault, session.account_id, reason=reason, channel="web"
        )
    return redirect(request, f"{PRIVACY_URL}?done=restricted")


async def _delete_page(
    request: Request,
    res: Resources,
    session: SessionView,
    *,
    status: int = 200,
    error: str | None = None,
) -> Response:
    async with unit_of_work(res.engine) as conn:
        details = await profile.account_details(conn, res.vault, session.account_id)
    return render(
        request,
        "settings_delete.html",
        session,
        status=status,
        error=error,
        balance=format_usd(details.balance),
        has_balance=details.balance > 0,
        recent=_recent_sign_in(session, res),
        reverify_minutes=res.settings.auth.reverify_max_minutes,
        accounting_years=res.settings.retention.retention_accounting_years,
        confirmation=CONFIRMATION,
    )


@router.get(DELETE_URL)
async def delete_account_form(
    request: Request, res: ResourcesDep, session: SignedInDep
) -> Response:
    return await _delete_page(request, res, session)


@router.post(DELETE_URL)
async def delete_account(request: Request, res: ResourcesDep, signed: SignedInFormDep) -> Response:
    session, form = signed
    if not _recent_sign_in(session, res):
        return await _delete_page(request, res, session, status=403)
    if field(form, "confirm").strip() != CONFIRMATION:
        return await _delete_page(
            request, res, session, status=400, error=f"Type {CONFIRMATION} exactly to confirm."
        )
    async with unit_of_work(res.engine) as conn:
        due = await erasure.queue_erasure(
            conn, res.vault, session.account_id, channel="web", delete_clerk_user=True
        )
    # queue_erasure ended every session of the account, this one included.
    response = render(request, "settings_deleted.html", None, due=when(due), email=session.email)
    clear_session_cookie(request, response)
    return response


@router.get(PROFILE_URL)
async def profile_form(request: Request, res: ResourcesDep, session: SignedInDep) -> Response:
    return await _profile_page(request, res, session)


async def _profile_page(
    request: Request, res: Resources, session: SessionView, *, status: int = 200, **context: Any
) -> Response:
    async with unit_of_work(res.engine) as conn:
        details = await profile.account_details(conn, res.vault, session.account_id)
    managed = res.settings.auth.auth_provider == "clerk" or details.auth_provider != "local"
    return render(
        request,
        "settings_profile.html",
        session,
        status=status,
        details=details,
        managed=managed,
        notice=DONE.get(request.query_params.get("done", "")),
        **context,
    )


@router.post(PROFILE_URL)
async def save_profile(request: Request, res: ResourcesDep, signed: SignedInFormDep) -> Response:
    session, form = signed
    email = field(form, "email")
    if email.strip().lower() != session.email and not _recent_sign_in(session, res):
        return await _profile_page(
            request,
            res,
            session,
            status=403,
            error=f"Changing your e-mail address needs a sign-in within the last "
            f"{res.settings.auth.reverify_max_minutes} minutes: sign out, sign in again and retry.",
        )
    try:
        async with unit_of_work(res.engine) as conn:
            await profile.rectify(
                conn,
                res.vault,
                session.account_id,
                email=email,
                name=field(form, "name"),
                identity_managed_elsewhere=res.settings.auth.auth_provider == "clerk",
                channel="web",
            )
    except ValueError as exc:  # ProfileError, or AccountError for a malformed e-mail
        message = str(exc)
        return await _profile_page(
            request, res, session, status=400, error=message[:1].upper() + message[1:]
        )
    return redirect(request, f"{PROFILE_URL}?done=profile_saved")
