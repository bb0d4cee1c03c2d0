"""The billing page over HTTP: balance, top-up through the fake Stripe's Checkout, the return
page (processing until the webhook credits, STR-2) and the deposits history.

Stripe is the fake of `tests/fakes/stripe.py`; its events are signed and posted to the
gateway's webhook as Stripe would. On SQLite and PostgreSQL (`stripe_gateway`).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.conftest import STRIPE_WEBHOOK_SECRET, Gateway
from tests.fakes.stripe import FakeStripe, deliver
from tests.integration.web_helpers import csrf_of, sign_up

BILLING = "/billing"
REFRESH = '<meta http-equiv="refresh"'


def fake_stripe(gw: Gateway) -> FakeStripe:
    fake = gw.fakes["stripe"]
    assert isinstance(fake, FakeStripe)
    return fake


async def billing(client: httpx.AsyncClient, query: str = "") -> str:
    page = await client.get(BILLING + query)
    assert page.status_code == 200, page.text
    return page.text


async def top_up(client: httpx.AsyncClient, amount: str, **data: str) -> httpx.Response:
    token = csrf_of(await billing(client))
    return await client.post(
        f"{BILLING}/checkout", data={"csrf_token": token, "amount_usd": amount, **data}
    )


def balance_of(page: str) -> str:
    found = re.search(r'id="billing-balance">([^<]+)<', page)
    assert found is not None
    return found.group(1)


async def send(gw: Gateway, event: dict[str, Any]) -> None:
    response = await deliver(gw.client, event, secret=STRIPE_WEBHOOK_SECRET)
    assert response.status_code == 200, response.text


async def checkout(gw: Gateway, amount: str) -> tuple[str, str]:
    """Top up through the page: (top-up id, Stripe session id)."""
    response = await top_up(gw.client, amount)
    assert response.status_code == 303, response.text
    [row] = await gw.rows(
        "SELECT id, stripe_checkout_session_id FROM topups ORDER BY created_at DESC LIMIT 1"
    )
    return row["id"], row["stripe_checkout_session_id"]


@pytest.fixture
async def payer(stripe_gateway: Gateway) -> Gateway:
    assert (await sign_up(stripe_gateway.client, "payer@example.com")).status_code == 303
    return stripe_gateway


async def test_top_up_sends_the_browser_to_stripe_checkout(payer: Gateway) -> None:
    page = await billing(payer.client)
    assert balance_of(page) == "$0.0000"
    assert "$5.00 to $1000.00" in page and "No deposits yet." in page
    response = await top_up(payer.client, "12.50")
    assert response.status_code == 303
    [session] = fake_stripe(payer).sessions.values()
    assert response.headers["location"] == session["url"]
    assert session["amount_total"] == 1250
    [row] = await payer.rows("SELECT status, amount_cents, credits FROM topups")
    assert row == {"status": "pending", "amount_cents": 1250, "credits": 125_000}
    page = await billing(payer.client)
    assert balance_of(page) == "$0.0000"  # opening a checkout credits nothing
    assert "awaiting payment" in page and "$12.50" in page


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("4.99", "The amount must be between $5.00 and $1000.00"),
        ("1000.01", "The amount must be between $5.00 and $1000.00"),
        ("10.001", "The amount must be a whole number of cents"),
        ("lots", 'The amount must be a USD amount such as "10.00"'),
        ("", 'The amount must be a USD amount such as "10.00"'),
    ],
)
async def test_amounts_out_of_bounds_are_refused_before_stripe(
    payer: Gateway, amount: str, message: str
) -> None:
    response = await top_up(payer.client, amount)
    assert response.status_code == 400
    assert message.replace('"', "&#34;") in response.text
    assert f'name="amount_usd" value="{amount}"' in response.text
    assert fake_stripe(payer).requests == []
    assert await payer.rows("SELECT id FROM topups") == []


async def test_return_shows_processing_until_the_webhook_credits(payer: Gateway) -> None:
    topup, session = await checkout(payer, "20")
    # Stripe sends the browser to the payment service's success URL.
    success = fake_stripe(payer).sessions[session]["success_url"]
    path = success.removeprefix("http://site.test").replace("{CHECKOUT_SESSION_ID}", session)
    # The success URL is the billing page itself.
    assert path == f"{BILLING}?topup={topup}&session_id={session}"

    for _ in range(2):  # refreshing does not credit anything either
        page = await billing(payer.client, path.removeprefix(BILLING))
        assert 'data-state="processing"' in page and REFRESH in page
        assert "Your payment of $20.00 is being" in page
        assert balance_of(page) == "$0.0000"
    assert await payer.rows("SELECT amount FROM ledger_entries WHERE kind = 'topup'") == []

    await send(payer, fake_stripe(payer).completed(session))
    page = await billing(payer.client, path.removeprefix(BILLING))
    assert 'data-state="paid"' in page and REFRESH not in page
    assert "Payment received: $20.0000 of" in page
    assert balance_of(page) == "$20.0000"
    assert re.search(rf'id="deposit-{topup}" data-status="paid"', page)


async def test_cancelled_checkout_says_nothing_was_charged(payer: Gateway) -> None:
    topup, _ = await checkout(payer, "10")
    page = await billing(payer.client, f"?topup={topup}&cancelled=true")
    assert "Checkout was cancelled. Nothing was charged." in page
    assert REFRESH not in page


async def test_history_shows_refunds_and_disputes(payer: Gateway) -> None:
    fake = fake_stripe(payer)
    refunded, refunded_session = await checkout(payer, "10")
    disputed, disputed_session = await checkout(payer, "15")
    partial, partial_session = await checkout(payer, "30")
    pending, _ = await checkout(payer, "5")
    for session in (refunded_session, disputed_session, partial_session):
        await send(payer, fake.completed(session))
    await send(payer, fake.refunded(refunded_session, 1000))
    await send(payer, fake.refunded(partial_session, 500))
    await send(payer, fake.dispute_created(disputed_session))

    page = await billing(payer.client)
    rows = dict(re.findall(r'id="deposit-([^"]+)" data-status="([^"]+)"', page))
    assert rows == {
        refunded: "refunded",
        disputed: "disputed",
        partial: "partially_refunded",
        pending: "pending",
    }
    for words in ("refunded", "disputed", "partially refunded", "awaiting payment"):
        assert f'class="deposit-status">{words}<' in page
    partial_row = page.split(f'id="deposit-{partial}"')[1].split("</tr>")[0]
    assert 'data-label="Refunded">$5.00</td>' in partial_row  # of $30.00 refunded
    assert balance_of(page) == "$25.0000"  # 30 - 5 refunded; the disputed 15 taken back


async def test_another_accounts_top_up_is_not_shown(payer: Gateway) -> None:
    topup, session = await checkout(payer, "10")
    async with httpx.AsyncClient(
        transport=payer.client._transport, base_url="http://gateway.test"
    ) as other:
        await sign_up(other, "other@example.com")
        page = await billing(other, f"?topup={topup}&session_id={session}")
    assert "checkout-return" not in page and "No deposits yet." in page


async def test_checkout_needs_the_sessions_csrf_token(payer: Gateway) -> None:
    for data in ({}, {"csrf_token": "forged-" + "x" * 40}):
        response = await payer.client.post(f"{BILLING}/checkout", data={**data, "amount_usd": "10"})
        assert response.status_code == 403
    assert fake_stripe(payer).requests == []
    payer.client.cookies.clear()
    signed_out = await payer.client.post(f"{BILLING}/checkout", data={"amount_usd": "10"})
    assert signed_out.status_code == 303 and signed_out.headers["location"] == "/signin"


async def test_opening_checkouts_is_throttled_per_account(payer: Gateway) -> None:
    for _ in range(5):  # SIGNIN_THROTTLE's default, 5 a minute
        assert (await top_up(payer.client, "10")).status_code == 303
    refused = await top_up(payer.client, "10")
    assert refused.status_code == 429
    assert re.search(r"Too many checkouts\. Please wait \d+ seconds", refused.text)
    assert len(fake_stripe(payer).sessions) == 5
    # A typo is answered as such and costs no attempt.
    assert (await top_up(payer.client, "4")).status_code == 400


async def test_stripe_failing_is_explained_and_nothing_charged(payer: Gateway) -> None:
    fake_stripe(payer).fail_next(500, times=3)
    response = await top_up(payer.client, "10")
    assert response.status_code == 502
    assert "could not start a checkout; nothing was charged" in response.text
    assert 'data-status="failed"' in response.text


async def test_without_payments_credits_come_from_the_operator(gateway: Gateway) -> None:
    await sign_up(gateway.client, "free@example.com")
    page = await billing(gateway.client)
    assert "Online payment is not enabled" in page and "image-router credits grant" in page
    assert 'action="/billing/checkout"' not in page
    response = await gateway.client.post(
        f"{BILLING}/checkout", data={"csrf_token": csrf_of(page), "amount_usd": "10"}
    )
    assert response.status_code == 404
    assert "Online payment is not enabled on this gateway" in response.text
    assert await gateway.rows("SELECT id FROM topups") == []
