"""Credits: the one unit of money inside Image Router.

A credit is $0.0001 (the reference's unit). Balances, holds and charges are integers of
credits; prices in the catalog are exact `Decimal` USD strings. This module is the only
place where one becomes the other, so rounding happens in exactly one way.
"""

from __future__ import annotations

import functools
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import NewType

Credits = NewType("Credits", int)

CREDITS_PER_USD = 10_000
_QUANTUM = Decimal("0.0001")


class MoneyFormatError(ValueError):
    """A string that should be a USD amount is not one."""


# Memoised: every generation converts the same few catalog prices several times, and the
# decimal arithmetic cost more than the lookup. Equal amounts convert equally, whatever
# their type or spelling, so sharing an entry between them is exact.
@functools.lru_cache(maxsize=4096)
def usd_to_credits(usd: Decimal | str | int) -> Credits:
    """Convert a USD amount to credits, rounding up to the next whole credit.

    Rounding up means a price is never undercharged by a fraction of a credit; it works on
    exact decimals, so $0.07 is 700 credits (the reference's float arithmetic charged 701).
    """
    amount = parse_usd(usd) if isinstance(usd, str) else Decimal(usd)
    credits = (amount * CREDITS_PER_USD).to_integral_value(rounding=ROUND_CEILING)
    return Credits(int(credits))


def parse_usd(text: str) -> Decimal:
    """Parse a user- or operator-supplied USD string such as "10", "0.04" or "$5.5"."""
    cleaned = text.strip().removeprefix("$").strip()
    try:
        amount = Decimal(cleaned)
    except InvalidOperation as exc:
        raise MoneyFormatError(f"'{text}' is not a USD amount") from exc
    if not amount.is_finite():
        raise MoneyFormatError(f"'{text}' is not a USD amount")
    return amount


def credits_to_usd(credits: int) -> Decimal:
    """Exact USD value of an amount of credits."""
    return (Decimal(credits) / CREDITS_PER_USD).quantize(_QUANTUM)


def format_usd(credits: int) -> str:
    """Four-decimal USD string, as `/v1/credits` answers ("10.0000")."""
    return f"{credits_to_usd(credits):.4f}"


def usd_number(credits: int) -> int | float:
    """USD as a JSON number for response bodies (`cost`): `0`, `0.04`, `1.6`."""
    if credits % CREDITS_PER_USD == 0:
        return credits // CREDITS_PER_USD
    return float(credits_to_usd(credits))
