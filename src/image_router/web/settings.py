"""The privacy settings pages (privacy-payments.md §4.3).

- `/account/privacy`: the three privacy switches, "Download my data" (a link to
  `GET /v1/account/export`, which the session cookie authorises), "Delete prompt history",
  "Request restriction" and the way to "Delete account";
- `/account/privacy/delete`: what deletion removes and keeps, the remaining balance, a
  re-sign-in prompt when the sign-in is older than REVERIFY_MAX_MINUTES, and the typed
  confirmation. After it the session has ended and the page says what happens next;
- `/account/profile`: correct name and e-mail (local sign-in; Clerk's profile otherwise);
- `/account/logs`: the usage log with prompts where stored, and deleting content.

Every change is a POST carrying the session's CSRF token. Outcomes travel back as a code
in the redirect's query (`?done=`), so a link cannot put words on the page.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from image_router.account.sessions import SessionView
from image_router.api.principal import Principal, require_recent_sign_in
from image_router.api.privacy import parse_before, privacy_version
from image_router.db.session import unit_of_work
from image_router.errors import Forbidden
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.privacy import content, erasure, export, preferences, profile, restriction
from image_router.resources import Resources
from image_router.web.common import clear_session_cookie, field, redirect, render, resources_of
from image_router.web.keys import when
from image_router.web.pages import signed_in, signed_in_form

router = APIRouter(include_in_schema=False)

PRIVACY_URL = "/account/privacy"
DELETE_URL = "/account/privacy/delete"
PROFILE_URL = "/account/profile"
LOGS_URL = "/account/logs"
CONFIRMATION = "DELETE MY ACCOUNT"
LOGS_PAGE = 25
DONE = {
    "saved": "Your privacy choices have been saved.",
    "history_deleted": "Your prompt history and stored images have been deleted.",
    "restricted": "Processing of your account is now restricted. Generation is paused.",
    "profile_saved": "Your profile has been updated.",
    "row_deleted": "The prompt and images of that request have been deleted.",
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
    """The rule of `principal.require_recent_sign_in`, for a page deciding what to show."""
    try:
        require_recent_sign_in(
            Principal(session.account_id, "session", session.authenticated_at), res
        )
    except Forbidden:
        return False
    return True


async def _privacy_page(
    request: Request, session: SessionView, *, status: int = 200, **context: Any
) -> Response:
    res = resources_of(request)
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
        reverify_minutes=res.settings.reverify_max_minutes,
        contact=res.settings.privacy_contact_email,
        notice=DONE.get(request.query_params.get("done", "")),
        **context,
    )


@router.get(PRIVACY_URL)
async def privacy_settings(request: Request) -> Response:
    session = await signed_in(request)
    return await _privacy_page(request, session)


@router.post(f"{PRIVACY_URL}/preferences")
async def save_preferences(request: Request) -> Response:
    session, form = await signed_in_form(request)
    # A checkbox that is not ticked is simply absent from the form.
    wanted = {name: field(form, name) == "on" for name in preferences.PURPOSES}
    res = resources_of(request)
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
async def delete_history(request: Request) -> Response:
    session, _ = await signed_in_form(request)
    res = resources_of(request)
    await content.delete_all_content(res.engine, res.store, session.account_id)
    return redirect(request, f"{PRIVACY_URL}?done=history_deleted")


@router.post(f"{PRIVACY_URL}/restriction")
async def request_restriction(request: Request) -> Response:
    session, form = await signed_in_form(request)
    reason = field(form, "reason").strip()[:2000] or None
    async with unit_of_work(resources_of(request).engine) as conn:
        await restriction.request_restriction(
            conn, resources_of(request).vault, session.account_id, reason=reason, channel="web"
        )
    return redirect(request, f"{PRIVACY_URL}?done=restricted")


async def _delete_page(
    request: Request, session: SessionView, *, status: int = 200, error: str | None = None
) -> Response:
    res = resources_of(request)
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
        reverify_minutes=res.settings.reverify_max_minutes,
        accounting_years=res.settings.retention_accounting_years,
        confirmation=CONFIRMATION,
    )


@router.get(DELETE_URL)
async def delete_account_form(request: Request) -> Response:
    session = await signed_in(request)
    return await _delete_page(request, session)


@router.post(DELETE_URL)
async def delete_account(request: Request) -> Response:
    session, form = await signed_in_form(request)
    res = resources_of(request)
    if not _recent_sign_in(session, res):
        return await _delete_page(request, session, status=403)
    if field(form, "confirm").strip() != CONFIRMATION:
        return await _delete_page(
            request, session, status=400, error=f"Type {CONFIRMATION} exactly to confirm."
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
async def profile_form(request: Request) -> Response:
    session = await signed_in(request)
    return await _profile_page(request, session)


async def _profile_page(
    request: Request, session: SessionView, *, status: int = 200, **context: Any
) -> Response:
    res = resources_of(request)
    async with unit_of_work(res.engine) as conn:
        details = await profile.account_details(conn, res.vault, session.account_id)
    managed = res.settings.auth_provider == "clerk" or details.auth_provider != "local"
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
async def save_profile(request: Request) -> Response:
    session, form = await signed_in_form(request)
    res = resources_of(request)
    email = field(form, "email")
    if email.strip().lower() != session.email and not _recent_sign_in(session, res):
        return await _profile_page(
            request,
            session,
            status=403,
            error=f"Changing your e-mail address needs a sign-in within the last "
            f"{res.settings.reverify_max_minutes} minutes: sign out, sign in again and retry.",
        )
    try:
        async with unit_of_work(res.engine) as conn:
            await profile.rectify(
                conn,
                res.vault,
                session.account_id,
                email=email,
                name=field(form, "name"),
                identity_managed_elsewhere=res.settings.auth_provider == "clerk",
                channel="web",
            )
    except ValueError as exc:  # ProfileError, or AccountError for a malformed e-mail
        message = str(exc)
        return await _profile_page(
            request, session, status=400, error=message[:1].upper() + message[1:]
        )
    return redirect(request, f"{PROFILE_URL}?done=profile_saved")


@router.get(LOGS_URL)
async def usage_log(request: Request) -> Response:
    session = await signed_in(request)
    return await _logs_page(request, session)


async def _logs_page(
    request: Request, session: SessionView, *, status: int = 200, error: str | None = None
) -> Response:
    res = resources_of(request)
    before = request.query_params.get("before")
    try:
        async with unit_of_work(res.engine) as conn:
            page = await profile.usage_page(
                conn, res.vault, session.account_id, limit=LOGS_PAGE, before=parse_before(before)
            )
    except profile.ProfileError:
        return redirect(request, LOGS_URL)  # a stale "older" link: start from the newest
    return render(
        request,
        "logs.html",
        session,
        status=status,
        error=error,
        rows=[(row, when(row.created_at), format_usd(row.cost)) for row in page.rows],
        next_before=page.next_before,
        paged=before is not None,
        notice=DONE.get(request.query_params.get("done", "")),
    )


@router.post(LOGS_URL + "/{generation_id}/delete")
async def delete_row(request: Request, generation_id: str) -> Response:
    session, _ = await signed_in_form(request)
    res = resources_of(request)
    try:
        found = await content.delete_generation_content(
            res.engine, res.store, session.account_id, generation_id
        )
    except content.GenerationRunning as exc:
        return await _logs_page(request, session, status=409, error=str(exc))
    if not found:
        return await _logs_page(
            request, session, status=404, error="There is no such request in your usage log."
        )
    return redirect(request, f"{LOGS_URL}?done=row_deleted")


@router.post(LOGS_URL + "/delete-all")
async def delete_all_rows(request: Request) -> Response:
    session, _ = await signed_in_form(request)
    res = resources_of(request)
    await content.delete_all_content(res.engine, res.store, session.account_id)
    return redirect(request, f"{LOGS_URL}?done=history_deleted")
