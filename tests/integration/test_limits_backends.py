"""The limiters on both backends: in process, and in the real Redis (127.0.0.1:6379) where
several workers share one count. Each Redis test has its own namespace and removes its keys.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from image_router.errors import Forbidden, RateLimited
from image_router.kit.networks import parse_network
from image_router.limits.bans import BanList
from image_router.limits.client_ip import ClientIpPolicy
from image_router.limits.free_tier import FreeTier
from image_router.limits.guard import (
    ACCESS_DENIED,
    ACCOUNT,
    GENERATION_IP,
    Limits,
    RatePolicy,
    latest_decision,
)
from image_router.limits.rates import (
    AccountScale,
    Rate,
    WindowCounter,
    memory_counter,
    redis_counter,
)

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POLICY = RatePolicy(
    general=Rate(3, 1),
    generation_ip=Rate(2, 60),
    image=AccountScale(2_500, 2, 100),  # $0.25 a step, at least 2 a second
    video=AccountScale(60_000, 1, 20),
)


@pytest.fixture
async def namespace() -> AsyncIterator[str]:
    name = f"test-limits-{os.urandom(6).hex()}"
    yield name
    redis = Redis.from_url(REDIS_URL)
    keys = [k async for k in redis.scan_iter(f"{name}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


CounterFactory = Callable[[], WindowCounter]


@pytest.fixture(params=["memory", "redis"])
async def counters(request: pytest.FixtureRequest, namespace: str) -> AsyncIterator[CounterFactory]:
    """Makes counters as separate workers would: Redis ones share counts, memory is one."""
    made: list[WindowCounter] = []
    shared = memory_counter()

    def make() -> WindowCounter:
        counter = redis_counter(REDIS_URL, namespace) if request.param == "redis" else shared
        made.append(counter)
        return counter

    yield make
    for counter in made:
        await counter.close()


@pytest.fixture
async def limits(counters: CounterFactory) -> AsyncIterator[Limits]:
    engine = create_async_engine("sqlite+aiosqlite://")
    yield Limits(
        rates=POLICY,
        counter=counters(),
        bans=BanList([parse_network("2001:db8:bad::/48")], None),
        free_tier=FreeTier(engine),
        client_ip=ClientIpPolicy(),
    )
    await engine.dispose()


def scope(ip: str) -> dict[str, object]:
    return {"type": "http", "client": (ip, 5000), "headers": []}


async def test_the_general_limiter_counts_every_request_by_ip(limits: Limits) -> None:
    decisions = [await limits.general(scope("203.0.113.1")) for _ in range(4)]
    assert [d.allowed for d in decisions if d] == [True, True, True, False]
    refused = decisions[-1]
    assert refused is not None
    assert refused.headers() == {
        "RateLimit-Policy": "3;w=1",
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "1",
        "Retry-After": "1",
    }
    other = await limits.general(scope("203.0.113.2"))
    assert other is not None and other.allowed


async def test_the_generation_ip_limiter_refuses_with_its_message(limits: Limits) -> None:
    for _ in range(2):
        await limits.guard_generation_ip(scope("198.51.100.4"))
    request = scope("198.51.100.4")
    with pytest.raises(RateLimited) as refused:
        await limits.guard_generation_ip(request)
    assert refused.value.message == GENERATION_IP
    assert refused.value.body()["error"]["type"] == "rate_limit_error"
    headers = refused.value.headers
    assert headers["RateLimit-Policy"] == "2;w=60"
    assert headers["RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert int(headers["RateLimit-Reset"]) == int(headers["Retry-After"])
    decision = latest_decision(request)
    assert decision is not None and not decision.allowed


async def test_banned_networks_are_refused_before_the_ip_limiter(limits: Limits) -> None:
    for _ in range(3):
        with pytest.raises(Forbidden) as refused:
            await limits.guard_generation_ip(scope("2001:db8:bad:1::77"))
        assert refused.value.message == ACCESS_DENIED
        assert refused.value.body()["error"]["type"] == "access_denied"
    # Never counted: the next-door address still has its full allowance.
    await limits.guard_generation_ip(scope("2001:db8:bad1::77"))


async def test_accounts_are_limited_by_balance_images_and_videos_apart(limits: Limits) -> None:
    request = scope("192.0.2.1")
    await limits.guard_account(request, "image", "acct-a", 0)
    await limits.guard_account(request, "image", "acct-a", 0)
    with pytest.raises(RateLimited) as refused:
        await limits.guard_account(request, "image", "acct-a", 0)
    assert refused.value.message == ACCOUNT
    assert refused.value.headers["RateLimit-Policy"] == "2;w=1"
    await limits.guard_account(request, "video", "acct-a", 0)  # its own counter
    with pytest.raises(RateLimited):
        await limits.guard_account(request, "video", "acct-a", 0)
    # $10 of balance: 40 images a second.
    for _ in range(40):
        await limits.guard_account(request, "image", "acct-rich", 100_000)
    with pytest.raises(RateLimited) as rich:
        await limits.guard_account(request, "image", "acct-rich", 100_000)
    assert rich.value.headers["RateLimit-Policy"] == "40;w=1"


async def test_disabled_rates_leave_bans_in_force(counters: CounterFactory) -> None:
    engine = create_async_engine("sqlite+aiosqlite://")
    limits = Limits(
        rates=None,
        counter=counters(),
        bans=BanList([parse_network("192.0.2.0/24")], None),
        free_tier=FreeTier(engine),
        client_ip=ClientIpPolicy(),
    )
    assert await limits.general(scope("198.51.100.1")) is None
    for _ in range(10):
        await limits.guard_generation_ip(scope("198.51.100.1"))
        await limits.guard_account(scope("198.51.100.1"), "video", "acct", 0)
    with pytest.raises(Forbidden):
        await limits.guard_generation_ip(scope("192.0.2.9"))
    await engine.dispose()


async def test_workers_share_one_count_in_redis(namespace: str) -> None:
    workers = [redis_counter(REDIS_URL, namespace) for _ in range(3)]
    try:
        rate = Rate(5, 60)
        decisions = [await workers[i % 3].hit("account-image", "acct", rate) for i in range(6)]
        assert [d.count for d in decisions if d] == [1, 2, 3, 4, 5, 6]
        assert decisions[-1] is not None and not decisions[-1].allowed
        redis = Redis.from_url(REDIS_URL)
        keys = sorted([k.decode() async for k in redis.scan_iter(f"{namespace}:*")])
        ttl = await redis.ttl(keys[0])
        await redis.aclose()
        assert keys == [f"{namespace}:limits:account-image/60/acct"]
        assert 0 < ttl <= 60  # the window expires by itself
    finally:
        for worker in workers:
            await worker.close()


async def test_an_unreachable_redis_lets_requests_through(
    caplog: pytest.LogCaptureFixture,
) -> None:
    counter = redis_counter("redis://127.0.0.1:1/0", "unreachable")
    try:
        with caplog.at_level(logging.WARNING, logger="image_router.limits.rates"):
            assert await counter.hit("general", "203.0.113.1", Rate(1, 1)) is None
        assert "rate limiter storage unavailable" in caplog.text
    finally:
        await counter.close()
