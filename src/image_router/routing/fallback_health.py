"""Route health shared in Redis, kept in this process while Redis is away.

Losing Redis must not fail generations: every call goes to the shared store while the
`Link` says it answers, and to this process's own `MemoryHealthStore` otherwise. Outcomes
are recorded in both, so the local breakers already know this process's recent history
when they take over; once Redis is back the shared state (which the other workers kept
up meanwhile, where they could reach it) is authoritative again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from redis.exceptions import RedisError

from image_router.kit.link import Link
from image_router.routing.health import HealthPolicy, MemoryHealthStore, RouteHealth
from image_router.routing.redis_health import RedisHealthStore

T = TypeVar("T")


class FallbackHealthStore:
    def __init__(self, shared: RedisHealthStore, local: MemoryHealthStore, link: Link) -> None:
        self.shared = shared
        self.local = local
        self.link = link
        self.policy: HealthPolicy = shared.policy

    async def _either(
        self, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        if self.link.should_try():
            try:
                result = await shared()
            except (RedisError, OSError) as exc:
                self.link.failed(exc)
            else:
                self.link.worked()
                return result
        return await local()

    async def get_many(self, keys: Iterable[str]) -> dict[str, RouteHealth]:
        keys = list(keys)
        return await self._either(
            lambda: self.shared.get_many(keys), lambda: self.local.get_many(keys)
        )

    async def record(self, key: str, ok: bool, latency_s: float) -> RouteHealth:
        mine = await self.local.record(key, ok, latency_s)
        return await self._either(
            lambda: self.shared.record(key, ok, latency_s), lambda: _value(mine)
        )

    async def try_probe(self, key: str) -> bool:
        return await self._either(
            lambda: self.shared.try_probe(key), lambda: self.local.try_probe(key)
        )

    async def snapshot(self) -> dict[str, RouteHealth]:
        return await self._either(self.shared.snapshot, self.local.snapshot)

    async def close(self) -> None:
        await self.shared.close()
        await self.local.close()


async def _value(value: T) -> T:
    return value
