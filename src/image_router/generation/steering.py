"""Parsing the client's `provider` object (routing preferences) with clear 400s.

JSON bodies carry it as an object; multipart bodies as a JSON string in the `provider`
form field (a JSON body may send that string too). Every problem answers 400 with
param `provider`: unknown keys, wrong types, vendor names the gateway does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from image_router.errors import InvalidRequest
from image_router.routing.preferences import NO_PREFERENCES, Preferences

KEYS = ("order", "only", "ignore", "sort", "allow_fallbacks", "max_price")
SORTS = ("price", "latency")


def parse_preferences(fields: Mapping[str, Any], known: frozenset[str]) -> Preferences:
    """The `provider` field of a request as `Preferences` (none given: no preferences)."""
    raw = fields.get("provider")
    if raw is None:
        return NO_PREFERENCES
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise _bad("'provider' must be a JSON object") from None
    if not isinstance(raw, dict):
        raise _bad("'provider' must be an object")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise _bad(f"'provider' has unknown keys {unknown}; known: {list(KEYS)}")
    only = raw.get("only")
    return Preferences(
        order=tuple(_vendors(raw, "order", known)),
        only=None if only is None else frozenset(_vendors(raw, "only", known)),
        ignore=frozenset(_vendors(raw, "ignore", known)),
        sort=_sort(raw.get("sort")),
        allow_fallbacks=_flag(raw.get("allow_fallbacks", True)),
        max_price=_max_price(raw.get("max_price")),
    )


def _vendors(raw: Mapping[str, Any], key: str, known: frozenset[str]) -> list[str]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"'provider.{key}' must be a list of vendor names")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise _bad(f"'provider.{key}' names unknown vendors {unknown}; known: {sorted(known)}")
    if len(set(value)) != len(value):
        raise _bad(f"'provider.{key}' names a vendor twice")
    return list(value)


def _sort(value: Any) -> Any:
    if value is None or value in SORTS:
        return value
    raise _bad("'provider.sort' must be 'price' or 'latency'")


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _bad("'provider.allow_fallbacks' must be true or false")
    return value


def _max_price(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad("'provider.max_price' must be a USD amount such as 0.05")
    try:
        # Through str: a JSON 0.1 is the decimal 0.1, not the binary float's expansion.
        amount = Decimal(str(value))
    except InvalidOperation:
        raise _bad("'provider.max_price' must be a USD amount such as 0.05") from None
    if not amount.is_finite() or amount < 0:
        raise _bad("'provider.max_price' must be a finite amount of at least 0")
    return amount


def _bad(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="provider", code="invalid_provider_preferences")
