"""What a request would cost, before it is sent: the website's price calculator.

The answer comes from the very code a generation runs: the request is validated like one
(`validate_image` / `validate_video`, so sizes, seconds and `n` are normalised and refused
the same way), its `PriceFacts` are built by `price_facts`, and `plan_routes` quotes each
route with `catalog.pricing.quote`. The first plan's quote is what the generation would
hold; for a price known in advance it is also what it charges (`min(settle, quote)`), for
a vendor-reported price it is the most it can charge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from image_router.catalog.pricing import pricing_type
from image_router.catalog.spec import Catalog
from image_router.errors import ModelNotFound
from image_router.generation.planning import plan_routes, price_facts
from image_router.generation.validation import validate_image, validate_video
from image_router.kit.money import Credits, usd_to_credits
from image_router.providers.contract import InputFile

#: Input images a quote may count (the API takes at most 16 uploads).
MAX_QUOTED_IMAGES = 16


@dataclass(frozen=True)
class Quote:
    model: str
    provider: str  # the route a generation would try first
    usd: Decimal  # the quote of that route, before rounding to credits
    credits: Credits  # what is held, and for a known price what is charged
    pricing_type: str  # fixed | calculated | post_generation (the vendor reports the cost)
    size: str
    quality: str
    seconds: float | None
    images: int
    n: int
    available: bool  # a vendor of the model is configured on this server

    @property
    def exact(self) -> bool:
        """True when the charge is this quote; False when it is at most this quote."""
        return self.pricing_type != "post_generation"


def quote_request(
    catalog: Catalog,
    enabled: frozenset[str],
    model_id: str,
    fields: Mapping[str, Any],
    *,
    images: int = 0,
) -> Quote:
    """The quote of a request for `model_id` with these generation `fields` (`size`,
    `quality`, `seconds`, `n`, `prompt`) and `images` input images.

    Raises `ModelNotFound` for an unknown id and `InvalidRequest` for what a generation
    would refuse. A model whose vendors are not configured here is quoted over all of its
    routes (`available` is then false).
    """
    spec = catalog.get(catalog.resolve(model_id))
    if spec is None:
        raise ModelNotFound(f"The model '{model_id}' does not exist.", param="model")
    available = any(route.provider in enabled for route in spec.routes)
    providers = enabled if available else frozenset(r.provider for r in spec.routes)
    uploads = tuple(
        InputFile(b"", "image/png", f"image-{i}.png")
        for i in range(max(0, min(images, MAX_QUOTED_IMAGES)))
    )
    body = {**fields, "model": spec.id}
    request = (
        validate_video(body, catalog, images=uploads, enabled=providers)
        if spec.modality == "video"
        else validate_image(body, catalog, images=uploads, enabled=providers)
    )
    facts = price_facts(request)
    first = plan_routes(providers, spec, request, facts)[0]
    return Quote(
        model=spec.id,
        provider=first.route.provider,
        usd=first.quote_usd,
        credits=usd_to_credits(first.quote_usd),
        pricing_type=pricing_type(first.route.price),
        size=request.size,
        quality=request.quality,
        seconds=request.seconds,
        images=len(request.images),
        n=request.n,
        available=available,
    )
