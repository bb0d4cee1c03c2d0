"""`/signin/once?token=…`: a one-time sign-in link, then a password of one's own.

The link is printed once by the first start for the admin account it creates (and by
`image-router users signin-link EMAIL`). It is a password-reset token with its own lifetime
(ADMIN_SIGNIN_LINK_TTL_MINUTES): only its hash is stored and it works once. Opening the link
changes nothing (a link preview cannot spend it); the page asks for a new password, and
sending that form spends the token, sets the password, ends the account's other sessions
and signs this browser in (an admin lands on `/admin`). Local accounts only: in Clerk mode
the page does not exist.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from image_router.account import local_auth
from image_router.account.service import AccountError, get_account
from image_router.account.sessions import revoke_session, start_session
from image_router.api.deps import ResourcesDep, client_ip
from image_router.api.identity import SessionDep
from image_router.db.session import unit_of_work
from image_router.web.common import (
    csrf_ok,
    csrf_refused,
    field,
    redirect,
    render,
    set_session_cookie,
)

router = APIRouter(include_in_schema=False)

ONCE = "/signin/once"
LINK_INVALID = (
    "This sign-in link is invalid, already used or expired. Ask the operator for a new one "
    "(image-router users signin-link EMAIL), or sign in with your password."
)
MISMATCH = "The two passwords differ. Type the same password twice."
NOT_HERE = "There is no page at this address."


@router.get(ONCE)
async def once_form(
    request: Request, res: ResourcesDep, session: SessionDep, token: str = ""
) -> Response:
    if res.clerk is not None:
        return render(request, "error.html", session, status=404, message=NOT_HERE)
    async with unit_of_work(res.engine) as conn:
        account_id = await local_auth.reset_account(conn, token) if token else None
        account = None if account_id is None else await get_account(conn, res.vault, account_id)
    if account is None:
        return render(request, "signin_once.html", session, status=400, invalid=LINK_INVALID)
    return render(request, "signin_once.html", session, token=token, email=account.email)


@router.post(ONCE)
async def once(request: Request, res: ResourcesDep, session: SessionDep) -> Response:
    if res.clerk is not None:
        return render(request, "error.html", session, status=404, message=NOT_HERE)
    form = await request.form()
    if not csrf_ok(request, form, session):
        return csrf_refused(request, session)
    token, password = field(form, "token"), field(form, "password")
    async with unit_of_work(res.engine) as conn:
        account_id = await local_auth.reset_account(conn, token) if token else None
        account = None if account_id is None else await get_account(conn, res.vault, account_id)
    if account is None:
        return render(request, "signin_once.html", session, status=400, invalid=LINK_INVALID)

    def again(message: str) -> Response:
        return render(
            request,
            "signin_once.html",
            session,
            status=400,
            token=token,
            email=account.email,
            error=message,
        )

    if password != field(form, "password_again"):
        return again(MISMATCH)
    try:
        async with unit_of_work(res.engine) as conn:
            # Spends the token, sets the password and ends every session of the account.
            used = await local_auth.reset_password(conn, token, password)
            if used is not None:
                if session is not None:
                    await revoke_session(conn, session.id)
                cookie = await start_session(
                    conn,
                    used,
                    ttl_s=res.settings.auth.session_ttl_s,
                    ip=client_ip(request),
                    user_agent=request.headers.get("user-agent"),
                )
    except AccountError as exc:
        return again(str(exc))
    if used is None:  # spent by another tab in the meantime
        return render(request, "signin_once.html", session, status=400, invalid=LINK_INVALID)
    response = redirect(request, "/admin" if account.role == "admin" else "/account", "signed_in")
    set_session_cookie(request, response, cookie)
    return response
