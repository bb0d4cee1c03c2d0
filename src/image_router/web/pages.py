"""The first pages of the website: sign-up, sign-in, sign-out, password reset, account.

Every page of a signed-in person (the keys and billing pages too) is guarded by
`common.SignedInDep` / `SignedInFormDep`: they answer the redirect to the sign-in page, or
the CSRF refusal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import APIRouter, Request
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import FormData
from starlette.responses import Response

from image_router.account import local_auth, managed_keys
from image_router.account.mailer import MailError
from image_router.account.service import AccountError
from image_router.account.sessions import SessionView, revoke_session, start_session
from image_router.api.deps import ResourcesDep, client_ip
from image_router.api.identity import SessionDep
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.limits.rates import Decision
from image_router.privacy import policy
from image_router.resources import Resources
from image_router.usage import history
from image_router.web.common import (
    PageAnswer,
    SignedInDep,
    clear_session_cookie,
    csrf_ok,
    csrf_refused,
    field,
    redirect,
    render,
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


@router.get("/signup")
async def signup_form(request: Request, session: SessionDep) -> Response:
    if session is not None:
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
    request: Request, session: SessionView | None, action: str, template: str, *, per_email: bool
) -> _Credentials:
    """The posted credentials; otherwise the page refuses them (`PageAnswer`): 403 without
    this site's CSRF token, 429 once this address (and e-mail, when `per_email`) has used
    up its attempts."""
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
    conn: AsyncConnection,
    request: Request,
    res: Resources,
    account_id: str,
    replacing: SessionView | None,
) -> str:
    """A new session for the account (ending the browser's previous one); its cookie token."""
    if replacing is not None:
        await revoke_session(conn, replacing.id)
    return await start_session(
        conn,
        account_id,
        ttl_s=res.settings.auth.session_ttl_s,
        ip=client_ip(request),
        user_agent=request.headers.get("user-agent"),
    )


def _signed_in(request: Request, token: str, flash: str) -> Response:
    response = redirect(request, "/account", flash)
    set_session_cookie(request, response, token)
    return response


@router.post("/signup")
async def signup(request: Request, res: ResourcesDep, session: SessionDep) -> Response:
    # Throttled per address: a sign-up names an e-mail that has no attempts yet.
    checked = await _checked_form(request, session, "signup", "signup.html", per_email=False)
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
                store_prompts=res.settings.privacy.default_store_prompts,
            )
            # LEG-4: the proof of what was accepted, in the sign-up's own transaction.
            await policy.record_signup_consent(
                conn, account.account_id, documents, source="signup", now=utcnow()
            )
            token = await _start_session(conn, request, res, account.account_id, checked.session)
    except AccountError as exc:
        return render(request, "signup.html", None, status=400, error=str(exc), email=checked.email)
    return _signed_in(request, token, "welcome")


@router.get("/signin")
async def signin_form(request: Request, session: SessionDep) -> Response:
    if session is not None:
        return redirect(request, "/account")
    return render(request, "signin.html", None)


@router.post("/signin")
async def signin(request: Request, res: ResourcesDep, session: SessionDep) -> Response:
    checked = await _checked_form(request, session, "signin", "signin.html", per_email=True)
    token = None
    async with unit_of_work(res.engine) as conn:
        account = await local_auth.sign_in(conn, res.vault, checked.email, checked.password)
        if account is not None:
            token = await _start_session(conn, request, res, account.account_id, checked.session)
    if token is None:
        return render(
            request, "signin.html", None, status=401, error=INVALID_CREDENTIALS, email=checked.email
        )
    return _signed_in(request, token, "signed_in")


@router.post("/signout")
async def signout(request: Request, res: ResourcesDep, session: SessionDep) -> Response:
    form = await request.form()
    if session is None:
        # Already signed out (expired or revoked): nothing to protect, just tidy up.
        response = redirect(request, "/", "signed_out")
        clear_session_cookie(request, response)
        return response
    if not csrf_ok(request, form, session):
        return csrf_refused(request, session)
    async with unit_of_work(res.engine) as conn:
        await revoke_session(conn, session.id)
    response = redirect(request, "/", "signed_out")
    clear_session_cookie(request, response)
    return response


@router.get("/password/forgot")
async def forgot_form(request: Request, session: SessionDep) -> Response:
    return render(request, "forgot.html", session)


@router.post("/password/forgot")
async def forgot(request: Request, res: ResourcesDep, session: SessionDep) -> Response:
    form = await request.form()
    if not csrf_ok(request, form, session):
        return csrf_refused(request, session)
    email = field(form, "email")
    ip = client_ip(request) or "-"
    decision = await web_state(request).hit_credentials("reset", email, ip)
    limited = _throttled(request, decision, "forgot.html", session)
    if limited is not None:
        return limited
    async with unit_of_work(res.engine) as conn:
        found = await local_auth.request_reset(conn, res.vault, email)
    if found is not None:
        to, token = found
        site = (
            res.settings.payments.site_url
            or res.settings.serving.public_url
            or str(request.base_url)
        ).rstrip("/")
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
async def reset_form(
    request: Request, res: ResourcesDep, session: SessionDep, token: str = ""
) -> Response:
    async with unit_of_work(res.engine) as conn:
        valid = bool(token) and await local_auth.reset_is_valid(conn, token)
    if not valid:
        return render(request, "reset.html", session, status=400, invalid=RESET_INVALID)
    return render(request, "reset.html", session, token=token)


@router.post("/password/reset")
async def reset(request: Request, res: ResourcesDep, session: SessionDep) -> Response:
    form = await request.form()
    if not csrf_ok(request, form, session):
        return csrf_refused(request, session)
    token = field(form, "token")
    try:
        async with unit_of_work(res.engine) as conn:
            account_id = await local_auth.reset_password(conn, token, field(form, "password"))
    except AccountError as exc:
        return render(request, "reset.html", session, status=400, token=token, error=str(exc))
    if account_id is None:
        return render(request, "reset.html", session, status=400, invalid=RESET_INVALID)
    # Every session of the account was revoked, this browser's included.
    response = redirect(request, "/signin", "password_changed")
    clear_session_cookie(request, response)
    return response


@router.get("/account")
async def account(request: Request, res: ResourcesDep, session: SignedInDep) -> Response:
    async with unit_of_work(res.engine) as conn:
        keys = await managed_keys.list_keys(conn, session.account_id)
        used = await history.totals(conn, session.account_id, history.UsageFilter())
    return render(
        request,
        "account.html",
        session,
        balance=format_usd(session.balance),
        # The next steps, each marked done once it is.
        has_key=any(not k.is_management for k in keys),
        has_credit=session.balance > 0,
        has_used=used.requests > 0,
        local=res.clerk is None,
    )
