"""A single-route model whose vendor says "at capacity, try again" (Chutes' 429, issue #10
§2): retried once after the vendor's `Retry-After` (or a short back-off) within the
deadline; still busy → 503 with `Retry-After`, not 502, and nothing charged."""

from __future__ import annotations

import time

import pytest

from image_router.kit.money import usd_to_credits
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
CHROMA = {"model": "lodestones/Chroma", "prompt": "a red barn"}  # chutes only, $0.01


def chutes_posts(gw: Gateway) -> int:
    return sum(1 for r in gw.fakes["chutes"].requests if r.method == "POST")


async def books_balance(gw: Gateway, account: str) -> None:
    assert await gw.ledger_sum(account) == await gw.balance(account)


async def test_busy_once_then_served_is_charged_once(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["chutes"].capacity_next()  # Chutes sends no Retry-After: a short back-off

    response = await gw.post(IMAGE, key, json=CHROMA)

    assert response.status_code == 200, response.text
    assert chutes_posts(gw) == 2
    [row] = await gw.generations()
    assert row["cost"] == usd_to_credits("0.01")
    assert [(a["provider"], a["status"]) for a in row["attempts"]] == [("chutes", 429)]
    assert await gw.balance(account) == usd_to_credits("0.99")
    await books_balance(gw, account)


async def test_the_retry_waits_for_the_vendors_retry_after(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["chutes"].fail_next(429, {"detail": "Too many requests"}, headers={"Retry-After": "1"})

    started = time.monotonic()
    response = await gw.post(IMAGE, key, json=CHROMA)

    assert response.status_code == 200, response.text
    assert time.monotonic() - started >= 1.0
    assert chutes_posts(gw) == 2
    assert await gw.balance(account) == usd_to_credits("0.99")


async def test_still_busy_is_503_with_retry_after_and_free(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["chutes"].capacity_next(times=2)

    response = await gw.post(IMAGE, key, json=CHROMA)

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "upstream_busy"
    assert int(response.headers["retry-after"]) >= 1
    assert chutes_posts(gw) == 2
    [row] = await gw.generations()
    assert row["status"] == "error" and row["cost"] == 0
    assert await gw.balance(account) == usd_to_credits("1")
    await books_balance(gw, account)


@pytest.mark.parametrize("gateway_overrides", [{"image_deadline_s": 5.0}])
async def test_a_retry_after_past_the_deadline_answers_503_at_once(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["chutes"].fail_next(
        429, {"detail": "Too many requests"}, headers={"Retry-After": "120"}
    )

    started = time.monotonic()
    response = await gw.post(IMAGE, key, json=CHROMA)

    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "120"
    assert time.monotonic() - started < 2.0
    assert chutes_posts(gw) == 1
    assert await gw.balance(account) == usd_to_credits("1")


async def test_a_vendor_account_out_of_funds_is_not_busy(vendors_gateway: Gateway) -> None:
    """A 402 will not go away by waiting: no retry, 502 as before."""
    gw = vendors_gateway
    _, key = await gw.account("1")
    gw.fakes["chutes"].fail_next(402)

    response = await gw.post(IMAGE, key, json=CHROMA)

    assert response.status_code == 502, response.text
    assert chutes_posts(gw) == 1
