"""The public model listings: `/v1/models`, `/v2/models`, `/v1/models/{id}` (spec §3.2-3.4).

Pure functions over the catalog and the set of enabled providers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from image_router.catalog.pricing import json_number, price_range, public_pricing
from image_router.catalog.spec import Catalog, ModelSpec, Route


def model_object(spec: ModelSpec, routes: Iterable[Route]) -> dict[str, Any]:
    """The registry object of one model, as the reference serialises it."""
    body: dict[str, Any] = {
        "providers": [
            {
                "id": r.provider,
                "model_name": r.upstream,
                "pricing": public_pricing(r.price),
            }
            for r in routes
        ]
    }
    if spec.release_date is not None:
        body["release_date"] = spec.release_date
    if spec.sizes is not None:
        body["sizes"] = list(spec.sizes)
    if spec.seconds is not None:
        body["seconds"] = [json_number(Decimal(str(s))) for s in spec.seconds]
    if spec.default_seconds is not None:
        body["default_seconds"] = json_number(Decimal(str(spec.default_seconds)))
    body["inputs"] = spec.inputs()
    body["output"] = [spec.modality]
    return body


def listed_models(
    catalog: Catalog, enabled: frozenset[str], *, list_all: bool
) -> list[tuple[ModelSpec, list[Route]]]:
    """Models a client may use, each with the routes shown for it.

    By default a model is listed only when one of its routes has a configured provider, and
    only those routes are shown; `list_all` shows the whole catalog.
    """
    out = []
    for spec in catalog.models.values():
        routes = [r for r in spec.routes if list_all or r.provider in enabled]
        if routes:
            out.append((spec, routes))
    return out


def filter_and_sort(
    models: list[tuple[ModelSpec, list[Route]]], query: Mapping[str, str]
) -> list[tuple[ModelSpec, list[Route]]]:
    """The query parameters of spec §3.3, applied in the reference's order."""
    result = list(models)
    if "type" in query:
        result = [m for m in result if m[0].modality == query["type"]]
    if "provider" in query:
        wanted = query["provider"].lower()
        result = [m for m in result if wanted in _namespace(m[0]).lower()]
    if "free" in query:
        want_free = query["free"] == "true"
        result = [m for m in result if _has_zero_price(m[1]) == want_free]
    if "name" in query:
        needle = query["name"].lower()
        result = [m for m in result if needle in m[0].id.lower()]
    sort = query.get("sort")
    if sort == "name":
        result.sort(key=lambda m: m[0].id.lower())
    elif sort == "provider":
        result.sort(key=lambda m: _namespace(m[0]).lower())
    elif sort == "price":
        # The reference sorts range-priced models last in no order; we sort every model by
        # the average price of its first route (documented in docs/differences.md).
        result.sort(key=lambda m: price_range(m[1][0].price)[1])
    elif sort == "date":
        result.sort(key=lambda m: m[0].release_date or "0000-00-00", reverse=True)
    limit = query.get("limit")
    if limit:
        try:
            count = int(limit.strip())
        except ValueError:
            count = 0
        result = result[: max(count, 0)]
    return result


def v1_listing(models: list[tuple[ModelSpec, list[Route]]]) -> dict[str, Any]:
    out = {}
    for spec, routes in models:
        body = model_object(spec, routes)
        inputs = body.pop("inputs")
        body["supported_params"] = {
            "mask": inputs["mask"],
            "quality": inputs["quality"],
            "edit": inputs["image"],
        }
        out[spec.id] = body
    return out


def v2_listing(models: list[tuple[ModelSpec, list[Route]]]) -> dict[str, Any]:
    out = {}
    for spec, routes in models:
        body = model_object(spec, routes)
        for key in ("providers", "sizes", "seconds", "default_seconds"):
            body.pop(key, None)
        ranges = [price_range(r.price) for r in routes]
        body["price"] = {
            "min": json_number(min(r[0] for r in ranges)),
            "average": json_number(ranges[0][1]),
            "max": json_number(max(r[2] for r in ranges)),
        }
        out[spec.id] = body
    return out


def _namespace(spec: ModelSpec) -> str:
    return spec.id.split("/")[0]


def _has_zero_price(routes: list[Route]) -> bool:
    return any(price_range(r.price)[2] == 0 for r in routes)
