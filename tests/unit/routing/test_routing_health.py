"""Route health: moving averages, the breaker's life-cycle, route ordering."""

from __future__ import annotations

from image_router.routing.health import (
    HealthPolicy,
    MemoryHealthStore,
    RouteHealth,
    order_routes,
    updated,
)

POLICY = HealthPolicy(failure_threshold=3, cooldown_s=10.0, alpha=0.5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_moving_averages() -> None:
    h = updated(RouteHealth(), True, 2.0, POLICY, 0)
    assert (h.error_rate, h.latency_s, h.samples) == (0.0, 2.0, 1)
    h = updated(h, True, 4.0, POLICY, 0)
    assert h.latency_s == 3.0
    h = updated(h, False, 9.0, POLICY, 0)
    assert h.error_rate == 0.5
    assert h.latency_s == 3.0  # failures do not move the latency average
    assert h.consecutive_failures == 1


async def test_breaker_opens_skips_probes_once_and_closes() -> None:
    clock = Clock()
    store = MemoryHealthStore(POLICY, clock)
    for _ in range(2):
        await store.record("a/x", False, 0.1)
    assert (await store.get_many(["a/x"]))["a/x"].state == "closed"
    await store.record("a/x", False, 0.1)
    assert (await store.get_many(["a/x"]))["a/x"].state == "open"

    clock.now += 9.9
    assert (await store.get_many(["a/x"]))["a/x"].state == "open"
    clock.now += 0.2
    assert (await store.get_many(["a/x"]))["a/x"].state == "half_open"
    assert await store.try_probe("a/x") is True
    assert await store.try_probe("a/x") is False  # one probe at a time

    await store.record("a/x", False, 0.1)  # the probe failed: open again, new cooldown
    assert (await store.get_many(["a/x"]))["a/x"].state == "open"
    clock.now += 10.1
    assert await store.try_probe("a/x") is True
    await store.record("a/x", True, 0.1)
    health = (await store.get_many(["a/x"]))["a/x"]
    assert (health.state, health.consecutive_failures) == ("closed", 0)


def test_order_keeps_catalog_order_when_healthy() -> None:
    keys = ["a/1", "b/2", "c/3"]
    health = {k: RouteHealth() for k in keys}
    assert order_routes(keys, health, {"a/1": 30, "b/2": 10, "c/3": 20}, POLICY) == keys


def test_order_puts_degraded_last_cheapest_first_and_drops_open() -> None:
    keys = ["a/1", "b/2", "c/3", "d/4"]
    health = {
        "a/1": RouteHealth(error_rate=0.9, samples=5),
        "b/2": RouteHealth(state="open", opened_at=0.0),
        "c/3": RouteHealth(state="half_open"),
        "d/4": RouteHealth(),
    }
    prices = {"a/1": 30, "b/2": 1, "c/3": 20, "d/4": 50}
    assert order_routes(keys, health, prices, POLICY) == ["d/4", "c/3", "a/1"]
