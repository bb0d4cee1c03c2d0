"""Top-up checkout and the deposits history (STR-1, STR-2), on SQLite and PostgreSQL.

Stripe is the fake of `tests/fakes/stripe.py`, reached through the gateway's own HTTP client.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import STRIPE_WEBHOOK_SECRET, Gateway
from tests.fakes.stripe import FakeStripe, deliver, form_of

CHECKOUT = "/v1/billing/checkout"


def fake_stripe(gw: Gateway) -> FakeStripe:
    fake = gw.fakes["stripe"]
    assert isinstance(fake, FakeStripe)
    return fake


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_checkout_opens_a_stripe_session_for_a_pending_topup(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, key = await gw.account(email="payer@example.com")
    response = await gw.post(CHECKOUT, key, json={"amount_usd": "12.50"})
    assert response.status_code == 200, response.text
    body = response.json()
    [session] = fake.sessions.values()
    assert body == {
        "id": body["id"],
        "url": session["url"],
        "amount_usd": "12.50",
        "credits": 125_000,
        "currency": "usd",
        "status": "pending",
    }
    [sent] = fake.session_requests
    form = form_of(sent)
    assert form["mode"] == "payment"
    assert form["line_items[0][price_data][unit_amount]"] == "1250"
    assert form["line_items[0][price_data][currency]"] == "usd"
    assert form["line_items[0][quantity]"] == "1"
    assert form["client_reference_id"] == body["id"]
    assert (
        form["metadata[topup_id]"] == form["payment_intent_data[metadata][topup_id]"] == body["id"]
    )
    assert form["metadata[account_id]"] == account
    assert form["success_url"].startswith(f"http://site.test/billing?topup={body['id']}&")
    assert "{CHECKOUT_SESSION_ID}" in form["success_url"]
    assert form["cancel_url"].startswith("http://site.test/billing")
    assert sent.headers["idempotency-key"] == f"topup:{body['id']}"
    assert "payer@example.com" not in sent.body.decode()
    [row] = await gw.rows("SELECT * FROM topups")
    assert (row["status"], row["amount_cents"], row["credits"], row["account_id"]) == (
        "pending",
        1250,
        125_000,
        account,
    )
    assert row["stripe_checkout_session_id"] == session["id"]
    # Opening a checkout credits nothing.
    assert await gw.balance(account) == 0
    shown = await gw.client.get(f"/v1/billing/topups/{body['id']}", headers=auth(key))
    assert shown.json()["status"] == "pending"
    assert shown.json()["paid_at"] is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"amount_usd": "4.99"}, "amount_usd must be between $5.00 and $1000.00"),
        ({"amount_usd": "1000.01"}, "amount_usd must be between $5.00 and $1000.00"),
        ({"amount_usd": "10.001"}, "amount_usd must be a whole number of cents"),
        ({"amount_usd": "lots"}, 'amount_usd must be a USD amount such as "10.00"'),
        ({"amount": "10"}, "amount_usd is required"),
        ("10.00", "amount_usd is required"),
    ],
)
async def test_bad_amounts_are_refused_before_stripe_is_called(
    stripe_gateway: Gateway, body: Any, message: str
) -> None:
    _, key = await stripe_gateway.account()
    response = await stripe_gateway.post(CHECKOUT, key, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith(message)
    assert error["param"] == "amount_usd"
    assert fake_stripe(stripe_gateway).requests == []
    assert await stripe_gateway.rows("SELECT id FROM topups") == []


async def test_a_body_that_is_not_json_is_refused(stripe_gateway: Gateway) -> None:
    _, key = await stripe_gateway.account()
    response = await stripe_gateway.post(CHECKOUT, key, content=b"amount=10")
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


async def test_checkout_needs_an_api_key(stripe_gateway: Gateway) -> None:
    response = await stripe_gateway.client.post(CHECKOUT, json={"amount_usd": "10"})
    assert response.status_code == 401
    assert fake_stripe(stripe_gateway).requests == []


async def test_stripe_failing_answers_502_and_marks_the_topup_failed(
    stripe_gateway: Gateway,
) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    _, key = await gw.account()
    fake.fail_next(500, times=3)  # the first try and both retries
    response = await gw.post(CHECKOUT, key, json={"amount_usd": "10"})
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "payment_provider_error"
    [row] = await gw.rows("SELECT id, status, stripe_checkout_session_id FROM topups")
    assert (row["status"], row["stripe_checkout_session_id"]) == ("failed", None)
    assert {r.headers["idempotency-key"] for r in fake.requests} == {f"topup:{row['id']}"}
    assert len(fake.requests) == 3


async def test_one_server_error_is_retried_into_one_session(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    _, key = await gw.account()
    fake.fail_next(500)
    response = await gw.post(CHECKOUT, key, json={"amount_usd": "10"})
    assert response.status_code == 200, response.text
    assert len(fake.sessions) == 1
    [row] = await gw.rows("SELECT id, status FROM topups")
    assert row["status"] == "pending"
    assert [r.headers["idempotency-key"] for r in fake.requests] == [f"topup:{row['id']}"] * 2


async def test_the_customer_made_by_the_first_payment_is_reused(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, key = await gw.account()
    first = await gw.post(CHECKOUT, key, json={"amount_usd": "10"})
    [session_id] = fake.sessions
    paid = await deliver(gw.client, fake.completed(session_id), secret=STRIPE_WEBHOOK_SECRET)
    assert paid.status_code == 200, paid.text
    [row] = await gw.rows("SELECT stripe_customer_id FROM accounts WHERE id = :a", a=account)
    assert row["stripe_customer_id"] == fake.sessions[session_id]["customer"]
    second = await gw.post(CHECKOUT, key, json={"amount_usd": "20"})
    assert second.status_code == 200
    assert second.json()["id"] != first.json()["id"]
    form = form_of(fake.session_requests[-1])
    assert form["customer"] == row["stripe_customer_id"]
    assert "customer_creation" not in form


async def test_a_customer_deleted_at_stripe_is_forgotten(stripe_gateway: Gateway) -> None:
    gw, fake = stripe_gateway, fake_stripe(stripe_gateway)
    account, key = await gw.account()
    await gw.execute("UPDATE accounts SET stripe_customer_id = 'cus_gone' WHERE id = :a", a=account)
    response = await gw.post(CHECKOUT, key, json={"amount_usd": "10"})
    assert response.status_code == 200, response.text
    assert [form_of(r).get("customer") for r in fake.requests] == ["cus_gone", None]
    [row] = await gw.rows("SELECT stripe_customer_id FROM accounts WHERE id = :a", a=account)
    assert row["stripe_customer_id"] is None


async def test_the_history_lists_only_the_callers_topups_newest_first(
    stripe_gateway: Gateway,
) -> None:
    gw = stripe_gateway
    _, key = await gw.account()
    _, other_key = await gw.account()
    ids = [(await gw.post(CHECKOUT, key, json={"amount_usd": usd})).json()["id"] for usd in "567"]
    theirs = (await gw.post(CHECKOUT, other_key, json={"amount_usd": "9"})).json()["id"]
    listed = await gw.client.get("/v1/billing/topups", headers=auth(key))
    assert listed.status_code == 200
    data = listed.json()["data"]
    assert [t["id"] for t in data] == ids[::-1]
    assert [t["amount_usd"] for t in data] == ["7.00", "6.00", "5.00"]
    limited = await gw.client.get("/v1/billing/topups?limit=1", headers=auth(key))
    assert [t["id"] for t in limited.json()["data"]] == [ids[2]]
    hidden = await gw.client.get(f"/v1/billing/topups/{theirs}", headers=auth(key))
    assert hidden.status_code == 404


async def test_without_a_payment_provider_the_operator_grants_credits(any_gateway: Gateway) -> None:
    _, key = await any_gateway.account()
    response = await any_gateway.post(CHECKOUT, key, json={"amount_usd": "10"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "payments_disabled"
    assert "PAYMENTS_PROVIDER=none" in error["message"]
    assert "image-router credits grant" in error["message"]
    hook = await any_gateway.client.post("/webhooks/stripe", content=b"{}")
    assert hook.status_code == 404
    history = await any_gateway.client.get("/v1/billing/topups", headers=auth(key))
    assert history.json() == {"object": "list", "data": []}
