"""Stripe webhooks: signatures, and top-ups credited exactly once (STR-3…6).

Events are built by the fake Stripe from the sessions the gateway really created, signed
like Stripe signs them, and posted to `/webhooks/stripe`; on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from tests.conftest import STRIPE_WEBHOOK_SECRET, Gateway
from tests.fakes.stripe import FakeStripe, deliver, sign

HOOK = "/webhooks/stripe"


def fake_stripe(gw: Gateway) -> FakeStripe:
    fake = gw.fakes["stripe"]
    assert isinstance(fake, FakeStripe)
    return fake


async def open_checkout(gw: Gateway, usd: str = "10.00") -> tuple[str, str, str, str]:
    """A new account with a pending top-up: (account id, API key, top-up id, session id)."""
    account, key = await gw.account()
    response = await gw.post("/v1/billing/checkout", key, json={"amount_usd": usd})
    assert response.status_code == 200, response.text
    topup = response.json()["id"]
    [row] = await gw.rows("SELECT stripe_checkout_session_id FROM topups WHERE id = :t", t=topup)
    return account, key, topup, row["stripe_checkout_session_id"]


async def send(gw: Gateway, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = await deliver(gw.client, event, secret=STRIPE_WEBHOOK_SECRET, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def topup_row(gw: Gateway, topup: str) -> dict[str, Any]:
    [row] = await gw.rows("SELECT * FROM topups WHERE id = :t", t=topup)
    return row


async def assert_books_balance(gw: Gateway, account: str) -> None:
    assert await gw.ledger_sum(account) == await gw.balance(account)


async def test_a_paid_session_is_credited_once_when_delivered_three_times(
    stripe_gateway: Gateway,
) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, key, topup, session = await open_checkout(gw, "10.00")
    event = fake.completed(session)
    outcomes = [(await send(gw, event))["outcome"] for _ in range(3)]
    assert outcomes == ["credited 100000 credits"] + ["duplicate: already processed"] * 2
    assert await gw.balance(account) == 100_000
    await assert_books_balance(gw, account)
    row = await topup_row(gw, topup)
    assert row["status"] == "paid"
    assert row["paid_at"] is not None
    assert row["stripe_payment_intent_id"] == fake.sessions[session]["payment_intent"]
    entries = await gw.rows(
        "SELECT kind, amount, ref FROM ledger_entries WHERE account_id = :a", a=account
    )
    assert entries == [{"kind": "topup", "amount": 100_000, "ref": session}]
    [recorded] = await gw.rows("SELECT event_id, type, processed_at, outcome FROM stripe_events")
    assert (recorded["event_id"], recorded["type"]) == (event["id"], "checkout.session.completed")
    assert recorded["processed_at"] is not None
    shown = await gw.client.get(
        f"/v1/billing/topups/{topup}", headers={"Authorization": f"Bearer {key}"}
    )
    assert shown.json()["status"] == "paid"
    credits = await gw.client.get("/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert credits.json() == {
        "remaining_credits": "10.0000",
        "credit_usage": "0.0000",
        "total_deposits": "10.0000",
    }


async def test_concurrent_redeliveries_credit_once(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, _, session = await open_checkout(gw)
    event = fake.completed(session)
    bodies = await asyncio.gather(*(send(gw, event) for _ in range(3)))
    assert (
        sorted(b["outcome"] for b in bodies)
        == ["credited 100000 credits"] + ["duplicate: already processed"] * 2
    )
    assert await gw.balance(account) == 100_000
    await assert_books_balance(gw, account)


async def test_two_events_for_one_session_racing_credit_once(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await open_checkout(gw)
    completed = fake.completed(session)
    succeeded = fake.async_payment(session)
    assert completed["id"] != succeeded["id"]
    bodies = await asyncio.gather(send(gw, completed), send(gw, succeeded))
    assert sorted(b["outcome"] for b in bodies) == [
        "credited 100000 credits",
        "no change: top-up already credited",
    ]
    assert await gw.balance(account) == 100_000
    assert (await topup_row(gw, topup))["status"] == "paid"
    assert len(await gw.rows("SELECT event_id FROM stripe_events")) == 2
    await assert_books_balance(gw, account)


async def test_a_delayed_payment_is_credited_when_it_succeeds(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await open_checkout(gw, "25.00")
    body = await send(gw, fake.completed(session, payment_status="unpaid"))
    assert body["outcome"] == "awaiting asynchronous payment"
    assert (await topup_row(gw, topup))["status"] == "processing"
    assert await gw.balance(account) == 0
    await send(gw, fake.async_payment(session))
    assert (await topup_row(gw, topup))["status"] == "paid"
    assert await gw.balance(account) == 250_000
    await assert_books_balance(gw, account)


async def test_a_failed_delayed_payment_credits_nothing(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await open_checkout(gw)
    await send(gw, fake.completed(session, payment_status="unpaid"))
    body = await send(gw, fake.async_payment(session, succeeded=False))
    assert body["outcome"] == "top-up failed"
    assert (await topup_row(gw, topup))["status"] == "failed"
    assert await gw.balance(account) == 0
    await assert_books_balance(gw, account)


async def test_an_expired_session_credits_nothing(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await open_checkout(gw)
    assert (await send(gw, fake.expired(session)))["outcome"] == "top-up expired"
    row = await topup_row(gw, topup)
    assert (row["status"], row["paid_at"]) == ("expired", None)
    assert await gw.balance(account) == 0
    await assert_books_balance(gw, account)


async def test_expiry_never_undoes_a_payment(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await open_checkout(gw)
    await send(gw, fake.completed(session))
    assert (await send(gw, fake.expired(session)))["outcome"] == "no change: top-up is paid"
    assert (await topup_row(gw, topup))["status"] == "paid"
    assert await gw.balance(account) == 100_000


async def test_the_session_is_found_by_our_ids_when_its_id_was_not_stored(
    stripe_gateway: Gateway,
) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await open_checkout(gw)
    await gw.execute("UPDATE topups SET stripe_checkout_session_id = NULL WHERE id = :t", t=topup)
    await send(gw, fake.completed(session))
    assert await gw.balance(account) == 100_000
    assert (await topup_row(gw, topup))["stripe_checkout_session_id"] == session


async def test_an_event_of_the_wrong_mode_or_currency_is_flagged_not_credited(
    stripe_gateway: Gateway,
) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await open_checkout(gw)
    live = fake.completed(session)
    live["livemode"] = True
    assert (await send(gw, live))["outcome"].startswith("flagged: livemode=true")
    euros = fake.completed(session)
    euros["data"]["object"]["currency"] = "eur"
    assert (await send(gw, euros))["outcome"].startswith("flagged: currency 'eur'")
    assert (await topup_row(gw, topup))["status"] == "flagged"
    assert await gw.balance(account) == 0
    await assert_books_balance(gw, account)


async def test_a_paid_session_of_the_wrong_mode_flags_its_top_up(
    stripe_gateway: Gateway,
) -> None:
    """Not left `pending`: an erasure would try to expire a session that is complete."""
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await open_checkout(gw)
    live = fake.completed(session)
    live["livemode"] = True
    assert (await send(gw, live))["outcome"] == (
        "flagged: livemode=true does not match the configured key"
    )
    assert (await topup_row(gw, topup))["status"] == "flagged"
    assert await gw.balance(account) == 0
    # An unpaid session of the wrong mode is refused too, but there is nothing to flag.
    _, _, other, unpaid = await open_checkout(gw)
    wrong = fake.completed(unpaid, payment_status="unpaid")
    wrong["livemode"] = True
    assert (await send(gw, wrong))["outcome"].startswith("flagged: livemode=true")
    assert (await topup_row(gw, other))["status"] == "pending"


async def test_events_that_are_not_ours_or_not_handled_are_recorded_and_ignored(
    stripe_gateway: Gateway,
) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    other = fake.event(
        "checkout.session.completed", {"id": "cs_test_elsewhere", "payment_status": "paid"}
    )
    assert (await send(gw, other))[
        "outcome"
    ] == "ignored: no top-up for checkout session cs_test_elsewhere"
    unknown = fake.event("customer.created", {"id": "cus_1", "object": "customer"})
    assert (await send(gw, unknown))["outcome"] == "ignored: event type not handled"
    recorded = await gw.rows("SELECT event_id, outcome FROM stripe_events ORDER BY event_id")
    assert {r["event_id"] for r in recorded} == {other["id"], unknown["id"]}


async def test_a_signed_body_that_is_not_an_event_is_refused(stripe_gateway: Gateway) -> None:
    for payload in ('{"hello": "world"}', '{"id": "evt_1", "type": "x", "data": {}}', "[]"):
        response = await stripe_gateway.client.post(
            HOOK,
            content=payload,
            headers={"Stripe-Signature": sign(payload, STRIPE_WEBHOOK_SECRET)},
        )
        assert response.status_code == 400, payload
    assert await stripe_gateway.rows("SELECT event_id FROM stripe_events") == []


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda p: (p + " ", sign(p, STRIPE_WEBHOOK_SECRET)), id="tampered"),
        pytest.param(
            lambda p: (p, sign(p, STRIPE_WEBHOOK_SECRET, int(time.time()) - 301)), id="stale"
        ),
        pytest.param(lambda p: (p, sign(p, "whsec_not_ours")), id="wrong-secret"),
        pytest.param(lambda p: (p, "t=now,v1=deadbeef"), id="malformed"),
        pytest.param(lambda p: (p, None), id="missing"),
    ],
)
async def test_forged_or_stale_deliveries_are_refused_and_change_nothing(
    stripe_gateway: Gateway, forge: Any
) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await open_checkout(gw)
    payload, header = forge(orjson.dumps(fake.completed(session)).decode())
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    response = await gw.client.post(HOOK, content=payload, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_signature"
    assert await gw.balance(account) == 0
    assert (await topup_row(gw, topup))["status"] == "pending"
    assert await gw.rows("SELECT event_id FROM stripe_events") == []


@pytest.mark.parametrize(
    "gateway_overrides", [{"stripe_webhook_secret": "whsec_old_secret, whsec_new_secret"}]
)
async def test_both_secrets_are_accepted_while_one_is_rolled(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, _, session = await open_checkout(gw)
    old = await deliver(gw.client, fake.completed(session), secret="whsec_old_secret")
    assert old.status_code == 200, old.text
    new = await deliver(gw.client, fake.async_payment(session), secret="whsec_new_secret")
    assert new.status_code == 200, new.text
    retired = await deliver(gw.client, fake.expired(session), secret=STRIPE_WEBHOOK_SECRET)
    assert retired.status_code == 400
    assert await gw.balance(account) == 100_000
    await assert_books_balance(gw, account)
