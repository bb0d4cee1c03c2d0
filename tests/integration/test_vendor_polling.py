"""Polling a running vendor job through the whole gateway: a failed status check does not
end the request, and a job given up on is cancelled at the vendor with the hold released.

`recraft-ai/recraft-v3` has one route, fal's queue, which the gateway polls.
"""

from __future__ import annotations

from prometheus_client import REGISTRY

from image_router.kit.money import usd_to_credits
from image_router.providers.polling import DEFAULT_RETRY
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
RECRAFT = {"model": "recraft-ai/recraft-v3", "prompt": "a lighthouse"}
PRICE = usd_to_credits("0.04")


def fal_cancels() -> float:
    value = REGISTRY.get_sample_value(
        "image_router_vendor_cancels_total", {"provider": "fal", "reason": "poll_failed"}
    )
    return value or 0.0


async def test_two_failed_status_checks_then_success_is_charged_once(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    fal = gw.fakes["fal"]
    fal.fail_polls(503, times=2)

    response = await gw.post(IMAGE, key, json=RECRAFT)

    assert response.status_code == 200, response.text
    assert fal.poll_failures_left == 0
    submits = [r for r in fal.requests if r.method == "POST"]
    assert len(submits) == 1
    assert fal.cancelled_jobs() == []
    [row] = await gw.generations()
    assert row["status"] == "success"
    assert row["attempts"] in (None, [])
    assert await gw.balance(account) == usd_to_credits("1") - PRICE
    assert await gw.ledger_sum(account) == await gw.balance(account)


async def test_polling_failing_for_good_cancels_the_job_and_releases_the_hold(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    fal = gw.fakes["fal"]
    fal.fail_polls(503, times=100)
    cancels_before = fal_cancels()

    response = await gw.post(IMAGE, key, json=RECRAFT)

    assert response.status_code == 502, response.text
    assert 100 - fal.poll_failures_left == DEFAULT_RETRY.max_failures
    assert len(fal.cancelled_jobs()) == 1  # the vendor received the cancel
    [row] = await gw.generations()
    [attempt] = row["attempts"]
    assert attempt["provider"] == "fal"
    assert attempt["vendor_job_cancelled"] is True
    assert fal_cancels() == cancels_before + 1
    assert await gw.balance(account) == usd_to_credits("1")  # nothing held, nothing charged
    assert await gw.ledger_sum(account) == await gw.balance(account)
