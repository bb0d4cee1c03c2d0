"""The catalog as the website shows it: a card per model, searched, filtered and sorted.

Pure functions over the catalog, the configured vendors and recent usage counts. Prices
are the catalog's own (`catalog.pricing.price_range`, the numbers `/v2/models` publishes);
nothing here computes a price of its own. A request's exact price is
`generation.quotes.quote_request`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from image_router.catalog import pricing
from image_router.catalog.pricing import PriceRule, price_range, pricing_type
from image_router.catalog.spec import Catalog, ModelSpec, Route
from image_router.kit.sizes import SideBounds

SORTS = {"name": "Name", "price": "Price", "newest": "Newest", "popular": "Popular"}
TYPES = ("image", "video")

#: Shown on the home page when nobody has generated anything in the last week.
CURATED = (
    "openai/gpt-image-1",
    "google/gemini-2.5-flash",
    "black-forest-labs/FLUX-1.1-pro",
    "bytedance/seedream-4",
    "google/veo-3-fast",
    "kling/kling-2.1-standard",
)


@dataclass(frozen=True)
class Price:
    """A route's published price: `low`..`high` USD `unit`, varying by `basis`."""

    low: Decimal
    high: Decimal
    unit: str  # "per image", "per video"
    basis: str  # what moves it: "" (fixed), "by size", "the vendor's reported cost", ...
    rate: str = ""  # a rate behind it, e.g. "$0.4 per second"
    kind: str = "fixed"  # fixed | calculated | post_generation (pricing_type)

    @property
    def free(self) -> bool:
        return self.high == 0

    @property
    def text(self) -> str:
        if self.free:
            return "Free"
        amount = usd(self.low) if self.low == self.high else f"{usd(self.low)}–{usd(self.high)}"
        return f"{amount} {self.unit}"


@dataclass(frozen=True)
class RouteView:
    provider: str
    upstream: str
    price: Price
    enabled: bool
    takes_images: bool
    max_images: int
    mask: bool
    qualities: bool


@dataclass(frozen=True)
class ModelCard:
    spec: ModelSpec
    routes: tuple[RouteView, ...]  # every catalog route, enabled or not
    available: bool  # a vendor of one of its routes is configured here
    uses: int = 0  # successful generations over the popularity window

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def maker(self) -> str:
        return self.spec.id.split("/")[0]

    @property
    def modality(self) -> str:
        return self.spec.modality

    @property
    def shown_routes(self) -> tuple[RouteView, ...]:
        """The routes a request may take here (all of them when none is configured)."""
        enabled = tuple(r for r in self.routes if r.enabled)
        return enabled or self.routes

    @property
    def vendors(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r.provider for r in self.shown_routes))

    @property
    def price(self) -> Price:
        """The price of the route a request takes first."""
        return self.shown_routes[0].price

    @property
    def free(self) -> bool:
        return self.spec.free or self.price.free

    @property
    def takes_images(self) -> bool:
        return self.shown_routes[0].takes_images

    @property
    def max_images(self) -> int:
        return self.shown_routes[0].max_images if self.takes_images else 0

    @property
    def sizes(self) -> str:
        return sizes_text(self.spec)

    @property
    def seconds(self) -> str:
        if self.spec.seconds is None:
            return ""
        return ", ".join(f"{s:g}" for s in self.spec.seconds) + " s"

    @property
    def inputs(self) -> str:
        parts = ["text"]
        if self.takes_images:
            limit = self.max_images
            parts.append("1 image" if limit == 1 else f"up to {limit} images")
        if self.shown_routes[0].mask:
            parts.append("mask")
        return ", ".join(parts)


@dataclass(frozen=True)
class Filters:
    """The `/models` query, normalised: anything unreadable is dropped, never an error."""

    q: str = ""
    type: str = ""
    vendor: str = ""
    free: bool = False
    images: bool = False  # takes input images
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    sort: str = "name"
    problems: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        problems: list[str] = []
        prices = []
        for name in ("min_price", "max_price"):
            raw = query.get(name, "").strip().removeprefix("$")
            value = None
            if raw:
                try:
                    value = Decimal(raw)
                    if not value.is_finite() or value < 0:
                        raise InvalidOperation
                except InvalidOperation:
                    problems.append(f"'{query.get(name)}' is not a price in USD; ignored.")
                    value = None
            prices.append(value)
        kind = query.get("type", "")
        sort = query.get("sort", "name")
        return cls(
            q=query.get("q", "").strip()[:200],
            type=kind if kind in TYPES else "",
            vendor=query.get("vendor", "").strip(),
            free=query.get("free", "") in ("1", "true", "on"),
            images=query.get("images", "") in ("1", "true", "on"),
            min_price=prices[0],
            max_price=prices[1],
            sort=sort if sort in SORTS else "name",
            problems=tuple(problems),
        )

    @property
    def active(self) -> bool:
        return bool(
            self.q
            or self.type
            or self.vendor
            or self.free
            or self.images
            or self.min_price is not None
            or self.max_price is not None
        )


def usd(amount: Decimal) -> str:
    """A USD amount for people: "$0.04", "$1.75", "$0.0025" (no float artefacts)."""
    if amount == 0:
        return "$0"
    text = f"{amount.normalize():f}"
    whole, _, frac = text.partition(".")
    return f"${whole}.{frac.ljust(2, '0')}" if frac else f"${whole}.00"


def sizes_text(spec: ModelSpec) -> str:
    if spec.sizes is not None:
        listed = [s for s in spec.sizes if s != "auto"]
        text = ", ".join(listed) if listed else "auto"
        if spec.side_bounds is not None:
            text += f", or any size with {spec.side_bounds.describe()}"
        return text
    bounds = spec.side_bounds or SideBounds()
    return f"any size with {bounds.describe()}"


def price_of(rule: PriceRule, modality: str) -> Price:
    """A route's published price with its unit and what it depends on."""
    low, _, high = price_range(rule)
    unit = "per video" if modality == "video" else "per image"
    kind = pricing_type(rule)
    basis, rate = _basis(rule)
    return Price(low, high, unit, basis, rate, kind)


def _basis(rule: PriceRule) -> tuple[str, str]:
    match rule:
        case pricing.Fixed() | pricing.PerOutput():
            return "", ""
        case pricing.UpstreamCost() | pricing.UpstreamCostMarkup():
            return "the vendor's reported cost", ""
        case pricing.Gemini3():
            return "by size, prompt length and input images", ""
        case pricing.OpenAITokens():
            return "by tokens used (size, quality and inputs)", ""
        case pricing.ReplicatePredictTime(usd_per_second=rate):
            return "by run time", f"{usd(rate)} per second of run time"
        case pricing.BySize():
            return "by size", ""
        case pricing.BySizeAndQuality():
            return "by size and quality", ""
        case pricing.ByQuality():
            return "by quality", ""
        case pricing.Reve():
            return "by input images", ""
        case pricing.FalMegapixels(usd_per_megapixel=rate):
            return "by size", f"{usd(rate)} per megapixel"
        case pricing.GrokImage(image_usd=extra):
            return "by input images", f"{usd(extra)} per input image"
        case pricing.PerSecond(usd=rate):
            return "by length", f"{usd(rate)} per second"
        case pricing.HunyuanVideo(usd_per_second=table):
            return "by size and length", f"{_rates(table.values())} per second"
        case pricing.GrokVideo(usd_per_second=table):
            return "by resolution and length", f"{_rates(table.values())} per second"
    return "", ""


def _rates(values: object) -> str:
    numbers = sorted(values)  # type: ignore[call-overload]
    low, high = numbers[0], numbers[-1]
    return usd(low) if low == high else f"{usd(low)}–{usd(high)}"


def card(spec: ModelSpec, enabled: frozenset[str], uses: int = 0) -> ModelCard:
    routes = tuple(_route_view(spec, route, enabled) for route in spec.routes)
    return ModelCard(spec, routes, any(r.enabled for r in routes), uses)


def _route_view(spec: ModelSpec, route: Route, enabled: frozenset[str]) -> RouteView:
    return RouteView(
        provider=route.provider,
        upstream=route.upstream,
        price=price_of(route.price, spec.modality),
        enabled=route.provider in enabled,
        takes_images=route.image_input is not None,
        max_images=route.max_images,
        mask=route.mask,
        qualities=route.quality is not None,
    )


def cards(
    catalog: Catalog,
    enabled: frozenset[str],
    uses: Mapping[str, int],
    *,
    hide_unavailable: bool,
) -> list[ModelCard]:
    """Every catalog model in registry order (unavailable ones unless hidden)."""
    out = [card(spec, enabled, uses.get(spec.id, 0)) for spec in catalog.models.values()]
    return [c for c in out if c.available or not hide_unavailable]


def vendors_of(models: Sequence[ModelCard]) -> list[str]:
    return sorted({v for c in models for v in c.vendors}, key=str.lower)


def browse(models: Sequence[ModelCard], filters: Filters) -> list[ModelCard]:
    """The cards matching `filters`, in their order."""
    needle = filters.q.lower()
    out = []
    for c in models:
        if needle and needle not in c.id.lower():
            continue
        if filters.type and c.modality != filters.type:
            continue
        if filters.vendor and filters.vendor not in c.vendors:
            continue
        if filters.free and not c.free:
            continue
        if filters.images and not c.takes_images:
            continue
        # The published range must meet the asked one.
        if filters.min_price is not None and c.price.high < filters.min_price:
            continue
        if filters.max_price is not None and c.price.low > filters.max_price:
            continue
        out.append(c)
    return sort_cards(out, filters.sort)


def sort_cards(models: Sequence[ModelCard], sort: str) -> list[ModelCard]:
    by_name = sorted(models, key=lambda c: c.id.lower())
    if sort == "price":
        return sorted(by_name, key=lambda c: (c.price.low, c.price.high))
    if sort == "newest":
        return sorted(by_name, key=lambda c: c.spec.release_date or "", reverse=True)
    if sort == "popular":
        # Most used first; unused models newest first.
        return sorted(
            by_name, key=lambda c: (-c.uses, _negated_date(c.spec.release_date or "0000-00-00"))
        )
    return by_name


def _negated_date(date: str) -> str:
    # Sorting ascending on this orders dates newest first (digits 0-9 map to 9-0).
    return date.translate(str.maketrans("0123456789", "9876543210"))


def popular(models: Sequence[ModelCard], limit: int = 6) -> list[ModelCard]:
    """The most used available models of the window, else the curated list (then the
    newest available models) to fill `limit`."""
    usable = [c for c in models if c.available and not c.free]
    used = [c for c in sort_cards(usable, "popular") if c.uses > 0][:limit]
    if used:
        return used
    by_id = {c.id: c for c in usable}
    picked = [by_id[i] for i in CURATED if i in by_id]
    for c in sort_cards(usable, "newest"):
        if len(picked) >= limit:
            break
        if c not in picked:
            picked.append(c)
    return picked[:limit]


CSV_HEADER = (
    "model",
    "type",
    "vendor",
    "available",
    "pricing",
    "min_usd",
    "max_usd",
    "unit",
    "depends_on",
    "rate",
)


def price_table_csv(models: Sequence[ModelCard]) -> str:
    """One row per model and route: the full price table (`/pricing.csv`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for c in models:
        for r in c.routes:
            writer.writerow(
                (
                    c.id,
                    c.modality,
                    r.provider,
                    "yes" if r.enabled else "no",
                    r.price.kind,
                    f"{r.price.low.normalize():f}",
                    f"{r.price.high.normalize():f}",
                    r.price.unit,
                    r.price.basis or "fixed",
                    r.price.rate,
                )
            )
    return out.getvalue()
