"""Waiting for the gateway to finish its work, and checking what it charged."""

from __future__ import annotations

import time
from decimal import Decimal

from load import LoadResult
from services import FakeUpstream, Gateway

PRICE_USD = Decimal("0.016")  # openai/dall-e-2 at 1024x1024, and bench/failover's routes
EMAIL = "bench@example.com"


def settled_balance(gateway: Gateway, upstream: FakeUpstream, timeout_s: float) -> Decimal:
    """The balance once the upstream has nothing pending and two readings agree."""
    deadline = time.monotonic() + timeout_s
    previous: Decimal | None = None
    while True:
        pending = upstream.stats()["pending"]
        balance, raw = gateway.balance_usd(EMAIL)
        if pending == 0 and balance == previous:
            return balance
        if time.monotonic() > deadline:
            raise RuntimeError(f"balance still moving after {timeout_s:g} s:\n{raw}")
        previous = balance if pending == 0 else None
        time.sleep(1.0)


def quiesce(upstream: FakeUpstream, timeout_s: float, quiet_s: float = 1.0) -> None:
    """Wait until the gateway has stopped calling the upstream.

    wrk hangs up on the requests still in flight when it stops, but the gateway may go on
    serving them; left alone, that backlog would eat into the next measurement, or fail
    against an upstream being restarted.
    """
    deadline = time.monotonic() + timeout_s
    previous = upstream.stats()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        current = upstream.stats()
        if current == previous and current["pending"] == 0:
            return
        previous = current
    raise RuntimeError(f"the gateway kept calling the upstream for {timeout_s:g} s: {previous}")


def check_charges(
    sent: int, per_connection: int, r: LoadResult, drop_usd: Decimal
) -> tuple[list[str], str]:
    """(problems, summary) of a budgeted run that ended with nothing in flight."""
    charged = drop_usd / PRICE_USD
    charged_text = f"{charged:.0f}" if charged == charged.to_integral_value() else f"{charged}"
    problems = []
    if r.completed != sent:
        problems.append(f"{sent - r.completed} of {sent} budgeted requests never completed")
    if r.non_2xx or r.socket_errors:
        problems.append(f"{r.non_2xx} non-2xx and {r.socket_errors} socket errors")
    if drop_usd != r.ok * PRICE_USD:
        problems.append(
            f"balance dropped ${drop_usd} (= {charged_text} charges) for {r.ok} successes"
        )
    note = (
        f"budget {sent} ({per_connection} per connection), 200s {r.ok}, "
        f"balance drop ${drop_usd} = {charged_text} × ${PRICE_USD}"
    )
    return problems, note
