"""Sessions, CSRF, cookies and rendering shared by the website's pages.

CSRF: a signed-in browser's forms carry its session's token; before sign-in, forms carry a
random token that must equal the `ir_csrf` cookie (double submit), so even the sign-in form
cannot be posted from another site. Cookies are HttpOnly and SameSite=Lax, and Secure when
the site is served over HTTPS.
"""

from __future__ import annotations

import secrets
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from image_router.account.sessions import SessionView, load_session
from image_router.api.clerk import SESSION_COOKIE as CLERK_SESSION_COOKIE
from image_router.api.clerk import session_view as clerk_session_view
from image_router.db.session import unit_of_work
from image_router.resources import Resources
from image_router.web.state import WebState

SESSION_COOKIE = "ir_session"
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
_SESSION_STATE = "image_router.web_session"


class PageAnswer(Exception):
    """A page cannot go on and answers `response` instead (the sign-in redirect, a CSRF
    refusal). Raised by the page guards; app.py renders it."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def web_state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


def resources_of(request: Request) -> Resources:
    res: Resources = request.app.state.resources
    return res


async def current_session(request: Request) -> SessionView | None:
    """The live session of this request's cookie, or None (read once per request)."""
    if _SESSION_STATE in request.scope:
        cached: SessionView | None = request.scope[_SESSION_STATE]
        return cached
    res = resources_of(request)
    if res.clerk is not None:
        # Clerk mode: Clerk's own session cookie; ours (`ir_session`) means nothing here.
        clerk_token = request.cookies.get(CLERK_SESSION_COOKIE)
        session = await clerk_session_view(request, res, clerk_token) if clerk_token else None
        request.scope[_SESSION_STATE] = session
        return session
    token = request.cookies.get(SESSION_COOKIE)
    session = None
    if token:
        async with unit_of_work(resources_of(request).engine) as conn:
            session = await load_session(conn, resources_of(request).vault, token)
    request.scope[_SESSION_STATE] = session
    return session


def is_secure(request: Request) -> bool:
    public = resources_of(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


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
    ttl = int(resources_of(request).settings.session_ttl_s)
    _cookie(request, response, SESSION_COOKIE, token, ttl)
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


def _clerk_browser(request: Request) -> dict[str, str] | None:
    """What the page needs to load Clerk's browser script, which keeps `__session` fresh
    (Clerk session tokens live about a minute), in Clerk mode only."""
    settings = resources_of(request).settings
    if settings.auth_provider != "clerk" or not settings.clerk_publishable_key:
        return None
    return {
        "publishable_key": settings.clerk_publishable_key,
        "frontend_api": (settings.clerk_issuer or "").rstrip("/"),
    }


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
            "clerk": _clerk_browser(request),
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
