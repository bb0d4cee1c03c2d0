"""Refunds and disputes of paid top-ups (STR-3 table), on SQLite and PostgreSQL.

After every step the ledger must still sum to the balance, and `/v1/credits` must tell the
same story: deposits net of refunds and disputes, usage unchanged by them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from image_router.db.session import unit_of_work
from image_router.ledger import service as ledger
from tests.conftest import STRIPE_WEBHOOK_SECRET, Gateway
from tests.fakes.stripe import FakeStripe, deliver


def fake_stripe(gw: Gateway) -> FakeStripe:
    fake = gw.fakes["stripe"]
    assert isinstance(fake, FakeStripe)
    return fake


async def paid_topup(gw: Gateway, usd: str = "10.00") -> tuple[str, str, str, str]:
    """An account credited by a paid top-up: (account id, API key, top-up id, session id)."""
    account, key = await gw.account()
    response = await gw.post("/v1/billing/checkout", key, json={"amount_usd": usd})
    assert response.status_code == 200, response.text
    topup = response.json()["id"]
    [row] = await gw.rows("SELECT stripe_checkout_session_id FROM topups WHERE id = :t", t=topup)
    session = row["stripe_checkout_session_id"]
    assert (await send(gw, fake_stripe(gw).completed(session)))["outcome"].startswith("credited")
    return account, key, topup, session


async def send(gw: Gateway, event: dict[str, Any]) -> dict[str, Any]:
    response = await deliver(gw.client, event, secret=STRIPE_WEBHOOK_SECRET)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def spend(gw: Gateway, account: str, credits: int) -> None:
    """Spend credits the way a generation does (a hold that is never released)."""
    async with unit_of_work(gw.res.engine) as conn:
        assert await ledger.hold(conn, account, credits, generation_id=f"gen-{credits}")


async def state(gw: Gateway, account: str, topup: str) -> dict[str, Any]:
    [row] = await gw.rows(
        "SELECT t.status, t.refunded_cents, t.disputed_cents, a.balance, a.billing_hold "
        "FROM topups t JOIN accounts a ON a.id = t.account_id WHERE t.id = :t",
        t=topup,
    )
    assert await gw.ledger_sum(account) == row["balance"]
    return row


async def credits(gw: Gateway, key: str) -> dict[str, str]:
    response = await gw.client.get("/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200
    body: dict[str, str] = response.json()
    return body


async def test_partial_then_full_refunds_debit_the_difference(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, key, topup, session = await paid_topup(gw, "10.00")
    partial = fake.refunded(session, 300)
    body = await send(gw, partial)
    assert body["outcome"] == "refunded 3.00: took 30000 credits"
    assert await state(gw, account, topup) == {
        "status": "partially_refunded",
        "refunded_cents": 300,
        "disputed_cents": 0,
        "balance": 70_000,
        "billing_hold": 0,
    }
    assert await credits(gw, key) == {
        "remaining_credits": "7.0000",
        "credit_usage": "0.0000",
        "total_deposits": "7.0000",
    }
    await send(gw, fake.refunded(session, 1000))
    after = await state(gw, account, topup)
    assert (after["status"], after["refunded_cents"], after["balance"]) == ("refunded", 1000, 0)
    # An old event delivered late (a new id, so not a duplicate) changes nothing.
    late = dict(partial, id="evt_test_late_copy")
    assert (await send(gw, late))["outcome"] == "no change: 10.00 already refunded"
    assert (await state(gw, account, topup))["balance"] == 0
    assert (await credits(gw, key))["total_deposits"] == "0.0000"
    refunds = await gw.rows("SELECT amount FROM ledger_entries WHERE kind = 'refund' ORDER BY id")
    assert [r["amount"] for r in refunds] == [-30_000, -70_000]


async def test_refunds_delivered_out_of_order_end_the_same(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await paid_topup(gw, "10.00")
    first, second = fake.refunded(session, 300), fake.refunded(session, 1000)
    await send(gw, second)
    assert (await send(gw, first))["outcome"] == "no change: 10.00 already refunded"
    after = await state(gw, account, topup)
    assert (after["status"], after["refunded_cents"], after["balance"]) == ("refunded", 1000, 0)


async def test_concurrent_refund_events_debit_once(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await paid_topup(gw, "10.00")
    events = [fake.refunded(session, 400), fake.refunded(session, 400), fake.refunded(session, 700)]
    await asyncio.gather(*(send(gw, e) for e in events))
    after = await state(gw, account, topup)
    assert (after["refunded_cents"], after["balance"]) == (700, 30_000)


async def test_a_refund_of_spent_credits_stops_at_zero(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, key, topup, session = await paid_topup(gw, "10.00")
    await spend(gw, account, 80_000)
    body = await send(gw, fake.refunded(session, 1000))
    assert (
        body["outcome"]
        == "refunded 10.00: took 20000 credits, 80000 not recoverable (already spent)"
    )
    after = await state(gw, account, topup)
    assert (after["status"], after["balance"]) == ("refunded", 0)
    [entry] = await gw.rows("SELECT amount, reason FROM ledger_entries WHERE kind = 'refund'")
    assert entry["amount"] == -20_000
    assert "80000 credits not recoverable" in entry["reason"]
    # What was spent stays usage; deposits are what was paid and kept.
    assert await credits(gw, key) == {
        "remaining_credits": "0.0000",
        "credit_usage": "8.0000",
        "total_deposits": "8.0000",
    }


async def test_a_refund_before_the_payment_event_is_retried_later(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, key = await gw.account()
    response = await gw.post("/v1/billing/checkout", key, json={"amount_usd": "10"})
    topup = response.json()["id"]
    [session] = fake.sessions
    completed = fake.completed(session)  # Stripe's order; delivered out of it below
    refund = fake.refunded(session, 500)
    early = await deliver(gw.client, refund, secret=STRIPE_WEBHOOK_SECRET)
    assert early.status_code == 503
    assert early.json()["error"]["code"] == "retry_later"
    [noted] = await gw.rows("SELECT processed_at, outcome FROM stripe_events")
    assert noted["processed_at"] is None
    assert noted["outcome"].startswith("deferred: ")
    assert await gw.balance(account) == 0
    await send(gw, completed)
    # Stripe's retry of the same event now applies.
    assert (await send(gw, refund))["outcome"] == "refunded 5.00: took 50000 credits"
    after = await state(gw, account, topup)
    assert (after["status"], after["balance"]) == ("partially_refunded", 50_000)


async def test_a_lost_dispute_freezes_then_takes_the_credits(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, key, topup, session = await paid_topup(gw, "10.00")
    opened = await send(gw, fake.dispute_created(session))
    assert opened["outcome"] == "froze 100000 credits"
    assert await state(gw, account, topup) == {
        "status": "disputed",
        "refunded_cents": 0,
        "disputed_cents": 1000,
        "balance": 0,
        "billing_hold": 100_000,
    }
    # Frozen credits cannot be spent.
    refused = await gw.post(
        "/v1/openai/images/generations",
        key,
        json={"model": "openai/dall-e-2", "prompt": "a lighthouse", "size": "1024x1024"},
    )
    assert refused.status_code == 402
    assert (await send(gw, fake.dispute_created(session)))[
        "outcome"
    ] == "no change: dispute already open"
    closed = await send(gw, fake.dispute_closed(session, "lost"))
    assert closed["outcome"] == "dispute lost: 100000 frozen credits kept, 0 more taken"
    after = await state(gw, account, topup)
    assert (after["status"], after["balance"], after["billing_hold"]) == ("dispute_lost", 0, 0)
    assert (await send(gw, fake.dispute_closed(session, "lost")))["outcome"] == (
        "no change: dispute already closed"
    )
    assert await credits(gw, key) == {
        "remaining_credits": "0.0000",
        "credit_usage": "0.0000",
        "total_deposits": "0.0000",
    }


async def test_a_won_dispute_gives_the_credits_back(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, key, topup, session = await paid_topup(gw, "10.00")
    await send(gw, fake.dispute_created(session, 600))
    assert (await state(gw, account, topup))["balance"] == 40_000
    body = await send(gw, fake.dispute_closed(session, "won"))
    assert body["outcome"] == "dispute won: released 60000 credits"
    assert await state(gw, account, topup) == {
        "status": "paid",
        "refunded_cents": 0,
        "disputed_cents": 600,
        "balance": 100_000,
        "billing_hold": 0,
    }
    assert (await credits(gw, key))["total_deposits"] == "10.0000"


async def test_a_dispute_over_spent_credits_takes_what_is_left_when_lost(
    stripe_gateway: Gateway,
) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await paid_topup(gw, "10.00")
    await spend(gw, account, 70_000)
    assert (await send(gw, fake.dispute_created(session)))["outcome"] == (
        "froze 30000 credits, 70000 already spent"
    )
    # A later grant is there when the dispute is lost: the shortfall is taken from it.
    async with unit_of_work(gw.res.engine) as conn:
        await ledger.grant(conn, account, 50_000, reason="support")
    closed = await send(gw, fake.dispute_closed(session, "lost"))
    assert closed["outcome"] == "dispute lost: 30000 frozen credits kept, 50000 more taken"
    after = await state(gw, account, topup)
    assert (after["balance"], after["billing_hold"]) == (0, 0)


async def test_a_dispute_closed_before_it_was_opened_is_not_reopened(
    stripe_gateway: Gateway,
) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, _, topup, session = await paid_topup(gw, "10.00")
    created = fake.dispute_created(session)
    closed = fake.dispute_closed(session, "lost")
    assert (await send(gw, closed))[
        "outcome"
    ] == "dispute lost: 0 frozen credits kept, 100000 more taken"
    assert (await send(gw, created))["outcome"] == "no change: dispute already closed"
    after = await state(gw, account, topup)
    assert (after["status"], after["balance"], after["billing_hold"]) == ("dispute_lost", 0, 0)


async def test_charges_of_payments_that_are_not_ours_are_ignored(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    foreign = {
        "id": "ch_x",
        "object": "charge",
        "amount_refunded": 500,
        "payment_intent": "pi_x",
        "currency": "usd",
        "metadata": {},
    }
    body = await send(gw, fake.event("charge.refunded", foreign))
    assert body["outcome"] == "ignored: no top-up for payment intent pi_x"
