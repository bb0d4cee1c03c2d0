"""The public catalog pages: home, `/models`, `/models/{id}`, `/pricing`, `/pricing.csv`.

Everything is rendered on the server from GET parameters, so search, filters, sorting and
the price calculator work without JavaScript; `static/models.js` only makes them live.
Prices come from the catalog's price rules (`discovery.browse`) and, for one request,
from `generation.quotes` (the code the API charges with).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from image_router.api.deps import ResourcesDep
from image_router.api.identity import SessionDep
from image_router.db.session import autocommit
from image_router.discovery import browse
from image_router.errors import GatewayError
from image_router.generation.quotes import Quote, quote_request
from image_router.kit.clock import utcnow
from image_router.kit.money import credits_to_usd, usd_to_credits
from image_router.limits.rates import AccountScale
from image_router.resources import Resources
from image_router.usage import popularity
from image_router.web.common import render

router = APIRouter(include_in_schema=False)

#: Popularity counts the last week of successful generations...
POPULAR_WINDOW = timedelta(days=7)
#: ...and are read at most this often per process (the query scans the window).
POPULAR_CACHE_S = 300.0
#: Balances shown in the rate-limit table of /pricing (USD).
RATE_TABLE_USD = ("0", "1", "5", "10", "25", "50", "100", "250")


# --------------------------------------------------------------------------- helpers


def site_base(request: Request, res: Resources) -> str:
    """This server's public address: PUBLIC_URL, else the address the browser used."""
    return (res.settings.serving.public_url or str(request.base_url)).rstrip("/")


@dataclass
class _UsesCache:
    counts: dict[str, int]
    expires: float


async def model_uses(request: Request, res: ResourcesDep) -> dict[str, int]:
    """Successful generations per model over the last week, cached per process."""
    cache: _UsesCache | None = getattr(request.app.state, "catalog_model_uses", None)
    now = time.monotonic()
    if cache is not None and cache.expires > now:
        return cache.counts
    async with autocommit(res.engine) as conn:
        counts = await popularity.model_counts(conn, utcnow() - POPULAR_WINDOW)
    request.app.state.catalog_model_uses = _UsesCache(counts, now + POPULAR_CACHE_S)
    return counts


UsesDep = Annotated[dict[str, int], Depends(model_uses)]


def _hide_unavailable(res: Resources) -> bool:
    return res.settings.generation.models_page_hide_unavailable


def _cards(res: Resources, uses: dict[str, int]) -> list[browse.ModelCard]:
    return browse.cards(res.catalog, res.enabled, uses, hide_unavailable=_hide_unavailable(res))


def _money(credits: int) -> str:
    return browse.usd(credits_to_usd(credits))


# ------------------------------------------------------------------------------ home


@router.get("/")
async def home(request: Request, res: ResourcesDep, session: SessionDep, uses: UsesDep) -> Response:
    models = _cards(res, uses)
    free = [c for c in models if c.free and c.available]
    popular = browse.popular(models)
    # The first call must work with a new key: `test/test` (free, no vendor), else the
    # most popular paid model (`:free` ones answer API keys only once an account paid).
    first = next((c for c in models if c.id == "test/test" and c.available), None)
    first = first or (popular[0] if popular else None)
    return render(
        request,
        "index.html",
        session,
        api_base=site_base(request, res) + "/v1/openai",
        popular=popular,
        popular_by_use=any(c.uses for c in models),
        free_models=free,
        first_model=first,
        model_count=len(models),
    )


# ---------------------------------------------------------------------------- /models


@router.get("/models")
async def models_page(
    request: Request, res: ResourcesDep, session: SessionDep, uses: UsesDep
) -> Response:
    models = _cards(res, uses)
    filters = browse.Filters.parse(request.query_params)
    shown = browse.browse(models, filters)
    return render(
        request,
        "models.html",
        session,
        models=shown,
        total=len(models),
        filters=filters,
        sorts=browse.SORTS,
        vendors=browse.vendors_of(models),
        hide_unavailable=_hide_unavailable(res),
        unavailable=sum(not c.available for c in models),
    )


@dataclass(frozen=True)
class Calculator:
    """The calculator form's values and, when they price, the quote."""

    size: str
    quality: str
    seconds: str
    images: int
    n: int
    quote: Quote | None
    error: str | None

    @property
    def amount(self) -> str:
        return _money(self.quote.credits) if self.quote else ""


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        number = int(value) if value not in (None, "") else default
    except ValueError:
        return default
    return max(low, min(high, number))


def calculator(res: Resources, card: browse.ModelCard, query: Any) -> Calculator:
    spec = card.spec
    size = str(query.get("size") or "auto")
    quality = str(query.get("quality") or "auto")
    default_seconds = f"{spec.default_seconds:g}" if spec.default_seconds is not None else ""
    seconds = str(query.get("seconds") or default_seconds)
    images = _int(query.get("images"), 0, 0, card.max_images)
    n = _int(query.get("n"), 1, 1, spec.max_n)
    fields: dict[str, Any] = {"size": size, "quality": quality, "n": n}
    if spec.modality == "video" and seconds:
        fields["seconds"] = seconds
    try:
        quote = quote_request(res.catalog, res.enabled, spec.id, fields, images=images)
    except GatewayError as exc:
        return Calculator(size, quality, seconds, images, n, None, exc.message)
    return Calculator(size, quality, seconds, images, n, quote, None)


@router.get("/models/{model_id:path}")
async def model_page(
    model_id: str, request: Request, res: ResourcesDep, session: SessionDep, uses: UsesDep
) -> Response:
    spec = res.catalog.get(res.catalog.resolve(model_id))
    card = browse.card(spec, res.enabled, uses.get(spec.id, 0)) if spec else None
    if card is None or (not card.available and _hide_unavailable(res)):
        return render(
            request,
            "error.html",
            session,
            status=404,
            message=f"There is no model '{model_id}' on this server. See the list of models.",
        )
    sizes = [s for s in (card.spec.sizes or ()) if s != "auto"]
    return render(
        request,
        "model.html",
        session,
        card=card,
        calc=calculator(res, card, request.query_params),
        sizes=sizes,
        api_base=site_base(request, res) + "/v1/openai",
        params=_parameters(card),
    )


def _parameters(card: browse.ModelCard) -> list[tuple[str, str]]:
    """The generation fields this model takes, in words."""
    spec = card.spec
    first = card.shown_routes[0]
    rows = [("prompt", "text, up to 10,000 characters"), ("size", f"auto, or {card.sizes}")]
    if first.qualities:
        rows.append(("quality", "auto, low, medium, high"))
    if spec.modality == "video":
        rows.append(("seconds", card.seconds or "the vendor's default"))
    else:
        rows.append(("output_format", "png, jpeg, webp (converted when the vendor cannot)"))
        rows.append(("n", f"1 to {spec.max_n}" if spec.max_n > 1 else "1"))
    if card.takes_images:
        rows.append(("image", "1 image" if card.max_images == 1 else f"up to {card.max_images}"))
    if first.mask:
        rows.append(("mask", "1 mask image"))
    rows.append(("response_format", "url, b64_json, b64_ephemeral"))
    return rows


# ---------------------------------------------------------------------------- /pricing


_TABLE_SORTS = {
    "model": lambda c: c.id.lower(),
    "type": lambda c: (c.modality, c.id.lower()),
    "price": lambda c: (c.price.low, c.price.high, c.id.lower()),
    "vendors": lambda c: (", ".join(c.vendors).lower(), c.id.lower()),
}


@dataclass(frozen=True)
class RateRow:
    balance: str
    images: int
    videos: int


def rate_rows(image: AccountScale, video: AccountScale) -> list[RateRow]:
    """Per-second request limits at a few balances, from the limiter's own formula."""
    rows = []
    for amount in RATE_TABLE_USD:
        credits = usd_to_credits(amount)
        rows.append(RateRow(f"${amount}", image.rate(credits).amount, video.rate(credits).amount))
    return rows


@router.get("/pricing")
async def pricing_page(
    request: Request, res: ResourcesDep, session: SessionDep, uses: UsesDep
) -> Response:
    models = _cards(res, uses)
    sort = request.query_params.get("sort", "model")
    sort = sort if sort in _TABLE_SORTS else "model"
    descending = request.query_params.get("order") == "desc"
    ordered = sorted(models, key=_TABLE_SORTS[sort], reverse=descending)
    rates = res.limits.rates
    payments = res.payments
    return render(
        request,
        "pricing.html",
        session,
        models=ordered,
        sort=sort,
        descending=descending,
        free_tier=res.limits.free_tier,
        free_models=[c for c in models if c.spec.free and c.available],
        rates=rates,
        rate_rows=rate_rows(rates.image, rates.video) if rates else [],
        step_image=browse.usd(credits_to_usd(rates.image.step)) if rates else "",
        step_video=browse.usd(credits_to_usd(rates.video.step)) if rates else "",
        topup_min=browse.usd(Decimal(payments.policy.min_cents) / 100) if payments else None,
        topup_max=browse.usd(Decimal(payments.policy.max_cents) / 100) if payments else None,
        support_email=res.settings.payments.support_email,
        example_credits=usd_to_credits("0.04"),
    )


@router.get("/pricing.csv")
async def pricing_csv(res: ResourcesDep, uses: UsesDep) -> Response:
    return Response(
        browse.price_table_csv(_cards(res, uses)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="image-router-prices.csv"'},
    )
