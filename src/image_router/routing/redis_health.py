"""Route health in Redis, shared by every worker on every machine.

Each route is a hash; an update is read → `health.updated()` → write inside a WATCH/MULTI
transaction, retried if another worker changed the route meanwhile, so the moving averages
and the breaker stay consistent under concurrency without duplicating the logic in Lua.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import WatchError

from image_router.routing.health import HealthPolicy, RouteHealth, State, updated, with_cooldown


class RedisHealthStore:
    def __init__(
        self,
        redis: Redis,
        policy: HealthPolicy | None = None,
        clock: Callable[[], float] = time.time,
        namespace: str = "ir",
    ) -> None:
        self.redis = redis
        self.policy = policy or HealthPolicy()
        self.clock = clock
        self._prefix = f"{namespace}:health:"
        self._routes = f"{namespace}:health-routes"
        self._probe = f"{namespace}:probe:"

    async def get_many(self, keys: Iterable[str]) -> dict[str, RouteHealth]:
        keys = list(keys)
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(self._prefix + key)
            raw = await pipe.execute()
        now = self.clock()
        return {
            k: with_cooldown(_decode(r), self.policy, now) for k, r in zip(keys, raw, strict=True)
        }

    async def record(self, key: str, ok: bool, latency_s: float) -> RouteHealth:
        name = self._prefix + key
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(name)
                    current = with_cooldown(
                        _decode(await pipe.hgetall(name)), self.policy, self.clock()
                    )
                    health = updated(current, ok, latency_s, self.policy, self.clock())
                    pipe.multi()  # type: ignore[no-untyped-call]
                    pipe.hset(name, mapping=_encode(health))
                    pipe.sadd(self._routes, key)
                    pipe.delete(self._probe + key)
                    await pipe.execute()
                    return health
                except WatchError:
                    continue

    async def try_probe(self, key: str) -> bool:
        ttl_ms = max(1, int(self.policy.cooldown_s * 1000))
        return bool(await self.redis.set(self._probe + key, "1", nx=True, px=ttl_ms))

    async def snapshot(self) -> dict[str, RouteHealth]:
        keys = sorted(
            k.decode() if isinstance(k, bytes) else str(k)
            for k in await self.redis.smembers(self._routes)
        )
        return await self.get_many(keys)

    async def close(self) -> None:
        await self.redis.aclose()


def _encode(
    health: RouteHealth,
) -> Mapping[
    str | bytes | bytearray | memoryview[int] | int | float,
    str | bytes | bytearray | memoryview[int] | int | float,
]:
    return {
        "state": health.state,
        "error_rate": repr(health.error_rate),
        "latency_s": "" if health.latency_s is None else repr(health.latency_s),
        "consecutive_failures": health.consecutive_failures,
        "samples": health.samples,
        "opened_at": "" if health.opened_at is None else repr(health.opened_at),
    }


def _decode(raw: dict[Any, Any]) -> RouteHealth:
    if not raw:
        return RouteHealth()
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    state: State = fields.get("state", "closed")  # type: ignore[assignment]
    return RouteHealth(
        state=state,
        error_rate=float(fields.get("error_rate") or 0.0),
        latency_s=float(fields["latency_s"]) if fields.get("latency_s") else None,
        consecutive_failures=int(fields.get("consecutive_failures") or 0),
        samples=int(fields.get("samples") or 0),
        opened_at=float(fields["opened_at"]) if fields.get("opened_at") else None,
    )
