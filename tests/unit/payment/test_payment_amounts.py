"""Top-up amounts: what a person may ask for, and what it buys."""

from __future__ import annotations

import pytest

from image_router.errors import InvalidRequest
from image_router.kit.money import usd_to_credits
from image_router.payment.amounts import cents_to_credits, format_cents, parse_amount_usd

BOUNDS = {"min_cents": 500, "max_cents": 100_000}


@pytest.mark.parametrize(
    ("value", "cents"),
    [("10.00", 1000), ("10", 1000), ("$12.5", 1250), (5, 500), (19.99, 1999), ("1000.00", 100_000)],
)
def test_amounts_in_bounds_become_cents(value: object, cents: int) -> None:
    assert parse_amount_usd(value, **BOUNDS) == cents


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("4.99", "amount_usd must be between $5.00 and $1000.00"),
        ("1000.01", "amount_usd must be between $5.00 and $1000.00"),
        ("-10", "amount_usd must be between $5.00 and $1000.00"),
        ("10.005", "amount_usd must be a whole number of cents"),
        ("ten dollars", 'amount_usd must be a USD amount such as "10.00"'),
        ("NaN", 'amount_usd must be a USD amount such as "10.00"'),
        (True, 'amount_usd must be a USD amount such as "10.00"'),
        (None, 'amount_usd must be a USD amount such as "10.00"'),
        (["10"], 'amount_usd must be a USD amount such as "10.00"'),
    ],
)
def test_bad_amounts_are_refused_with_a_message_naming_the_field(
    value: object, message: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_amount_usd(value, **BOUNDS)
    assert caught.value.message.startswith(message)
    assert caught.value.param == "amount_usd"


def test_a_cent_buys_what_the_same_dollars_buy_everywhere_else() -> None:
    assert cents_to_credits(1000) == usd_to_credits("10.00") == 100_000
    assert cents_to_credits(1) == usd_to_credits("0.01")


@pytest.mark.parametrize(
    ("cents", "text"), [(0, "0.00"), (5, "0.05"), (1999, "19.99"), (-250, "-2.50")]
)
def test_cents_are_shown_as_dollars(cents: int, text: str) -> None:
    assert format_cents(cents) == text
