"""Fallback routes priced above their model's first route.

The gateway holds the first route's quote; a dearer fallback is tried only after the hold
has been extended by the difference, so an account whose balance (or key limit) covers the
first route but not the fallback never reaches it. `image-router catalog check` lists them
so an operator can see which failovers depend on the account's balance.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import product

from image_router.catalog.pricing import PriceFacts, PricingError, quote
from image_router.catalog.spec import ModelSpec, Route

QUALITIES = ("auto", "low", "medium", "high")


@dataclass(frozen=True)
class DearerFallback:
    """A route whose quote exceeds the first route's for some request: by the most at
    `usd` against the first route's `first_usd`."""

    route: Route
    usd: Decimal
    first_usd: Decimal


def dearer_fallbacks(spec: ModelSpec) -> list[DearerFallback]:
    """The routes after the first that quote more than the first for some request (each
    listed size, quality, video length, with and without an input image)."""
    if len(spec.routes) < 2:
        return []
    first = spec.routes[0]
    found = []
    for route in spec.routes[1:]:
        worst: DearerFallback | None = None
        for facts in _requests(spec):
            try:
                first_usd, route_usd = quote(first.price, facts), quote(route.price, facts)
            except PricingError:
                continue  # a request one of the two routes cannot price is never sent to both
            excess = route_usd - first_usd
            if excess > 0 and (worst is None or excess > worst.usd - worst.first_usd):
                worst = DearerFallback(route, route_usd, first_usd)
        if worst is not None:
            found.append(worst)
    return found


def _requests(spec: ModelSpec) -> Iterator[PriceFacts]:
    sizes = spec.sizes or ("auto",)
    seconds: tuple[float | None, ...] = (None,)
    if spec.modality == "video":
        seconds = spec.seconds or (spec.default_seconds,)
    for size, quality, length, images in product(sizes, QUALITIES, seconds, (0, 1)):
        yield PriceFacts(
            size=size, quality=quality, image_count=images, prompt_chars=100, seconds=length
        )
