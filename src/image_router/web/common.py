"""Sign-in guards, CSRF, cookies and rendering shared by the website's pages.

Who is signed in comes from `api/identity.py` (`SessionDep`), as for the API; the guards
here turn "nobody" into the page's answer: the sign-in redirect, or the CSRF refusal.

CSRF: a signed-in browser's forms carry its session's token; before sign-in, forms carry a
random token that must equal the `ir_csrf` cookie (double submit), so even the sign-in form
cannot be posted from another site. Cookies are HttpOnly and SameSite=Lax, and Secure when
the site is served over HTTPS.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from image_router.account.sessions import SessionView
from image_router.api.identity import SESSION_COOKIE, SessionDep
from image_router.web.state import WebState

CSRF_COOKIE = "ir_csrf"
FLASH_COOKIE = "ir_flash"
CSRF_FIELD = "csrf_token"
CSRF_REFUSED = (
    "This form has expired or did not come from this site. Go back, reload the page and try again."
)
# Flash messages travel as a code, so a cookie set by someone else cannot inject text.
FLASHES = {
    "welcome": "Welcome! Your account is ready.",
    "signed_in": "You are signed in.",
    "signed_out": "You have been signed out.",
    "password_changed": "Your password has been changed. Sign in with the new one.",
    "session_ended": "Your session has ended. Please sign in again.",
}


class PageAnswer(Exception):
    """A page cannot go on and answers `response` instead (the sign-in redirect, a CSRF
    refusal). Raised by the page guards; app.py renders it."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def is_secure(request: Request) -> bool:
    return request.url.scheme == "https" or web_state(request).served_over_https


def _cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=is_secure(request),
    )


def set_session_cookie(request: Request, response: Response, token: str) -> None:
    _cookie(request, response, SESSION_COOKIE, token, web_state(request).session_ttl_s)
    # The pre-sign-in CSRF token is spent: from now on the session's own token is used.
    response.delete_cookie(CSRF_COOKIE, path="/")


def clear_session_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=is_secure(request)
    )


def field(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def csrf_ok(request: Request, form: FormData, session: SessionView | None) -> bool:
    expected = session.csrf_token if session is not None else request.cookies.get(CSRF_COOKIE)
    given = field(form, CSRF_FIELD)
    return bool(expected) and bool(given) and secrets.compare_digest(given, str(expected))


def render(
    request: Request,
    template: str,
    session: SessionView | None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Response:
    new_csrf = None
    if session is not None:
        csrf = session.csrf_token
    else:
        csrf = request.cookies.get(CSRF_COOKIE) or ""
        if len(csrf) < 32:
            csrf = new_csrf = secrets.token_urlsafe(32)
    flash_code = request.cookies.get(FLASH_COOKIE, "")
    response = web_state(request).templates.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "csrf_token": csrf,
            "flash": FLASHES.get(flash_code),
            "clerk": web_state(request).clerk_browser,
            **context,
        },
        status_code=status,
        headers={"Cache-Control": "no-store", **(headers or {})},
    )
    if new_csrf is not None:
        _cookie(request, response, CSRF_COOKIE, new_csrf, 24 * 3600)
    if flash_code:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def csrf_refused(request: Request, session: SessionView | None) -> Response:
    return render(request, "error.html", session, status=403, message=CSRF_REFUSED)


def redirect(request: Request, url: str, flash: str | None = None) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    if flash is not None:
        _cookie(request, response, FLASH_COOKIE, flash, 60)
    return response


async def signed_in(request: Request, session: SessionDep) -> SessionView:
    """The session of a signed-in browser; otherwise the page answers with the redirect to
    the sign-in page (`PageAnswer`)."""
    if session is not None:
        return session
    flash = "session_ended" if request.cookies.get(SESSION_COOKIE) else None
    response = redirect(request, "/signin", flash)
    if flash:
        clear_session_cookie(request, response)
    raise PageAnswer(response)


SignedInDep = Annotated[SessionView, Depends(signed_in)]


async def signed_in_form(request: Request, session: SignedInDep) -> tuple[SessionView, FormData]:
    """A signed-in browser's posted form carrying its session's CSRF token; otherwise the
    page answers with the sign-in redirect or the 403 refusal (`PageAnswer`)."""
    form = await request.form()
    if not csrf_ok(request, form, session):
        raise PageAnswer(csrf_refused(request, session))
    return session, form


SignedInFormDep = Annotated[tuple[SessionView, FormData], Depends(signed_in_form)]
