"""`/playground`: try any enabled model from the browser, as a guest or signed in.

The page is rendered with the catalog facts it needs (sizes, qualities, seconds, how many
input images, `max_n`, free or not) as JSON; `static/playground.js` builds the request,
asks `GET /v1/models/{id}/quote` for its price, gets a website token
(`POST /v1/web-token`, after the ALTCHA human check for guests and accounts without
credit) and calls the normal generation API with it. Cancelling aborts that request: the
gateway then releases the hold and cancels the vendor job.

`GET /v1/free-tier` says how many `:free` generations the caller has left today, counted
as the gateway counts them (`limits/free_tier.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from image_router.account.sessions import SessionView
from image_router.api.deps import ResourcesDep, client_ip
from image_router.api.identity import SessionDep
from image_router.catalog.pricing import price_range
from image_router.catalog.spec import ModelSpec, Route
from image_router.db.session import autocommit
from image_router.discovery.browse import usd
from image_router.discovery.service import listed_models
from image_router.generation.validation import QUALITIES
from image_router.kit.clock import utcnow
from image_router.kit.money import credits_to_usd
from image_router.kit.sizes import parse_size
from image_router.ledger import service as ledger
from image_router.limits.free_tier import Allowance
from image_router.resources import Resources
from image_router.usage.recent import recent_outputs
from image_router.web.common import render

router = APIRouter(include_in_schema=False)

#: Sizes offered for a model without its own list, kept to those its bounds admit.
COMMON_SIZES = ("1024x1024", "1024x1536", "1536x1024", "768x768", "512x512", "256x256")
#: Free models are capped at this many pixels (`generation/validation.py`, FREE_SIZE_CAP).
FREE_MAX_PIXELS = 1024 * 1024
OUTPUT_FORMATS = ("png", "jpeg", "webp")


def _usable_routes(spec: ModelSpec, enabled: frozenset[str]) -> list[Route]:
    return [route for route in spec.routes if route.provider in enabled]


def _sizes(spec: ModelSpec) -> list[str]:
    listed = list(spec.sizes) if spec.sizes is not None else list(COMMON_SIZES)
    sizes = [s for s in listed if s == "auto" or spec.size_refusal(s) is None]
    if spec.free:
        sizes = [s for s in sizes if _pixels(s) <= FREE_MAX_PIXELS]
    return ["auto", *(s for s in sizes if s != "auto")]


def _pixels(size: str) -> int:
    dims = parse_size(size)
    return 0 if dims is None else dims[0] * dims[1]


def _qualities(route: Route) -> list[str]:
    if route.quality is None:
        return []
    return [q for q in QUALITIES if route.refusal(q) is None]


def model_facts(spec: ModelSpec, routes: list[Route]) -> dict[str, Any]:
    """What the playground's form needs to know about one model (its first usable route
    decides the options, as it decides the answer of a generation)."""
    first = routes[0]
    takes_images = [r for r in routes if r.image_input is not None]
    return {
        "id": spec.id,
        "modality": spec.modality,
        "free": any(price_range(r.price)[2] == 0 for r in routes),
        "free_tier": spec.free,  # a `:free` model: counted against the daily free cap
        "sizes": _sizes(spec),
        "qualities": _qualities(first),
        "seconds": [int(s) if s == int(s) else s for s in spec.seconds or ()],
        "default_seconds": spec.default_seconds,
        "max_images": max((r.max_images for r in takes_images), default=0),
        "mask": any(r.mask for r in takes_images),
        "max_n": spec.max_n,
    }


def playground_models(res: Resources) -> list[dict[str, Any]]:
    """Every model this server can serve now, free ones first, then by id."""
    listed = listed_models(res.catalog, res.enabled, list_all=False)
    facts = [model_facts(spec, _usable_routes(spec, res.enabled)) for spec, _ in listed]
    return sorted(facts, key=lambda m: (not m["free"], m["modality"] != "image", m["id"].lower()))


def default_model(models: list[dict[str, Any]], wanted: str | None) -> str | None:
    """`?model=` when the server serves it, else a free image model (a `:free` one first,
    then one that is not a test model), else the first model."""
    ids = {m["id"] for m in models}
    if wanted in ids:
        return wanted
    free = [m for m in models if m["free"] and m["modality"] == "image"]
    for choice in (
        [m for m in free if m["free_tier"]],
        [m for m in free if not m["id"].startswith(("test/", "ir/test"))],
        free,
        models,
    ):
        if choice:
            return str(choice[0]["id"])
    return None


@dataclass(frozen=True)
class Caller:
    """Who the page is for: the signed-in account, or a guest (None)."""

    account_id: str | None
    balance: int


async def _caller(res: Resources, session: SessionView | None) -> Caller:
    if session is None:
        return Caller(None, 0)
    async with autocommit(res.engine) as conn:
        return Caller(session.account_id, await ledger.balance(conn, session.account_id))


async def _allowance(request: Request, res: Resources, caller: Caller) -> Allowance:
    return await res.limits.free_tier.allowance(
        account_id=caller.account_id, funded=caller.balance > 0, ip=client_ip(request)
    )


def _allowance_json(allowance: Allowance, funded: bool) -> dict[str, Any]:
    return {
        "limit": allowance.limit,
        "used": allowance.used,
        "remaining": allowance.remaining,
        "resets_at": allowance.resets_at.isoformat().replace("+00:00", "Z"),
        "funded": funded,
    }


def money(credits: int) -> str:
    """Credits for people: "$4.97", "$0.0025"."""
    return usd(credits_to_usd(credits))


#: Where a result's usage row is shown (web/usage.py). The page was once looked up among
#: the app's routes, which FastAPI now folds into included routers: the lookup missed it
#: and every link went through the old address's redirect.
USAGE_URL = "/usage?id="


@router.get("/playground")
async def playground(request: Request, res: ResourcesDep, session: SessionDep) -> Response:
    models = playground_models(res)
    chosen = default_model(models, request.query_params.get("model"))
    caller = await _caller(res, session)
    allowance = await _allowance(request, res, caller)
    recent = []
    if caller.account_id is not None:
        async with autocommit(res.engine) as conn:
            recent = await recent_outputs(conn, caller.account_id, utcnow())
    page = {
        "models": models,
        "model": chosen,
        "signed_in": session is not None,
        "funded": caller.balance > 0,
        "human_check": res.human_check is not None and caller.balance <= 0,
        "free_tier": _allowance_json(allowance, caller.balance > 0),
        "output_formats": OUTPUT_FORMATS,
        "base_url": (res.settings.serving.public_url or str(request.base_url)).rstrip("/"),
        "usage_url": USAGE_URL,
    }
    return render(
        request,
        "playground.html",
        session,
        models=models,
        chosen=chosen,
        balance=money(caller.balance) if session is not None else None,
        allowance=allowance,
        recent=recent,
        money=money,
        page_json=orjson.dumps(page).decode().replace("</", "<\\/"),
    )


@router.get("/v1/free-tier")
async def free_tier(request: Request, res: ResourcesDep, session: SessionDep) -> Response:
    """Today's `:free` generations left for this browser: its account, or as a guest its
    address (`{"limit", "used", "remaining", "resets_at", "funded"}`)."""
    caller = await _caller(res, session)
    allowance = await _allowance(request, res, caller)
    return Response(
        orjson.dumps(_allowance_json(allowance, caller.balance > 0)),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
