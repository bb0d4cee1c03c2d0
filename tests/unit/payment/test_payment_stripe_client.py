"""The Stripe adapter against the fake Stripe API (in process, no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from image_router.payment.stripe_api import CheckoutRequest, StripeGateway, StripeUnavailable
from tests.fakes.stripe import FakeStripe, form_of

REQUEST = CheckoutRequest(
    topup_id="top-1",
    account_id="acc-1",
    amount_cents=1250,
    currency="usd",
    product_name="Image Router credits",
    success_url="http://site.test/billing?topup=top-1&session_id={CHECKOUT_SESSION_ID}",
    cancel_url="http://site.test/billing?topup=top-1&cancelled=true",
)


@pytest.fixture
def fake() -> FakeStripe:
    return FakeStripe()


@pytest.fixture
async def http(fake: FakeStripe) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fake.app)) as client:
        yield client


def gateway(http: httpx.AsyncClient, key: str = FakeStripe().secret_key) -> StripeGateway:
    return StripeGateway(
        http, secret_key=key, webhook_secrets=["whsec_x"], api_base="http://stripe.test/"
    )


async def test_a_checkout_session_carries_the_amount_and_only_our_ids(
    fake: FakeStripe, http: httpx.AsyncClient
) -> None:
    session = await gateway(http).create_checkout_session(REQUEST)
    assert session.id in fake.sessions
    assert session.url == f"https://checkout.stripe.test/c/pay/{session.id}"
    [sent] = fake.requests
    assert (sent.method, sent.path) == ("POST", "/v1/checkout/sessions")
    assert sent.headers["authorization"] == f"Bearer {fake.secret_key}"
    assert sent.headers["idempotency-key"] == "topup:top-1"
    assert sent.headers["stripe-version"]
    assert form_of(sent) == {
        "mode": "payment",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "1250",
        "line_items[0][price_data][product_data][name]": "Image Router credits",
        "client_reference_id": "top-1",
        "metadata[topup_id]": "top-1",
        "metadata[account_id]": "acc-1",
        "payment_intent_data[metadata][topup_id]": "top-1",
        "payment_intent_data[metadata][account_id]": "acc-1",
        "success_url": REQUEST.success_url,
        "cancel_url": REQUEST.cancel_url,
        "customer_creation": "always",
    }


async def test_a_known_customer_is_reused(fake: FakeStripe, http: httpx.AsyncClient) -> None:
    fake.customers.add("cus_known")
    known = CheckoutRequest(**{**REQUEST.__dict__, "customer_id": "cus_known"})
    session = await gateway(http).create_checkout_session(known)
    assert not session.customer_replaced
    form = form_of(fake.last)
    assert form["customer"] == "cus_known"
    assert "customer_creation" not in form


async def test_a_customer_deleted_at_stripe_is_replaced(
    fake: FakeStripe, http: httpx.AsyncClient
) -> None:
    gone = CheckoutRequest(**{**REQUEST.__dict__, "customer_id": "cus_gone"})
    session = await gateway(http).create_checkout_session(gone)
    assert session.customer_replaced
    first, second = fake.requests
    assert form_of(first)["customer"] == "cus_gone"
    assert form_of(second)["customer_creation"] == "always"
    # A reused key with other parameters is an error at Stripe.
    assert second.headers["idempotency-key"] == "topup:top-1:new-customer"


async def test_a_server_error_is_retried_with_the_same_idempotency_key(
    fake: FakeStripe, http: httpx.AsyncClient
) -> None:
    fake.fail_next(500)
    session = await gateway(http).create_checkout_session(REQUEST)
    assert len(fake.sessions) == 1
    assert session.id in fake.sessions
    keys = [r.headers["idempotency-key"] for r in fake.requests]
    assert keys == ["topup:top-1", "topup:top-1"]


async def test_a_replayed_request_answers_the_same_session(
    fake: FakeStripe, http: httpx.AsyncClient
) -> None:
    first = await gateway(http).create_checkout_session(REQUEST)
    again = await gateway(http).create_checkout_session(REQUEST)
    assert again.id == first.id
    assert len(fake.sessions) == 1


async def test_a_refused_key_is_reported_as_such(http: httpx.AsyncClient) -> None:
    with pytest.raises(StripeUnavailable, match="STRIPE_SECRET_KEY"):
        await gateway(http, key="sk_test_wrong").create_checkout_session(REQUEST)


async def test_stripe_unreachable_is_reported_after_the_retries() -> None:
    attempts: list[httpx.Request] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        attempts.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
        stripe = StripeGateway(
            client, secret_key="sk_test_x", webhook_secrets=["w"], max_network_retries=1
        )
        with pytest.raises(StripeUnavailable, match="could not reach Stripe"):
            await stripe.create_checkout_session(REQUEST)
    assert len(attempts) == 2
    assert str(attempts[0].url) == "https://api.stripe.com/v1/checkout/sessions"
