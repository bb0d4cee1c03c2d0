"""Stripe-Signature verification (STR-6): the matrix of research note §2.5."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import stripe

from image_router.payment.stripe_api import InvalidSignature, StripeGateway
from tests.fakes.stripe import sign

SECRET = "whsec_current_0123456789"
OLD_SECRET = "whsec_previous_9876543210"
EVENT = {"id": "evt_1", "object": "event", "type": "checkout.session.completed", "data": {}}
PAYLOAD = orjson.dumps(EVENT).decode()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    # Verification never calls Stripe; the client only has to exist.
    async with httpx.AsyncClient() as client:
        yield client


def gateway(http: httpx.AsyncClient, *secrets: str) -> StripeGateway:
    return StripeGateway(http, secret_key="sk_test_x", webhook_secrets=secrets or (SECRET,))


def test_the_fake_signs_exactly_like_the_stripe_library() -> None:
    header = stripe.WebhookSignature.generate_signature_header(
        PAYLOAD, SECRET, timestamp=1700000000
    )
    assert sign(PAYLOAD, SECRET, 1700000000) == header


def test_a_valid_signature_yields_the_event(http: httpx.AsyncClient) -> None:
    assert gateway(http).verify_event(PAYLOAD.encode(), sign(PAYLOAD, SECRET)) == EVENT


def test_a_signature_at_the_edge_of_the_tolerance_is_accepted(http: httpx.AsyncClient) -> None:
    header = sign(PAYLOAD, SECRET, int(time.time()) - 290)
    assert gateway(http).verify_event(PAYLOAD.encode(), header)["id"] == "evt_1"


@pytest.mark.parametrize(
    ("payload", "header", "message"),
    [
        (PAYLOAD.replace("evt_1", "evt_2"), sign(PAYLOAD, SECRET), "no Stripe-Signature matches"),
        (PAYLOAD, sign(PAYLOAD, "whsec_someone_else"), "no Stripe-Signature matches"),
        (PAYLOAD, sign(PAYLOAD, SECRET, int(time.time()) - 301), "more than 300 s old"),
        (PAYLOAD, "", "missing Stripe-Signature"),
        (PAYLOAD, "garbage", "malformed Stripe-Signature"),
        (PAYLOAD, "t=yesterday,v1=abc", "malformed Stripe-Signature"),
        (PAYLOAD, f"t={int(time.time())}", "malformed Stripe-Signature"),
        (PAYLOAD, f"t={int(time.time())},v1=\u00e9\u00e9", "malformed Stripe-Signature"),
        (PAYLOAD, f"t={int(time.time())},v0={'0' * 64}", "malformed Stripe-Signature"),
    ],
    ids=[
        "tampered",
        "wrong-secret",
        "stale",
        "empty",
        "garbage",
        "bad-t",
        "no-v1",
        "non-ascii",
        "v0",
    ],
)
def test_bad_signatures_are_refused(
    http: httpx.AsyncClient, payload: str, header: str, message: str
) -> None:
    with pytest.raises(InvalidSignature, match=message):
        gateway(http).verify_event(payload.encode(), header)


def test_a_svix_style_secret_is_not_a_stripe_secret(http: httpx.AsyncClient) -> None:
    # Svix keys on the base64-decoded part after "whsec_"; Stripe on the whole string.
    raw = base64.b64decode(base64.b64encode(SECRET.removeprefix("whsec_").encode()))
    header = sign(PAYLOAD, raw.decode())
    with pytest.raises(InvalidSignature):
        gateway(http).verify_event(PAYLOAD.encode(), header)


def test_a_body_that_is_not_utf8_is_refused(http: httpx.AsyncClient) -> None:
    with pytest.raises(InvalidSignature, match="not UTF-8"):
        gateway(http).verify_event(b"\xff\xfe", sign("x", SECRET))


@pytest.mark.parametrize("body", ["not json", "[1, 2]"])
def test_a_signed_body_that_is_not_an_event_is_refused(http: httpx.AsyncClient, body: str) -> None:
    with pytest.raises(InvalidSignature, match="not"):
        gateway(http).verify_event(body.encode(), sign(body, SECRET))


def test_every_configured_secret_is_tried_during_rotation(http: httpx.AsyncClient) -> None:
    rolling = gateway(http, OLD_SECRET, SECRET)
    assert rolling.verify_event(PAYLOAD.encode(), sign(PAYLOAD, OLD_SECRET))["id"] == "evt_1"
    assert rolling.verify_event(PAYLOAD.encode(), sign(PAYLOAD, SECRET))["id"] == "evt_1"
    # While rolling, Stripe signs with both: one v1 per secret.
    t = int(time.time())
    both = f"{sign(PAYLOAD, 'whsec_unknown', t)},{sign(PAYLOAD, SECRET, t).split(',')[1]}"
    assert gateway(http).verify_event(PAYLOAD.encode(), both)["id"] == "evt_1"
    with pytest.raises(InvalidSignature):
        gateway(http, OLD_SECRET).verify_event(PAYLOAD.encode(), sign(PAYLOAD, SECRET))


def test_live_keys_expect_live_events(http: httpx.AsyncClient) -> None:
    assert not gateway(http).livemode
    live = StripeGateway(http, secret_key="sk_live_x", webhook_secrets=[SECRET])
    restricted = StripeGateway(http, secret_key="rk_live_x", webhook_secrets=[SECRET])
    assert live.livemode and restricted.livemode
