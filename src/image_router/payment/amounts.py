"""Top-up amounts: what a person asks for, in cents, and what it buys, in credits."""

from __future__ import annotations

from decimal import Decimal

from image_router.errors import InvalidRequest
from image_router.kit.money import CREDITS_PER_USD, MoneyFormatError, parse_usd

CENTS_PER_USD = 100


def cents_to_credits(cents: int) -> int:
    """Credits bought by `cents` US cents: the one conversion of a payment into credits."""
    return cents * (CREDITS_PER_USD // CENTS_PER_USD)


def format_cents(cents: int) -> str:
    """'10.00' for 1000: how a top-up amount is shown."""
    sign = "-" if cents < 0 else ""
    whole, part = divmod(abs(cents), CENTS_PER_USD)
    return f"{sign}{whole}.{part:02d}"


def parse_amount_usd(value: object, *, min_cents: int, max_cents: int) -> int:
    """The cents of a requested top-up (`"10.00"`, `"10"`, `10` or `10.5`), within bounds.

    Raises `InvalidRequest` naming `amount_usd` with a message a person can act on.
    """
    bounds = f"between ${format_cents(min_cents)} and ${format_cents(max_cents)}"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRequest(
            f'amount_usd must be a USD amount such as "10.00", {bounds}', param="amount_usd"
        )
    try:
        usd = parse_usd(str(value))
    except MoneyFormatError:
        raise InvalidRequest(
            f'amount_usd must be a USD amount such as "10.00", {bounds}', param="amount_usd"
        ) from None
    cents = usd * CENTS_PER_USD
    if cents != cents.to_integral_value():
        raise InvalidRequest("amount_usd must be a whole number of cents", param="amount_usd")
    if not Decimal(min_cents) <= cents <= Decimal(max_cents):
        raise InvalidRequest(f"amount_usd must be {bounds}", param="amount_usd")
    return int(cents)
