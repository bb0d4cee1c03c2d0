"""A pooled Redis connection whose transport died under it (a network partition, not a
refused connect), on uvloop as `serve` runs: the next call must be retried on a fresh
connection, not fail with uvloop's RuntimeError (kit/redis_connections.py). The fleet
soak's only 500s were this, on the host that had been cut off the network.

Runs against the real Redis (TEST_REDIS_URL, default 127.0.0.1:6379), each test in a
namespace of its own.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import uvloop
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from image_router.kit.link import Link
from image_router.kit.redis_connections import (
    TcpConnection,
    TlsConnection,
    UnixConnection,
    connection_class,
)
from image_router.limits.rates import Rate, redis_counter
from image_router.resources import redis_client
from tests.conftest import gateway_settings

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def on_uvloop(scenario: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(scenario())


def cut(pool: ConnectionPool) -> int:
    """Close the transport under every idle pooled connection, as a partition leaves it."""
    idle = list(pool._available_connections)
    for connection in idle:
        connection._writer.transport.abort()  # type: ignore[union-attr]
    return len(idle)


def test_uvloop_reports_a_dead_transport_as_runtime_error_without_our_connections() -> None:
    # The behaviour the fix is for; if redis-py or uvloop change it, this says so.
    async def scenario() -> None:
        client = Redis.from_url(
            REDIS_URL, retry=Retry(NoBackoff(), 1), retry_on_error=[RedisConnectionError]
        )
        try:
            await client.ping()
            assert cut(client.connection_pool) == 1
            await asyncio.sleep(0.05)
            with pytest.raises(RuntimeError, match="closed"):
                await client.ping()
        finally:
            await client.aclose()

    on_uvloop(scenario)


def test_a_client_of_ours_retries_on_a_fresh_connection(tmp_path: Path) -> None:
    settings = gateway_settings("sqlite+aiosqlite://", tmp_path, redis_url=REDIS_URL)
    key = f"lost-connection-{os.urandom(4).hex()}"

    async def scenario() -> None:
        client = redis_client(settings)
        try:
            assert client.connection_pool.connection_class is TcpConnection
            assert await client.incr(key) == 1
            assert cut(client.connection_pool) == 1
            await asyncio.sleep(0.05)
            assert await client.incr(key) == 2  # the retry, on a new connection
        finally:
            await client.delete(key)
            await client.aclose()

    on_uvloop(scenario)


def test_the_shared_rate_limiter_keeps_counting_in_redis() -> None:
    namespace = f"lost-connection-{os.urandom(4).hex()}"

    async def scenario() -> None:
        link = Link("Redis")
        counter = redis_counter(REDIS_URL, namespace, link=link)
        assert counter._pool is not None
        rate = Rate(100, 60)
        try:
            first = await counter.hit("general", "client", rate)
            assert first is not None and first.count == 1
            assert cut(counter._pool) >= 1
            await asyncio.sleep(0.05)
            second = await counter.hit("general", "client", rate)
            # Counted in Redis, not refused, and no fallback to this process's memory.
            assert second is not None and second.count == 2
            assert link.up
        finally:
            cleanup = Redis.from_url(REDIS_URL)
            keys = [k async for k in cleanup.scan_iter(f"{namespace}:*")]
            if keys:
                await cleanup.delete(*keys)
            await cleanup.aclose()
            await counter._pool.aclose()

    on_uvloop(scenario)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/0", TcpConnection),
        ("REDIS://h:1", TcpConnection),
        ("rediss://h:6380", TlsConnection),
        ("unix:///run/redis.sock", UnixConnection),
    ],
)
def test_the_connection_class_follows_the_url(url: str, expected: type) -> None:
    assert connection_class(url) is expected
