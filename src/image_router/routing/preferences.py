"""A client's routing preferences (the `provider` object of a generation request).

Named after OpenRouter's provider routing: `order` (vendors to try first), `only`,
`ignore`, `sort` (`price` or `latency`), `allow_fallbacks` and `max_price` (USD). The
filters (`only`, `ignore`, `max_price`) decide which routes may serve at all; `steer`
orders what is left. Pure: no HTTP, no database, no settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from image_router.routing.health import RouteHealth

Sort = Literal["price", "latency"]


@dataclass(frozen=True)
class Preferences:
    order: tuple[str, ...] = ()
    only: frozenset[str] | None = None
    ignore: frozenset[str] = frozenset()
    sort: Sort | None = None
    allow_fallbacks: bool = True
    max_price: Decimal | None = None

    @property
    def given(self) -> bool:
        return self != NO_PREFERENCES

    def excludes(self, provider: str, quote_usd: Decimal) -> str | None:
        """Why a route of `provider` quoted at `quote_usd` may not serve, or None."""
        if self.only is not None and provider not in self.only:
            return "not in 'only'"
        if provider in self.ignore:
            return "in 'ignore'"
        if self.max_price is not None and quote_usd > self.max_price:
            return f"costs up to ${_usd(quote_usd)}, above max_price ${_usd(self.max_price)}"
        return None

    def as_record(self) -> dict[str, Any]:
        """The preferences given (defaults left out), JSON-able, for the usage log."""
        record: dict[str, Any] = {}
        if self.order:
            record["order"] = list(self.order)
        if self.only is not None:
            record["only"] = sorted(self.only)
        if self.ignore:
            record["ignore"] = sorted(self.ignore)
        if self.sort is not None:
            record["sort"] = self.sort
        if not self.allow_fallbacks:
            record["allow_fallbacks"] = False
        if self.max_price is not None:
            record["max_price"] = _usd(self.max_price)
        return record


NO_PREFERENCES = Preferences()


@dataclass(frozen=True)
class Candidate:
    """What `steer` needs to know of a route."""

    key: str
    provider: str
    price: int  # credits quoted
    health: RouteHealth


def steer(candidates: list[Candidate], preferences: Preferences) -> list[Candidate]:
    """The candidates (given in health order) in the order the client asked for.

    The client's `order` comes first, then its `sort`; the health order breaks ties, so
    without preferences nothing moves. Without fallbacks only the first one is kept.
    """
    rank = {provider: i for i, provider in enumerate(preferences.order)}
    position = {c.key: i for i, c in enumerate(candidates)}

    def metric(c: Candidate) -> float:
        if preferences.sort == "price":
            return float(c.price)
        if preferences.sort == "latency":
            # A route never measured goes after the measured ones.
            return math.inf if c.health.latency_s is None else c.health.latency_s
        return 0.0

    ordered = sorted(
        candidates,
        key=lambda c: (rank.get(c.provider, len(rank)), metric(c), position[c.key]),
    )
    return ordered if preferences.allow_fallbacks else ordered[:1]


def reason(provider: str, preferences: Preferences, *, catalog_preferred: bool) -> str:
    """Why the route of `provider` leads after `steer`, in words for the usage log."""
    if provider in preferences.order:
        return "client order"
    if preferences.sort is not None:
        return f"client sort by {preferences.sort}"
    if catalog_preferred:
        return "catalog prefer_when"
    return "catalog order and route health"


def _usd(amount: Decimal) -> str:
    return format(amount.normalize(), "f")
