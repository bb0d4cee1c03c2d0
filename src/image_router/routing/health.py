"""Route health that learns: moving averages and a circuit breaker per route.

A route is one provider serving one upstream model (`"runware/bfl:2@1"`). After every
attempt the generation service records the outcome: latency and error rate are kept as
exponentially weighted moving averages, and `failure_threshold` consecutive failures open
the route's circuit. An open circuit is skipped until `cooldown_s` has passed; then one
request at a time may probe it (half-open): success closes it, failure opens it again.

Two stores keep this state: in the process (the embedded default) or in Redis, where every
worker on every machine shares it. Neither knows about HTTP, the database or settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, Protocol

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class HealthPolicy:
    failure_threshold: int = 5
    cooldown_s: float = 30.0
    alpha: float = 0.2  # weight of the newest sample in the moving averages
    degraded_error_rate: float = 0.5


@dataclass(frozen=True)
class RouteHealth:
    state: State = "closed"
    error_rate: float = 0.0
    latency_s: float | None = None
    consecutive_failures: int = 0
    samples: int = 0
    opened_at: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state,
            "error_rate": round(self.error_rate, 4),
            "latency_ms": None if self.latency_s is None else round(self.latency_s * 1000),
            "consecutive_failures": self.consecutive_failures,
            "samples": self.samples,
            "opened_at": self.opened_at,
        }


def updated(
    health: RouteHealth, ok: bool, latency_s: float, policy: HealthPolicy, now: float
) -> RouteHealth:
    """The health of a route after one more attempt (pure: both stores use it)."""
    a = policy.alpha
    error_rate = (1 - a) * health.error_rate + a * (0.0 if ok else 1.0)
    if health.samples == 0:
        error_rate = 0.0 if ok else 1.0
    latency = health.latency_s
    if ok:
        latency = latency_s if latency is None else (1 - a) * latency + a * latency_s
        return RouteHealth("closed", error_rate, latency, 0, health.samples + 1, None)
    failures = health.consecutive_failures + 1
    opens = health.state == "half_open" or (
        health.state == "closed" and failures >= policy.failure_threshold
    )
    if opens:
        return RouteHealth("open", error_rate, latency, failures, health.samples + 1, now)
    return replace(
        health, error_rate=error_rate, consecutive_failures=failures, samples=health.samples + 1
    )


class HealthStore(Protocol):
    policy: HealthPolicy

    async def get_many(self, keys: Iterable[str]) -> dict[str, RouteHealth]: ...

    async def record(self, key: str, ok: bool, latency_s: float) -> RouteHealth: ...

    async def try_probe(self, key: str) -> bool:
        """May this request probe an open route whose cooldown has passed? (one at a time)"""
        ...

    async def snapshot(self) -> dict[str, RouteHealth]: ...

    async def close(self) -> None: ...


class MemoryHealthStore:
    """Health kept in this process (one worker, or workers that need not agree)."""

    def __init__(
        self, policy: HealthPolicy | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.policy = policy or HealthPolicy()
        self.clock = clock
        self._routes: dict[str, RouteHealth] = {}
        self._probes: dict[str, float] = {}

    async def get_many(self, keys: Iterable[str]) -> dict[str, RouteHealth]:
        return {k: self._current(k) for k in keys}

    async def record(self, key: str, ok: bool, latency_s: float) -> RouteHealth:
        health = updated(self._current(key), ok, latency_s, self.policy, self.clock())
        self._routes[key] = health
        self._probes.pop(key, None)
        return health

    async def try_probe(self, key: str) -> bool:
        now = self.clock()
        if self._probes.get(key, 0.0) > now:
            return False
        self._probes[key] = now + self.policy.cooldown_s
        return True

    async def snapshot(self) -> dict[str, RouteHealth]:
        return {k: self._current(k) for k in self._routes}

    async def close(self) -> None:
        return None

    def _current(self, key: str) -> RouteHealth:
        return with_cooldown(self._routes.get(key, RouteHealth()), self.policy, self.clock())


def with_cooldown(health: RouteHealth, policy: HealthPolicy, now: float) -> RouteHealth:
    """An open circuit whose cooldown has passed reads as half-open."""
    cooled = health.opened_at is not None and now - health.opened_at >= policy.cooldown_s
    if health.state == "open" and cooled:
        return replace(health, state="half_open")
    return health


def tier(health: RouteHealth, policy: HealthPolicy) -> int:
    """0 healthy, 1 degraded or probing, 2 open (skipped)."""
    if health.state == "open":
        return 2
    if health.state == "half_open" or health.error_rate >= policy.degraded_error_rate:
        return 1
    return 0


def route_key(provider: str, upstream: str) -> str:
    return f"{provider}/{upstream}"


def order_routes(
    keys: list[str],
    health: Mapping[str, RouteHealth],
    prices: Mapping[str, int],
    policy: HealthPolicy,
) -> list[str]:
    """Healthy routes first in catalog order, then degraded ones cheapest first; open
    circuits are left out."""
    index = {k: i for i, k in enumerate(keys)}
    usable = [k for k in keys if tier(health[k], policy) < 2]
    return sorted(
        usable,
        key=lambda k: (
            tier(health[k], policy),
            prices[k] if tier(health[k], policy) else 0,
            index[k],
        ),
    )
