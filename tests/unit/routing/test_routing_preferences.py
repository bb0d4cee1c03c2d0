"""Client routing preferences: the `provider` object parsed with 400s, filters, ordering."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from image_router.errors import InvalidRequest
from image_router.generation.steering import parse_preferences
from image_router.routing.health import RouteHealth
from image_router.routing.preferences import (
    NO_PREFERENCES,
    Candidate,
    Preferences,
    reason,
    steer,
)

KNOWN = frozenset({"runware", "deepinfra", "fal", "grok"})


def parse(value: Any) -> Preferences:
    return parse_preferences({"provider": value}, KNOWN)


def test_no_provider_field_means_no_preferences() -> None:
    assert parse_preferences({}, KNOWN) is NO_PREFERENCES
    assert not NO_PREFERENCES.given


def test_every_field_is_parsed_from_an_object_or_a_json_string() -> None:
    value = {
        "order": ["fal", "runware"],
        "only": ["fal", "runware", "grok"],
        "ignore": ["deepinfra"],
        "sort": "latency",
        "allow_fallbacks": False,
        "max_price": 0.1,
    }
    expected = Preferences(
        order=("fal", "runware"),
        only=frozenset({"fal", "runware", "grok"}),
        ignore=frozenset({"deepinfra"}),
        sort="latency",
        allow_fallbacks=False,
        max_price=Decimal("0.1"),  # the decimal the client wrote, not the float's expansion
    )
    assert parse(value) == expected
    assert (
        parse(
            '{"order": ["fal", "runware"], "only": ["fal", "runware", "grok"], '
            '"ignore": ["deepinfra"], "sort": "latency", "allow_fallbacks": false, '
            '"max_price": "0.1"}'
        )
        == expected
    )
    assert expected.as_record() == {
        "order": ["fal", "runware"],
        "only": ["fal", "grok", "runware"],
        "ignore": ["deepinfra"],
        "sort": "latency",
        "allow_fallbacks": False,
        "max_price": "0.1",
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"orders": ["fal"]}, "'provider' has unknown keys ['orders']"),
        ({"order": "fal"}, "'provider.order' must be a list of vendor names"),
        ({"only": ["fal", 3]}, "'provider.only' must be a list of vendor names"),
        ({"ignore": ["acme"]}, "'provider.ignore' names unknown vendors ['acme']"),
        ({"order": ["fal", "fal"]}, "'provider.order' names a vendor twice"),
        ({"sort": "cheapest"}, "'provider.sort' must be 'price' or 'latency'"),
        ({"allow_fallbacks": "no"}, "'provider.allow_fallbacks' must be true or false"),
        ({"max_price": True}, "'provider.max_price' must be a USD amount"),
        ({"max_price": "cheap"}, "'provider.max_price' must be a USD amount"),
        ({"max_price": -1}, "'provider.max_price' must be a finite amount of at least 0"),
        ({"max_price": "NaN"}, "'provider.max_price' must be a finite amount of at least 0"),
        (["fal"], "'provider' must be an object"),
        ("{not json", "'provider' must be a JSON object"),
    ],
)
def test_bad_preferences_are_400_on_param_provider(value: Any, message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse(value)
    assert caught.value.message.startswith(message), caught.value.message
    assert caught.value.param == "provider"
    assert caught.value.status == 400


def test_filters_say_why_a_route_is_left_out() -> None:
    prefs = Preferences(only=frozenset({"fal", "grok"}), ignore=frozenset({"grok"}))
    assert prefs.excludes("runware", Decimal("0.01")) == "not in 'only'"
    assert prefs.excludes("grok", Decimal("0.01")) == "in 'ignore'"
    assert prefs.excludes("fal", Decimal("0.01")) is None
    capped = Preferences(max_price=Decimal("0.02"))
    assert capped.excludes("fal", Decimal("0.02")) is None
    assert capped.excludes("fal", Decimal("0.0201")) == (
        "costs up to $0.0201, above max_price $0.02"
    )


def candidate(provider: str, price: int, latency_s: float | None = None) -> Candidate:
    health = RouteHealth(latency_s=latency_s, samples=0 if latency_s is None else 3)
    return Candidate(f"{provider}/m", provider, price, health)


# Given in health order: runware, deepinfra, fal.
ROUTES = [candidate("runware", 300, 9.0), candidate("deepinfra", 100), candidate("fal", 200, 1.0)]


def providers(candidates: list[Candidate]) -> list[str]:
    return [c.provider for c in candidates]


def test_without_preferences_the_health_order_stands() -> None:
    assert providers(steer(ROUTES, NO_PREFERENCES)) == ["runware", "deepinfra", "fal"]


def test_the_clients_order_comes_first_then_the_rest_in_health_order() -> None:
    assert providers(steer(ROUTES, Preferences(order=("fal",)))) == [
        "fal",
        "runware",
        "deepinfra",
    ]
    assert providers(steer(ROUTES, Preferences(order=("fal", "deepinfra")))) == [
        "fal",
        "deepinfra",
        "runware",
    ]


def test_sort_by_price_and_by_learned_latency() -> None:
    assert providers(steer(ROUTES, Preferences(sort="price"))) == ["deepinfra", "fal", "runware"]
    # deepinfra was never measured: after the measured routes.
    assert providers(steer(ROUTES, Preferences(sort="latency"))) == [
        "fal",
        "runware",
        "deepinfra",
    ]
    # The order wins over the sort.
    assert providers(steer(ROUTES, Preferences(order=("runware",), sort="price"))) == [
        "runware",
        "deepinfra",
        "fal",
    ]


def test_without_fallbacks_only_the_first_is_kept() -> None:
    assert providers(steer(ROUTES, Preferences(sort="price", allow_fallbacks=False))) == [
        "deepinfra"
    ]


def test_the_reason_names_what_put_a_route_first() -> None:
    assert reason("fal", Preferences(order=("fal",)), catalog_preferred=True) == "client order"
    assert reason("fal", Preferences(sort="price"), catalog_preferred=False) == (
        "client sort by price"
    )
    assert reason("grok", NO_PREFERENCES, catalog_preferred=True) == "catalog prefer_when"
    assert reason("fal", Preferences(ignore=frozenset({"x"})), catalog_preferred=False) == (
        "catalog order and route health"
    )
