"""Fixed-window request counters (spec §6.1) on a `limits` storage, with draft-6 headers.

The storage is `limits`' in-process memory storage for the embedded default, or its Redis
storage shared by every worker. The fixed-window strategy of `limits` is exactly
`storage.incr(key, window) <= max`; calling the storage directly gets the count itself from
that one atomic increment, which `RateLimit-Remaining` needs, instead of a second read.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import limits
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.errors import StorageError
from redis.asyncio import ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from image_router.kit.link import Link
from image_router.kit.redis_connections import connection_class

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rate:
    """At most `amount` requests per fixed window of `window_s` seconds."""

    amount: int
    window_s: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`20/second`, `6000/minute`, `6000 per 60 seconds` (the `limits` notation)."""
        item = limits.parse(text)
        return cls(item.amount, item.get_expiry())


@dataclass(frozen=True)
class AccountScale:
    """A per-account rate that grows with the balance: one more request per window for
    every `step` credits, never below `minimum` nor above `maximum` (spec §6.1:
    images `clamp(floor(USD × 4), 6, 100)` is a step of $0.25; videos
    `clamp(floor(USD / 6), 1, 20)` a step of $6). Integer credits keep it exact."""

    step: int
    minimum: int
    maximum: int
    window_s: int = 1

    def __post_init__(self) -> None:
        if self.step <= 0 or not 0 < self.minimum <= self.maximum:
            raise ValueError("an account rate needs step > 0 and 0 < minimum <= maximum")

    def rate(self, balance: int) -> Rate:
        steps = max(0, balance) // self.step
        return Rate(max(self.minimum, min(self.maximum, steps)), self.window_s)


@dataclass(frozen=True)
class Decision:
    """One counted request: within its rate or not, and what the headers say about it."""

    rate: Rate
    count: int
    reset_s: int

    @property
    def allowed(self) -> bool:
        return self.count <= self.rate.amount

    @property
    def remaining(self) -> int:
        return max(0, self.rate.amount - self.count)

    def headers(self) -> dict[str, str]:
        """`RateLimit-*` of the IETF draft 6 (as express-rate-limit 7 sends them), plus
        `Retry-After` when refused."""
        headers = {
            "RateLimit-Policy": f"{self.rate.amount};w={self.rate.window_s}",
            "RateLimit-Limit": str(self.rate.amount),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_s))
        return headers

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        return [(k.lower().encode(), v.encode()) for k, v in self.headers().items()]


class WindowCounter:
    """Counts requests per (limiter, identity) in fixed windows that start at the first
    request, like express-rate-limit's memory store.

    When the shared storage (Redis) is unreachable, the counts fall back to this process's
    memory (`fallback`, while `link` says Redis is down): refusing every request because
    the limiter's store is down would turn a Redis outage into a full outage, and letting
    every request through would leave none limited. Each process then limits on its own,
    so a client spread over N processes gets up to N times its rate until Redis is back.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        shared: bool,
        pool: ConnectionPool | None = None,
        fallback: Storage | None = None,
        link: Link | None = None,
    ):
        self.storage = storage
        self.shared = shared
        self._pool = pool
        self._fallback = fallback
        self._link = link

    def _current(self) -> Storage:
        if self._fallback is not None and self._link is not None and not self._link.should_try():
            return self._fallback
        return self.storage

    async def _incr(self, key: str, expiry_s: int) -> tuple[int, float]:
        """The count of `key` after this hit and when its window ends, from the shared
        storage when it answers, else from the fallback; StorageError without one."""
        storage = self._current()
        try:
            count = await storage.incr(key, expiry_s)
            reset_at = await storage.get_expiry(key)
        except StorageError as exc:
            if self._fallback is None or self._link is None or storage is self._fallback:
                raise
            self._link.failed(exc)
            storage = self._fallback
            count = await storage.incr(key, expiry_s)
            reset_at = await storage.get_expiry(key)
        else:
            if self._link is not None and storage is self.storage:
                self._link.worked()
        return count, reset_at

    async def hit(self, name: str, identity: str, rate: Rate) -> Decision | None:
        # No amount in the key: an account whose rate changes with its balance keeps
        # its count for the rest of the window.
        key = f"{name}/{rate.window_s}/{identity}"
        try:
            count, reset_at = await self._incr(key, rate.window_s)
        except StorageError as exc:
            log.warning("rate limiter storage unavailable, request not limited: %s", exc)
            return None
        # The key was just counted, so its window is still open: at least 1 s to go, as a
        # ceiling. (Redis reports the expiry in whole seconds, rounded.)
        reset_s = min(rate.window_s, max(1, math.ceil(reset_at - time.time())))
        return Decision(rate, count, reset_s)

    async def first_use(self, key: str, ttl_s: int) -> bool:
        """True the first time `key` is seen within `ttl_s` seconds, False after: one atomic
        increment, so two workers racing on one key cannot both see it first. When the
        storage is unreachable the use counts as the first (and a warning is logged), as
        the rate limits let requests through then."""
        try:
            count, _ = await self._incr(f"once/{key}", max(1, ttl_s))
            return count == 1
        except StorageError as exc:
            log.warning("limiter storage unavailable, single use not enforced: %s", exc)
            return True

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


def memory_counter() -> WindowCounter:
    """In this process only: right for one worker (the embedded default)."""
    return WindowCounter(MemoryStorage(), shared=False)


def redis_counter(
    url: str, namespace: str, *, link: Link | None = None, timeout_s: float = 2.0
) -> WindowCounter:
    """Shared by every worker on every machine; keys under `<namespace>:limits:`. With a
    `link`, counted in this process's memory while Redis is down. Every connection has
    connect and read timeouts, so a dead Redis never holds a request longer."""
    pool = ConnectionPool.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=30,
        # One immediate retry on a fresh connection (a pooled one may have died with a
        # Redis restart); not redis-py's default of three with back-off, which would hold
        # a request for seconds while Redis is down.
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
        connection_class=connection_class(url),
    )
    scheme, _, rest = url.partition("://")
    options: dict[str, Any] = {"connection_pool": pool}
    storage = RedisStorage(
        # `limits` selects its asyncio storage by an `async+` scheme; our pool does the
        # connecting, so only the scheme matters here.
        f"async+{'redis+unix' if scheme == 'unix' else scheme}://{rest}",
        implementation="redispy",
        key_prefix=f"{namespace}:limits",
        wrap_exceptions=True,
        # Passed through to redis.asyncio.Redis, which `limits` types too narrowly.
        **options,
    )
    fallback = MemoryStorage() if link is not None else None
    return WindowCounter(storage, shared=True, pool=pool, fallback=fallback, link=link)
