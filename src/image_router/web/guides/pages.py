"""`/docs/guides` (the index) and `/docs/guides/{slug}` (one guide).

The samples in a guide call this server: its `PUBLIC_URL`, else the address the request came
to. What a guide states about limits, caps and errors is read from this process — the
limiter it runs, its settings, the error classes — so the page says what the server does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from image_router.api.deps import ResourcesDep
from image_router.api.identity import SessionDep
from image_router.api.uploads import IMAGE_LIMITS, MAX_FILE_BYTES, MAX_JSON_BYTES, VIDEO_LIMITS
from image_router.generation.validation import MAX_PROMPT
from image_router.kit.money import credits_to_usd, usd_to_credits
from image_router.kit.sizes import MAX_SIDE, MIN_SIDE
from image_router.limits.rates import AccountScale, Rate
from image_router.providers import PROVIDERS
from image_router.resources import Resources
from image_router.web.common import render
from image_router.web.guides.errors_table import error_table
from image_router.web.guides.library import GuideContext, find_guide, load_guides, render_guide

router = APIRouter(include_in_schema=False)

#: What a request's own base URL may look like before a sample shows it (the Host header
#: is the client's to choose); anything else falls back to the configured address.
_PLAIN_URL = re.compile(r"^https?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
#: Balances (USD) the rate table of the limits guide shows.
_TABLE_BALANCES = ("0", "1", "5", "10", "25", "50", "120")


def base_url(request: Request, res: Resources) -> str:
    """This server's public address: PUBLIC_URL, else the request's base URL."""
    configured = res.settings.serving.public_url
    if configured:
        return configured.rstrip("/")
    seen = str(request.base_url).rstrip("/")
    return seen if _PLAIN_URL.match(seen) else "http://127.0.0.1:8000"


def api_links(app: FastAPI) -> Callable[[str, str], str]:
    """`api("post", "/v1/credits")` → that operation's deep link in Swagger UI (/docs).
    An operation the OpenAPI document lacks raises, so a guide cannot link to nothing."""
    links: dict[tuple[str, str], str] = {}
    for path, operations in app.openapi().get("paths", {}).items():
        for method, operation in operations.items():
            tag = (operation.get("tags") or ["default"])[0]
            op_id = operation.get("operationId", "")
            links[(method.lower(), path)] = "/docs#/{}/{}".format(
                *(re.sub(r"\s", "%20", part.strip()) for part in (tag, op_id))
            )

    def link(method: str, path: str) -> str:
        try:
            return links[(method.lower(), path)]
        except KeyError:
            message = f"no operation {method.upper()} {path} in the OpenAPI document"
            raise KeyError(message) from None

    return link


def _rate(rate: Rate) -> str:
    unit = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}.get(rate.window_s)
    return f"{rate.amount} per {unit}" if unit else f"{rate.amount} per {rate.window_s} seconds"


def _scale(scale: AccountScale) -> dict[str, Any]:
    return {
        "step_usd": f"{credits_to_usd(scale.step).normalize():f}",
        "minimum": scale.minimum,
        "maximum": scale.maximum,
        "window": _rate(Rate(1, scale.window_s)).removeprefix("1 per "),
    }


def facts(res: Resources) -> dict[str, Any]:
    """What the guides state about this server."""
    settings = res.settings
    rates = res.limits.rates
    limits: dict[str, Any] = {"enabled": rates is not None}
    if rates is not None:
        limits |= {
            "general": _rate(rates.general),
            "generation_ip": _rate(rates.generation_ip),
            "image": _scale(rates.image),
            "video": _scale(rates.video),
            "table": [
                {
                    "usd": usd,
                    "image": rates.image.rate(usd_to_credits(Decimal(usd))).amount,
                    "video": rates.video.rate(usd_to_credits(Decimal(usd))).amount,
                }
                for usd in _TABLE_BALANCES
            ],
        }
    free = res.limits.free_tier
    return {
        "limits": limits,
        "free": {"funded": free.funded_daily, "unfunded": free.unfunded_daily},
        "heartbeat_after_s": f"{settings.generation.heartbeat_after_s:g}",
        "heartbeat_interval_s": f"{settings.generation.heartbeat_interval_s:g}",
        "uploads": {
            "max_images": IMAGE_LIMITS.max_images,
            "max_video_images": VIDEO_LIMITS.max_images,
            "max_file_mb": MAX_FILE_BYTES // (1024 * 1024),
            "max_json_kb": MAX_JSON_BYTES // 1024,
        },
        "max_prompt": f"{MAX_PROMPT:,}",
        "human_check": res.human_check is not None,
        "web_token_ttl_s": f"{settings.auth.web_token_ttl_s:g}",
        "clerk": res.clerk is not None,
        "stripe": res.payments is not None,
        "reverify_minutes": settings.auth.reverify_max_minutes,
        "error_table": error_table(),
        "sides": {"min": MIN_SIDE, "max": MAX_SIDE},
        "outputs_hours": settings.retention.retention_outputs_hours,
        "idempotency_hours": settings.retention.retention_idempotency_hours,
        "webhook_retry_hours": f"{settings.webhooks.webhook_retry_hours:g}",
        "prompts_days": settings.retention.retention_prompts_days,
        "vendors": ", ".join(f"`{name}`" for name in sorted(PROVIDERS) if name != "test"),
        "configured_vendors": ", ".join(
            f"`{name}`" for name in sorted(res.enabled) if name != "test"
        ),
    }


def guide_context(request: Request, res: Resources) -> GuideContext:
    return GuideContext(
        base_url=base_url(request, res), api_reference=api_links(request.app), facts=facts(res)
    )


@router.get("/docs/guides")
async def guides_index(request: Request, session: SessionDep) -> Response:
    return render(request, "guides.html", session, guides=load_guides(), current=None)


@router.get("/docs/guides/{slug}")
async def guide_page(
    request: Request, slug: str, res: ResourcesDep, session: SessionDep
) -> Response:
    guides = load_guides()
    guide = find_guide(slug, guides)
    if guide is None:
        return render(
            request, "error.html", session, status=404, message=f"No guide is called '{slug}'."
        )
    body = render_guide(guide, guide_context(request, res))
    position = guides.index(guide)
    return render(
        request,
        "guide.html",
        session,
        guides=guides,
        current=guide,
        body=body,
        previous=guides[position - 1] if position > 0 else None,
        next=guides[position + 1] if position + 1 < len(guides) else None,
    )
