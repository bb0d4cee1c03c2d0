"""Routing that survives: failover between a model's routes, the circuit breaker, per-attempt
timeouts and vendor cancellation — asserted on what the client got, which routes were
tried, the usage row, and the books (balance == ledger)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from image_router.kit.money import usd_to_credits
from image_router.routing.health import MemoryHealthStore
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
# Two routes: runware first, deepinfra second (spec §3.9).
FLUX = {"model": "black-forest-labs/FLUX-1.1-pro", "prompt": "a red barn", "size": "1024x1024"}


def posts(gateway: Gateway, vendor: str) -> int:
    return sum(1 for r in gateway.fakes[vendor].requests if r.method == "POST")


async def books_balance(gateway: Gateway, account: str) -> None:
    assert await gateway.ledger_sum(account) == await gateway.balance(account)


def fail_later_routes(gateway: Gateway, model: str, after: tuple[str, ...], times: int) -> None:
    """Make the routes of `model` past the vendors `after` fail too: a dearer fallback is
    tried whenever the account can pay for it, so "every route fails" must include them."""
    spec = gateway.res.catalog.get(model)
    assert spec is not None
    for route in spec.routes:
        if route.provider not in after:
            gateway.fakes[route.provider].fail_next(503, times=times)


async def test_a_failing_route_falls_over_to_the_next(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["runware"].fail_next(503)
    response = await gw.post(IMAGE, key, json=FLUX)
    assert response.status_code == 200, response.text
    [row] = await gw.generations()
    assert row["provider"] == "deepinfra"
    assert [(a["provider"], a["kind"], a["status"]) for a in row["attempts"]] == [
        ("runware", "unavailable", 503)
    ]
    assert row["cost"] == usd_to_credits("1") - await gw.balance(account)
    assert 0 < row["cost"] <= 400
    await books_balance(gw, account)


async def test_the_users_own_fault_is_not_retried_elsewhere(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    response = await gw.post(IMAGE, key, json={**FLUX, "prompt": "forbidden-content here"})
    assert response.status_code == 400
    assert posts(gw, "deepinfra") == 0
    assert await gw.balance(account) == usd_to_credits("1")


async def test_every_route_failing_is_502_and_free(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["runware"].fail_next(500)
    gw.fakes["deepinfra"].fail_next(502)
    fail_later_routes(gw, FLUX["model"], ("runware", "deepinfra"), times=1)
    response = await gw.post(IMAGE, key, json=FLUX)
    assert response.status_code == 502
    [row] = await gw.generations()
    assert [a["provider"] for a in row["attempts"]][:2] == ["runware", "deepinfra"]
    assert row["status"] == "error"
    assert await gw.balance(account) == usd_to_credits("1")
    await books_balance(gw, account)


class Clock:
    now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_failing_route_is_tried_after_healthy_ones(vendors_gateway: Gateway) -> None:
    """Learning: once runware failed, the next request goes to deepinfra first."""
    gw = vendors_gateway
    _, key = await gw.account("1")
    gw.fakes["runware"].fail_next(503)
    assert (await gw.post(IMAGE, key, json=FLUX)).status_code == 200
    assert (await gw.post(IMAGE, key, json=FLUX)).status_code == 200
    assert posts(gw, "runware") == 1
    assert posts(gw, "deepinfra") == 2


# Runware first (and, where the catalog has it, a dearer fallback made to fail as well).
DEV = {"model": "black-forest-labs/FLUX-1-dev", "prompt": "a red barn", "size": "1024x1024"}


@pytest.mark.parametrize("gateway_overrides", [{"circuit_failure_threshold": 2}])
async def test_circuit_opens_skips_the_route_and_closes_again(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    clock = Clock()
    gw.res.health = MemoryHealthStore(gw.res.health.policy, clock)
    gw.res.generator = replace(gw.res.generator, health=gw.res.health)
    account, key = await gw.account("5")
    gw.fakes["runware"].fail_next(503, times=2)
    fail_later_routes(gw, DEV["model"], ("runware",), times=2)
    for _ in range(2):
        assert (await gw.post(IMAGE, key, json=DEV)).status_code == 502
    status = (await gw.client.get("/v1/providers/status")).json()
    assert status["routes"]["runware/runware:101@1"]["state"] == "open"

    # Open: the request fails fast without calling the vendor.
    response = await gw.post(IMAGE, key, json=DEV)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "circuit_open"
    assert posts(gw, "runware") == 2

    # After the cooldown one request probes it; runware has recovered, the circuit closes.
    clock.now += gw.res.health.policy.cooldown_s + 1
    assert (await gw.post(IMAGE, key, json=DEV)).status_code == 200
    assert posts(gw, "runware") == 3
    status = (await gw.client.get("/v1/providers/status")).json()
    assert status["routes"]["runware/runware:101@1"]["state"] == "closed"
    await books_balance(gw, account)


@pytest.mark.parametrize("gateway_overrides", [{"circuit_failure_threshold": 1}])
async def test_every_circuit_open_fails_fast_with_503(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["runware"].fail_next(503)
    gw.fakes["deepinfra"].fail_next(503)
    fail_later_routes(gw, FLUX["model"], ("runware", "deepinfra"), times=1)
    assert (await gw.post(IMAGE, key, json=FLUX)).status_code == 502
    response = await gw.post(IMAGE, key, json=FLUX)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "circuit_open"
    assert "retry-after" in response.headers
    assert posts(gw, "runware") == posts(gw, "deepinfra") == 1
    assert await gw.balance(account) == usd_to_credits("1")


async def test_opted_out_accounts_do_not_feed_route_health(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    await gw.execute(
        "UPDATE accounts SET allow_routing_improvement = false WHERE id = :id", id=account
    )
    gw.fakes["runware"].fail_next(503)
    assert (await gw.post(IMAGE, key, json=FLUX)).status_code == 200
    assert await gw.res.health.snapshot() == {}


@pytest.mark.parametrize("gateway_overrides", [{"attempt_timeout_s": 0.3}])
async def test_a_stalled_route_times_out_and_the_next_one_serves(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["runware"].hang_next(5)
    response = await gw.post(IMAGE, key, json=FLUX)
    assert response.status_code == 200, response.text
    [row] = await gw.generations()
    assert row["provider"] == "deepinfra"
    assert row["attempts"][0]["kind"] == "timeout"
    await books_balance(gw, account)


@pytest.mark.parametrize("gateway_overrides", [{"image_deadline_s": 0.5}])
async def test_deadline_cancels_the_vendor_job_and_charges_nothing(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    fal = gw.fakes["fal"]
    fal.polls_before_done = 10_000  # type: ignore[attr-defined]
    response = await gw.post(IMAGE, key, json={"model": "recraft-ai/recraft-v3", "prompt": "x"})
    assert response.status_code == 504
    assert len(fal.cancelled) == 1  # type: ignore[attr-defined]
    assert await gw.balance(account) == usd_to_credits("1")
    await books_balance(gw, account)


TWO_OPENAI_ROUTES = """
[[model]]
id = "ops/two-routes"
modality = "image"
release_date = "2026-01-01"

  [[model.routes]]
  provider = "openai"
  upstream = "dall-e-2"
  price = { rule = "fixed", usd = "0.02" }

  [[model.routes]]
  provider = "openai"
  upstream = "dall-e-3"
  price = { rule = "fixed", usd = "0.02" }
"""


@pytest.fixture
def gateway_overrides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    path = tmp_path_factory.mktemp("catalog") / "ops.toml"
    path.write_text(TWO_OPENAI_ROUTES)
    return {"catalog_paths": [path], "retry_backoff_s": 0.4}


@pytest.mark.parametrize(("status", "waits"), [(429, True), (503, False)])
async def test_back_off_only_when_the_same_vendor_asked_to_slow_down(
    gateway: Gateway, status: int, waits: bool
) -> None:
    _, key = await gateway.account("1")
    gateway.openai.fail_next(status)
    started = time.monotonic()
    response = await gateway.post(IMAGE, key, json={"model": "ops/two-routes", "prompt": "x"})
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    assert [r.json["model"] for r in gateway.openai.requests] == ["dall-e-2", "dall-e-3"]
    if waits:
        assert elapsed >= 0.2  # jittered between half and all of RETRY_BACKOFF_S
    else:
        assert elapsed < 0.2
