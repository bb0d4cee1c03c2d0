"""Route health in the real Redis (127.0.0.1:6379): shared by workers, consistent under
concurrency."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from image_router.routing.health import HealthPolicy
from image_router.routing.redis_health import RedisHealthStore

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POLICY = HealthPolicy(failure_threshold=3, cooldown_s=0.3)


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    name = f"test-{os.urandom(6).hex()}"
    yield name
    redis = Redis.from_url(REDIS_URL)
    keys = [k async for k in redis.scan_iter(f"{name}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def store(namespace: str) -> RedisHealthStore:
    return RedisHealthStore(Redis.from_url(REDIS_URL), POLICY, namespace=namespace)


async def test_a_breaker_opened_by_one_worker_is_seen_by_another(namespace: str) -> None:
    first, second = store(namespace), store(namespace)
    try:
        for _ in range(3):
            await first.record("runware/x", False, 0.2)
        assert (await second.get_many(["runware/x"]))["runware/x"].state == "open"
        await asyncio.sleep(0.35)
        assert (await second.get_many(["runware/x"]))["runware/x"].state == "half_open"
        assert await first.try_probe("runware/x") is True
        assert await second.try_probe("runware/x") is False  # one probe across workers
        await second.record("runware/x", True, 0.1)
        assert (await first.get_many(["runware/x"]))["runware/x"].state == "closed"
        assert set(await first.snapshot()) == {"runware/x"}
    finally:
        await first.close()
        await second.close()


async def test_concurrent_updates_are_not_lost(namespace: str) -> None:
    stores = [store(namespace) for _ in range(4)]
    try:
        await asyncio.gather(*(s.record("fal/y", True, 0.1) for s in stores for _ in range(25)))
        health = (await stores[0].get_many(["fal/y"]))["fal/y"]
        assert health.samples == 100
    finally:
        for s in stores:
            await s.close()
