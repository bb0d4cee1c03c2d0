"""Authenticated API keys remembered for a few seconds, so most requests skip the database.

Keyed by the SHA-256 of the secret (the secret itself is never kept). An entry lives
`AUTH_CACHE_TTL_S` at most, counted from *before* the database read that produced it, and
never past the key's own `expires_at`, which the entry carries. It is dropped at once, in
every process, when anything it depends on changes:

- in this process, `db/changes.py` announces every committed write to keys, to an
  account's status, restriction or preferences, and every credit moved in or out from
  outside a generation (grants, top-ups, refunds, disputes); the cache is cleared;
- other processes on this machine append a byte to `DATA_DIR/key-changes` after such a
  commit; every lookup compares the file's size (one `stat`) and clears on a change;
- other machines: the writer publishes on Redis and waits until every subscribed process
  has cleared its cache and acknowledged (`key_changes.py`); a process whose subscription
  is down serves nothing from its cache.

A read that started before a clear is never stored (the clear bumps `generation`), so a
revoked key cannot be put back by a request that raced the revocation.

What is approximate: the balance a cached caller carries, used only for the account rate
limiter's tier and the free tier's "funded" test, may lag the spending of the last TTL
seconds (a generation's holds and settles do not clear the cache). Money itself is never
decided from it: a hold is one conditional UPDATE of the stored balance. Deposits, grants,
refunds and disputes do clear it, so a top-up lifts the tier at once. `last_used_at` is
still written at most once a minute, by the database read of a cache miss.

On PostgreSQL a miss reads through asyncpg itself (`authenticate_key_hash_pg`: the same
statements, without SQLAlchemy's per-statement cost): with a thousand keys in use at
~800 req/s and a 5 s TTL, about a quarter of the requests miss.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.service import (
    Caller,
    authenticate_key_hash,
    authenticate_key_hash_pg,
)
from image_router.db.driver import driver_of, pg_connection
from image_router.db.session import autocommit
from image_router.kit.clock import utcnow
from image_router.kit.ids import hash_secret

#: Entries kept at most: a flood of distinct keys evicts the oldest, never grows memory.
MAX_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class _Entry:
    caller: Caller
    expires_at: datetime | None  # the key's own expiry
    fresh_until: float  # monotonic seconds


class KeyCache:
    """Callers by key hash; `lookup` before the database, `store` after a read."""

    def __init__(
        self,
        ttl_s: float,
        *,
        signal: Callable[[], Hashable] | None = None,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self._signal = signal
        self._seen = signal() if signal is not None else None
        self._max = max_entries
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._suspended = False
        self.generation = 0  # bumped by every clear; a read started before one is not kept

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0 and not self._suspended

    def lookup(self, key_hash: str, now: datetime) -> Caller | None:
        """The cached caller of this key, if still fresh and unexpired."""
        if not self.enabled:
            return None
        if self._signal is not None:
            seen = self._signal()
            if seen != self._seen:
                self._seen = seen
                self.clear()
                return None
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry.fresh_until <= self._clock() or (
            entry.expires_at is not None and entry.expires_at <= now
        ):
            self._entries.pop(key_hash, None)
            return None
        return entry.caller

    def begin(self) -> tuple[int, float]:
        """Call before the database read: (generation, start) to hand to `store`."""
        return self.generation, self._clock()

    def store(
        self,
        key_hash: str,
        caller: Caller,
        expires_at: datetime | None,
        started: tuple[int, float],
    ) -> None:
        """Remember a caller read from the database, unless a clear happened meanwhile."""
        generation, at = started
        if not self.enabled or generation != self.generation:
            return
        if len(self._entries) >= self._max and key_hash not in self._entries:
            self._entries.pop(next(iter(self._entries)))  # the oldest insertion
        self._entries[key_hash] = _Entry(caller, expires_at, at + self.ttl_s)

    def clear(self) -> None:
        self._entries.clear()
        self.generation += 1

    def suspend(self) -> None:
        """Serve nothing from the cache (its invalidations cannot be heard) until `resume`."""
        self._suspended = True
        self.clear()

    def resume(self) -> None:
        self.clear()  # whatever was missed while deaf is gone with it
        self._suspended = False

    async def on_change(self) -> None:
        """A listener for `db.changes.subscribe` and the cross-process channel."""
        self.clear()

    def __len__(self) -> int:
        return len(self._entries)


async def authenticate(cache: KeyCache, engine: AsyncEngine, secret: str) -> Caller | None:
    """The caller owning an active, unexpired key (`service.authenticate_key`), from the
    cache when it holds the key, else from the database (and then remembered)."""
    key_hash = hash_secret(secret)
    caller = cache.lookup(key_hash, utcnow())
    if caller is not None:
        return caller
    started = cache.begin()
    if driver_of(engine) == "asyncpg":
        async with pg_connection(engine) as pg:
            found = await authenticate_key_hash_pg(pg, key_hash)
    else:
        async with autocommit(engine) as conn:
            found = await authenticate_key_hash(conn, key_hash)
    if found is None:
        return None
    caller, expires_at = found
    cache.store(key_hash, caller, expires_at, started)
    return caller
