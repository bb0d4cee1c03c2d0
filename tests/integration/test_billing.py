"""Money: hold → settle/release, never an overdraft, the ledger always sums to the balance.

Runs on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from image_router.kit.money import usd_to_credits
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
DALLE2 = {"model": "openai/dall-e-2", "prompt": "a lighthouse", "size": "1024x1024"}


async def _assert_books_balance(gateway: Gateway, account_id: str) -> None:
    assert await gateway.ledger_sum(account_id) == await gateway.balance(account_id)


async def test_paid_generation_charges_the_price_once(any_gateway: Gateway) -> None:
    account, key = await any_gateway.account("1")
    response = await any_gateway.post(IMAGE, key, json=DALLE2)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["cost"] == 0.016
    assert await any_gateway.balance(account) == usd_to_credits("1") - 160
    [row] = await any_gateway.generations()
    assert row["status"] == "success"
    assert (row["cost"], row["held"]) == (160, 160)
    assert (row["provider"], row["model"], row["prompt"]) == (
        "openai",
        "openai/dall-e-2",
        "a lighthouse",
    )
    assert row["ip"] == "127.0.0.1"
    assert row["latency_ms"] is not None
    assert row["input_types"] == ["PROMPT"]
    assert row["output_urls"] == [body["data"][0]["url"]]
    await _assert_books_balance(any_gateway, account)


async def test_token_priced_model_settles_below_the_hold(any_gateway: Gateway) -> None:
    account, key = await any_gateway.account("1")
    response = await any_gateway.post(
        IMAGE, key, json={"model": "openai/gpt-image-1", "prompt": "cat", "quality": "low"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    usage = body["usage"]
    details = usage["input_tokens_details"]
    expected_usd = (
        0.000005 * details["text_tokens"]
        + 0.00001 * details["image_tokens"]
        + 0.00004 * usage["output_tokens"]
    )
    charged = usd_to_credits("1") - await any_gateway.balance(account)
    assert charged == pytest.approx(expected_usd * 10_000, abs=1)
    assert body["cost"] == pytest.approx(charged / 10_000)
    [row] = await any_gateway.rows("SELECT held, cost FROM generations")
    assert row["held"] == 3000  # the published maximum, $0.30
    assert row["cost"] == charged
    await _assert_books_balance(any_gateway, account)


async def test_insufficient_credits_is_402_and_charges_nothing(any_gateway: Gateway) -> None:
    account, key = await any_gateway.account("0.01")
    response = await any_gateway.post(IMAGE, key, json=DALLE2)
    assert response.status_code == 402
    assert response.json()["error"] == {
        "message": "Insufficient credits (this model needs minimum $0.016 credits), please "
        "topup your ImageRouter account: http://gateway.test/pricing",
        "type": "insufficient_credits",
        "code": "insufficient_credits",
        "param": None,
    }
    assert await any_gateway.balance(account) == 100
    assert any_gateway.openai.requests == []
    await _assert_books_balance(any_gateway, account)


@pytest.mark.parametrize(
    ("status", "client_status", "attempts"),
    # A busy vendor (429) on the last route is asked once more before the 503.
    [(500, 502, 1), (429, 503, 2), (400, 400, 1), (401, 502, 1)],
)
async def test_upstream_failure_releases_the_hold(
    any_gateway: Gateway, status: int, client_status: int, attempts: int
) -> None:
    account, key = await any_gateway.account("1")
    any_gateway.openai.fail_next(status, times=attempts)
    response = await any_gateway.post(IMAGE, key, json=DALLE2)
    assert response.status_code == client_status
    assert await any_gateway.balance(account) == usd_to_credits("1")
    [row] = await any_gateway.generations()
    assert row["status"] == "error"
    assert row["cost"] == 0
    assert row["error"]
    assert [a["status"] for a in row["attempts"]] == [status] * attempts
    await _assert_books_balance(any_gateway, account)


async def test_moderation_refusal_is_400_with_the_vendor_message(any_gateway: Gateway) -> None:
    account, key = await any_gateway.account("1")
    response = await any_gateway.post(
        IMAGE, key, json={**DALLE2, "model": "openai/gpt-image-1", "prompt": "forbidden-content"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"].startswith("Request was rejected as a result of the safety system.")
    assert error["code"] == "moderation_blocked"
    assert await any_gateway.balance(account) == usd_to_credits("1")


async def test_garbage_from_upstream_is_502_and_free(gateway: Gateway) -> None:
    account, key = await gateway.account("1")
    gateway.openai.garbage_next()
    response = await gateway.post(IMAGE, key, json=DALLE2)
    assert response.status_code == 502
    assert await gateway.balance(account) == usd_to_credits("1")


async def test_concurrent_requests_cannot_overspend(any_gateway: Gateway) -> None:
    """50 parallel paid requests with credit for exactly 10: 10 succeed, 40 get 402."""
    account, key = await any_gateway.account("0.16")
    any_gateway.openai.delay = 0.05  # keep requests in flight together
    responses = await asyncio.gather(
        *(any_gateway.post(IMAGE, key, json=DALLE2) for _ in range(50))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) == 10, statuses
    assert statuses.count(402) == 40, statuses
    assert await any_gateway.balance(account) == 0
    await _assert_books_balance(any_gateway, account)
    rows = await any_gateway.rows("SELECT status, cost FROM generations")
    assert len(rows) == 10
    assert sum(r["cost"] for r in rows) == 1600


async def test_zero_balance_key_may_use_the_free_test_model(any_gateway: Gateway) -> None:
    account, key = await any_gateway.account()
    response = await any_gateway.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    assert response.status_code == 200
    assert response.json()["cost"] == 0
    assert await any_gateway.ledger_sum(account) == 0


async def test_clients_vanishing_at_any_moment_never_unbalance_the_books(
    any_gateway: Gateway,
) -> None:
    """In process, cancelling the client cancels the request wherever it is — inside the
    hold's or the settle's transaction too. Nothing may be half-written or left held."""
    account, key = await any_gateway.account("10")
    any_gateway.openai.delay = 0.01
    rng = random.Random(7)

    async def impatient(wait: float) -> None:
        task = asyncio.ensure_future(any_gateway.post(IMAGE, key, json=DALLE2))
        await asyncio.sleep(wait)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    await asyncio.gather(*(impatient(rng.uniform(0, 0.04)) for _ in range(60)))
    await asyncio.sleep(0.3)  # shielded releases finish on their own
    rows = await any_gateway.generations()
    assert [r for r in rows if r["status"] == "processing"] == []
    charged = sum(r["cost"] for r in rows)
    assert await any_gateway.balance(account) == usd_to_credits("10") - charged
    await _assert_books_balance(any_gateway, account)
