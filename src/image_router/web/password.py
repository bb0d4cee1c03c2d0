"""`/account/password`: change the password of a local account (AUTH_PROVIDER=local).

The current password, then the new one twice. Hashed with argon2 as at sign-up; every
other session of the account ends (this browser stays signed in). Attempts are throttled
like sign-in (`SIGNIN_THROTTLE*`, per e-mail and address), so a stolen session cannot be
used to guess the password. In Clerk mode the page says that Clerk manages passwords.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from image_router.account import local_auth
from image_router.account.service import AccountError
from image_router.api.deps import ResourcesDep, client_ip
from image_router.db.session import unit_of_work
from image_router.web.common import SignedInDep, SignedInFormDep, field, redirect, render, web_state

router = APIRouter(include_in_schema=False)

PASSWORD_URL = "/account/password"
MISMATCH = "The two new passwords are not the same."
SAME = "The new password is the same as the current one."
DONE = {
    "changed": "Your password has been changed. Your other sessions have been signed out.",
}


@router.get(PASSWORD_URL)
async def password_form(request: Request, res: ResourcesDep, session: SignedInDep) -> Response:
    return render(
        request,
        "password.html",
        session,
        managed=res.clerk is not None,
        notice=DONE.get(request.query_params.get("done", "")),
    )


@router.post(PASSWORD_URL)
async def change_password(request: Request, res: ResourcesDep, signed: SignedInFormDep) -> Response:
    session, form = signed

    def refused(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return render(
            request,
            "password.html",
            session,
            status=status,
            headers=headers,
            managed=res.clerk is not None,
            error=message,
        )

    if res.clerk is not None:
        return refused(404, "Passwords are managed by the sign-in provider here.")
    decision = await web_state(request).hit_credentials(
        "password", session.email, client_ip(request) or "-"
    )
    if decision is not None and not decision.allowed:
        wait = max(1, decision.reset_s)
        return refused(
            429,
            f"Too many attempts. Please wait {wait} seconds and try again.",
            {"Retry-After": str(wait)},
        )
    current, new = field(form, "current_password"), field(form, "new_password")
    if new != field(form, "new_password_again"):
        return refused(400, MISMATCH)
    if new == current:
        return refused(400, SAME)
    try:
        async with unit_of_work(res.engine) as conn:
            await local_auth.change_password(
                conn, session.account_id, current, new, keep_session=session.id
            )
    except local_auth.WrongPassword as exc:
        return refused(403, str(exc))
    except AccountError as exc:  # the new password breaks the rules
        return refused(400, str(exc))
    return redirect(request, f"{PASSWORD_URL}?done=changed")
