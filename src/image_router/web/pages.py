"""The first pages of the website: sign-up, sign-in, sign-out, password reset, account.

`signed_in` and `signed_in_form` guard every page of a signed-in person (the keys and
billing pages too): they answer the redirect to the sign-in page, or the CSRF refusal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import FormData
from starlette.responses import Response

from image_router.account import local_auth
from image_router.account.mailer import MailError
from image_router.account.service import AccountError
from image_router.account.sessions import SessionView, revoke_session, start_session
from image_router.api.deps import client_ip
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.limits.rates import Decision
from image_router.privacy import policy
from image_router.web.common import (
    SESSION_COOKIE,
    PageAnswer,
    clear_session_cookie,
    csrf_ok,
    csrf_refused,
    current_session,
    field,
    redirect,
    render,
    resources_of,
    set_session_cookie,
    web_state,
)

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

INVALID_CREDENTIALS = "Invalid e-mail or password."
TERMS_REQUIRED = "To create an account, accept the Terms of Service."
RESET_SENT = (
    "If an account exists for that e-mail, we have sent it a link to choose a new password. "
    "The link works once, within an hour."
)
RESET_INVALID = "This password reset link is invalid, already used or expired."


def _throttled(
    request: Request, decision: Decision | None, template: str, session: SessionView | None
) -> Response | None:
    """A 429 page when the throttle refused this attempt, else None."""
    if decision is None or decision.allowed:
        return None
    wait = decision.reset_s
    message = f"Too many attempts. Please wait {wait} seconds and try again."
    return render(
        request,
        template,
        session,
        status=429,
        headers={"Retry-After": str(max(1, wait))},
        error=message,
    )


@router.get("/")
async def landing(request: Request) -> Response:
    return render(request, "index.html", await current_session(request))


@router.get("/signup")
async def signup_form(request: Request) -> Response:
    if await current_session(request) is not None:
        return redirect(request, "/account")
    return render(request, "signup.html", None)


@dataclass(frozen=True)
class _Credentials:
    """A sign-up or sign-in form that passed its CSRF check and the throttle."""

    session: SessionView | None  # the browser's current session, replaced on success
    email: str
    password: str
    form: FormData


async def _checked_form(
    request: Request, action: str, template: str, *, per_email: bool
) -> _Credentials:
    """The posted credentials; otherwise the page refuses them (`PageAnswer`): 403 without
    this site's CSRF token, 429 once this address (and e-mail, when `per_email`) has used
    up its attempts."""
    session = await current_session(request)
    form = await request.form()
    if not csrf_ok(request, form, session):
        raise PageAnswer(csrf_refused(request, session))
    email = field(form, "email")
    ip = client_ip(request) or "-"
    throttle = web_state(request)
    decision = await (
        throttle.hit_credentials(action, email, ip)
        if per_email
        else throttle.hit_address(action, ip)
    )
    limited = _throttled(request, decision, template, None)
    if limited is not None:
        raise PageAnswer(limited)
    return _Credentials(session, email, field(form, "password"), form)


async def _start_session(
    conn: AsyncConnection, request: Request, account_id: str, replacing: SessionView | None
) -> str:
    """A new session for the account (ending the browser's previous one); its cookie token."""
    if replacing is not None:
        await revoke_session(conn, replacing.id)
    return await start_session(
        conn,
        account_id,
        ttl_s=resources_of(request).settings.session_ttl_s,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


def _signed_in(request: Request, token: str, flash: str) -> Response:
    response = redirect(request, "/account", flash)
    set_session_cookie(request, response, token)
    return response


@router.post("/signup")
async def signup(request: Request) -> Response:
    # Throttled per address: a sign-up names an e-mail that has no attempts yet.
    checked = await _checked_form(request, "signup", "signup.html", per_email=False)
    res = resources_of(request)
    if not checked.form.get("accept_terms"):
        return render(
            request, "signup.html", None, status=400, error=TERMS_REQUIRED, email=checked.email
        )
    documents = request.app.state.legal.documents
    try:
        async with unit_of_work(res.engine) as conn:
            account = await local_auth.sign_up(
                conn,
                res.vault,
                checked.email,
                checked.password,
                store_prompts=res.settings.default_store_prompts,
            )
            # LEG-4: the proof of what was accepted, in the sign-up's own transaction.
            await policy.record_signup_consent(
                conn, account.account_id, documents, source="signup", now=utcnow()
            )
            token = await _start_session(conn, request, account.account_id, checked.session)
    except AccountError as exc:
        return render(request, "signup.html", None, status=400, error=str(exc), email=checked.email)
    return _signed_in(request, token, "welcome")


@router.get("/signin")
async def signin_form(request: Request) -> Response:
    if await current_session(request) is not None:
        return redirect(request, "/account")
    return render(request, "signin.html", None)


@router.post("/signin")
async def signin(request: Request) -> Response:
    checked = await _checked_form(request, "signin", "signin.html", per_email=True)
    res = resources_of(request)
    token = None
    async with unit_of_work(res.engine) as conn:
        account = await local_auth.sign_in(conn, res.vault, checked.email, checked.password)
        if account is not None:
            token = await _start_session(conn, request, account.account_id, checked.session)
    if token is None:
        return render(
            request, "signin.html", None, status=401, error=INVALID_CREDENTIALS, email=checked.email
        )
    return _signed_in(request, token, "signed_in")


@router.post("/signout")
async def signout(request: Request) -> Response:
    session = await current_session(request)
    form = await request.form()
    if session is None:
        # Already signed out (expired or revoked): nothing to protect, just tidy up.
        response = redirect(request, "/", "signed_out")
        clear_session_cookie(request, response)
        return response
    if not csrf_ok(request, form, session):
        return csrf_refused(request, session)
    async with unit_of_work(resources_of(request).engine) as conn:
        await revoke_session(conn, session.id)
    response = redirect(request, "/", "signed_out")
    clear_session_cookie(request, response)
    return response


@router.get("/password/forgot")
async def forgot_form(request: Request) -> Response:
    return render(request, "forgot.html", await current_session(request))


@router.post("/password/forgot")
async def forgot(request: Request) -> Response:
    session = await current_session(request)
    form = await request.form()
    if not csrf_ok(request, form, session):
        return csrf_refused(request, session)
    email = field(form, "email")
    ip = client_ip(request) or "-"
    decision = await web_state(request).hit_credentials("reset", email, ip)
    limited = _throttled(request, decision, "forgot.html", session)
    if limited is not None:
        return limited
    res = resources_of(request)
    async with unit_of_work(res.engine) as conn:
        found = await local_auth.request_reset(conn, res.vault, email)
    if found is not None:
        to, token = found
        site = (res.settings.site_url or res.settings.public_url or str(request.base_url)).rstrip(
            "/"
        )
        body = (
            web_state(request)
            .templates.get_template("email_reset.txt")
            .render(link=f"{site}/password/reset?token={token}", hours=1)
        )
        try:
            await web_state(request).mailer.send(to, "Reset your Image Router password", body)
        except MailError as exc:
            # The page still answers as for any e-mail, so a mail outage does not reveal
            # which accounts exist; the operator sees the failure in the log.
            log.error("could not send a password reset e-mail: %s", exc)
    return render(request, "forgot.html", session, notice=RESET_SENT)


@router.get("/password/reset")
async def reset_form(request: Request, token: str = "") -> Response:
    session = await current_session(request)
    async with unit_of_work(resources_of(request).engine) as conn:
        valid = bool(token) and await local_auth.reset_is_valid(conn, token)
    if not valid:
        return render(request, "reset.html", session, status=400, invalid=RESET_INVALID)
    return render(request, "reset.html", session, token=token)


@router.post("/password/reset")
async def reset(request: Request) -> Response:
    session = await current_session(request)
    form = await request.form()
    if not csrf_ok(request, form, session):
        return csrf_refused(request, session)
    token = field(form, "token")
    try:
        async with unit_of_work(resources_of(request).engine) as conn:
            account_id = await local_auth.reset_password(conn, token, field(form, "password"))
    except AccountError as exc:
        return render(request, "reset.html", session, status=400, token=token, error=str(exc))
    if account_id is None:
        return render(request, "reset.html", session, status=400, invalid=RESET_INVALID)
    # Every session of the account was revoked, this browser's included.
    response = redirect(request, "/signin", "password_changed")
    clear_session_cookie(request, response)
    return response


async def signed_in(request: Request) -> SessionView:
    """The session of a signed-in browser; otherwise the page answers with the redirect to
    the sign-in page (`PageAnswer`)."""
    session = await current_session(request)
    if session is not None:
        return session
    flash = "session_ended" if request.cookies.get(SESSION_COOKIE) else None
    response = redirect(request, "/signin", flash)
    if flash:
        clear_session_cookie(request, response)
    raise PageAnswer(response)


async def signed_in_form(request: Request) -> tuple[SessionView, FormData]:
    """A signed-in browser's posted form carrying its session's CSRF token; otherwise the
    page answers with the sign-in redirect or the 403 refusal (`PageAnswer`)."""
    session = await signed_in(request)
    form = await request.form()
    if not csrf_ok(request, form, session):
        raise PageAnswer(csrf_refused(request, session))
    return session, form


@router.get("/account")
async def account(request: Request) -> Response:
    session = await signed_in(request)
    return render(request, "account.html", session, balance=format_usd(session.balance))
