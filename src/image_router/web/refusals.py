"""Pages drawn outside the routes: the general rate limiter's refusal, for a browser."""

from __future__ import annotations

from starlette.templating import Jinja2Templates

from image_router.errors import RateLimited
from image_router.limits.guard import GENERAL


def rate_limited_page(templates: Jinja2Templates, retry_after_s: int) -> bytes:
    """The HTML answer to a page request the general limiter refused (429), with the wait.

    Standalone (no session, banners or CSRF token): the limiter answers before any route
    runs, and must stay cheap."""
    html = templates.get_template("rate_limited.html").render(
        message=GENERAL, retry_after=retry_after_s, status=RateLimited.status
    )
    return html.encode()
