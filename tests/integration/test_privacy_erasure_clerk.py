"""Erasure in Clerk mode (DSR-2 step 5): deleting the account deletes the Clerk user too.

The person signs in with a Clerk session token (Bearer, as from another origin), deletes
their account, and the erasure job deletes the user through the Backend API of the fake
Clerk; the mirrored e-mail, name and Clerk user id are gone from the database. A webhook's
`user.deleted` does not call Clerk back (covered in test_clerk_webhooks.py).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from tests.conftest import STRIPE_WEBHOOK_SECRET, Gateway, stripe_settings
from tests.fakes.clerk import FakeClerk, clerk_gateway
from tests.fakes.stripe import FakeStripe, deliver
from tests.integration.test_privacy_erasure import CONFIRM, database_dump, traces

EMAIL = "clerk.erasure-sentinel@example.org"


@pytest.fixture
def fake() -> FakeClerk:
    return FakeClerk()


@pytest.fixture
async def gw(any_db_url: str, tmp_path: Path, fake: FakeClerk) -> AsyncIterator[Gateway]:
    async with clerk_gateway(any_db_url, tmp_path / "data", fake, jobs_interval_s=3600) as gateway:
        yield gateway


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def clerk_person(gw: Gateway, fake: FakeClerk) -> tuple[str, str]:
    """A Clerk user signed in once (account created just in time): (subject, account id)."""
    sub = f"user_{uuid.uuid4().hex[:24]}"
    fake.add_user(sub, email=EMAIL, first_name="Ottoline", last_name="Vexbridge")
    shown = await gw.client.get("/v1/account", headers=bearer(fake.mint(sub)))
    assert shown.status_code == 200, shown.text
    return sub, shown.json()["id"]


async def test_deleting_the_account_deletes_the_clerk_user(gw: Gateway, fake: FakeClerk) -> None:
    sub, account_id = await clerk_person(gw, fake)
    needles = {"email": EMAIL, "name": "Vexbridge", "clerk user id": sub}
    assert "clerk user id" in traces(await database_dump(gw), needles)

    accepted = await gw.client.request(
        "DELETE", "/v1/account", json=CONFIRM, headers=bearer(fake.mint(sub))
    )
    assert accepted.status_code == 202, accepted.text
    # Signed out at once: Clerk's token is still valid, but the account is being erased.
    assert (await gw.client.get("/v1/account", headers=bearer(fake.mint(sub)))).status_code == 401

    assert await gw.res.jobs.run_due() == 1

    assert fake.deleted_users == [sub]
    assert traces(await database_dump(gw), needles) == []
    [tomb] = await gw.rows(
        "SELECT status, auth_subject, auth_subject_hmac FROM accounts WHERE id = :a", a=account_id
    )
    assert tomb == {
        "status": "deleted",
        "auth_subject": None,
        "auth_subject_hmac": gw.res.vault.subject_index(sub),
    }


async def test_a_stale_clerk_sign_in_cannot_delete(gw: Gateway, fake: FakeClerk) -> None:
    sub, account_id = await clerk_person(gw, fake)
    # First factor verified an hour ago: more than REVERIFY_MAX_MINUTES.
    stale = fake.mint(sub, fva=[60, -1], iat=int(time.time()) - 10)
    refused = await gw.client.request("DELETE", "/v1/account", json=CONFIRM, headers=bearer(stale))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "reverification_required"
    [row] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=account_id)
    assert row["status"] == "active"
    assert fake.deleted_users == []


async def test_clerk_down_delays_the_erasure_without_losing_it(
    gw: Gateway, fake: FakeClerk
) -> None:
    sub, account_id = await clerk_person(gw, fake)
    accepted = await gw.client.request(
        "DELETE", "/v1/account", json=CONFIRM, headers=bearer(fake.mint(sub))
    )
    assert accepted.status_code == 202
    fake.fail_next(503)
    assert await gw.res.jobs.run_due() == 1
    [row] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=account_id)
    assert row["status"] == "deletion_pending"
    assert await gw.res.vault.keys.get(account_id) is not None  # not shredded yet

    assert await gw.res.jobs.run_due(now=utcnow() + timedelta(minutes=5)) == 1
    assert fake.deleted_users == [sub]
    [row] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=account_id)
    assert row["status"] == "deleted"


@pytest.fixture
async def paying(any_db_url: str, tmp_path: Path, fake: FakeClerk) -> AsyncIterator[Gateway]:
    """Clerk mode with Stripe payments (the fake Stripe under `fakes["stripe"]`)."""
    async with clerk_gateway(
        any_db_url,
        tmp_path / "data",
        fake,
        {"stripe": FakeStripe()},
        jobs_interval_s=3600,
        **stripe_settings("http://fakes"),
    ) as gateway:
        yield gateway


async def checkout(gw: Gateway, key: str) -> str:
    """A Stripe Checkout opened with an API key of the account: its session id."""
    response = await gw.post("/v1/billing/checkout", key, json={"amount_usd": "10.00"})
    assert response.status_code == 200, response.text
    [row] = await gw.rows(
        "SELECT stripe_checkout_session_id AS s FROM topups WHERE id = :t", t=response.json()["id"]
    )
    return str(row["s"])


async def test_a_session_completed_at_stripe_does_not_stop_the_erasure(
    paying: Gateway, fake: FakeClerk
) -> None:
    """The person paid a checkout whose event has not arrived: the top-up is still
    `pending`, Stripe answers 400 to the expiry ("This Checkout Session has a status of
    complete"), and the erasure takes that as done and deletes the customer and the user."""
    gw = paying
    stripe = gw.fakes["stripe"]
    assert isinstance(stripe, FakeStripe)
    sub, account_id = await clerk_person(gw, fake)
    async with unit_of_work(gw.res.engine) as conn:
        _, key = await accounts.create_key(conn, account_id, "laptop")
    paid = await deliver(
        gw.client, stripe.completed(await checkout(gw, key)), secret=STRIPE_WEBHOOK_SECRET
    )
    assert paid.status_code == 200, paid.text
    [account] = await gw.rows("SELECT stripe_customer_id FROM accounts WHERE id = :a", a=account_id)
    customer = account["stripe_customer_id"]
    assert customer is not None
    in_flight = await checkout(gw, key)
    stripe.completed(in_flight)  # paid at Stripe; its webhook has not been delivered yet

    accepted = await gw.client.request(
        "DELETE", "/v1/account", json=CONFIRM, headers=bearer(fake.mint(sub))
    )
    assert accepted.status_code == 202, accepted.text
    assert await gw.res.jobs.run_due() == 1

    [expiry] = [r for r in stripe.requests if r.path.endswith(f"/{in_flight}/expire")]
    assert expiry.method == "POST"
    assert stripe.expired_sessions == []  # Stripe refused: the session is complete
    assert stripe.deleted_customers == [customer]
    assert fake.deleted_users == [sub]
    [job] = await gw.rows("SELECT status FROM jobs WHERE account_id = :a", a=account_id)
    assert job["status"] == "done"
    [tomb] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=account_id)
    assert tomb["status"] == "deleted"
