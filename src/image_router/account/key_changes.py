"""Telling every process that cached API keys changed (the cache: `key_cache.py`).

Two channels, both used by whoever commits a change (a worker, the CLI):

- `ChangeFile`, for the processes of one machine: `DATA_DIR/key-changes` grows by one byte
  per change, and every cache lookup compares its size with one `stat` (about a
  microsecond). Appending never reuses a size, so no change can be missed, however fast
  they come.
- `RedisChannel`, for other machines (`REDIS_URL`): the writer publishes a token, then
  waits until as many processes as Redis delivered it to have cleared their caches and
  acknowledged (an RPUSH on a list named after the token). A process that does not answer
  within `AUTH_CACHE_TTL_S` cannot hold anything older than the change by then, so the
  wait never needs to be longer. A process whose subscription is down (Redis restarted,
  the network cut) suspends its cache until it has subscribed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.key_cache import KeyCache
from image_router.db import changes

log = logging.getLogger(__name__)

ACK_TTL_S = 60  # an acknowledgement list nobody waits for any more disappears


class ChangeFile:
    """One byte appended per change; (inode, size) is the version every lookup compares."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def version(self) -> Hashable:
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return stat.st_ino, stat.st_size

    async def bump(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, b".")
            finally:
                os.close(fd)
        except OSError:
            log.exception("could not record a key change in %s", self.path)


class RedisChannel:
    """Key changes published on Redis, each acknowledged by every subscribed process."""

    def __init__(self, redis: Redis, namespace: str, wait_s: float) -> None:
        self.redis = redis
        self.channel = f"{namespace}:key-changes"
        self._ack_prefix = f"{namespace}:key-changes:ack:"
        self.wait_s = wait_s

    async def publish(self) -> None:
        """Returns once every process that received the change has cleared its cache (or
        `wait_s` has passed, after which none can hold an entry older than the change)."""
        token = secrets.token_hex(12)
        ack = self._ack_prefix + token
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        try:
            receivers = int(await self.redis.publish(self.channel, token))
            acked = 0
            while acked < receivers:
                left = deadline - loop.time()
                if left <= 0:
                    log.warning(
                        "%d of %d processes did not acknowledge a key change in %.1f s; "
                        "their cached keys have expired by now",
                        receivers - acked,
                        receivers,
                        self.wait_s,
                    )
                    return
                if await self.redis.blpop([ack], timeout=max(left, 0.01)) is not None:
                    acked += 1
            await self.redis.delete(ack)
        except (RedisError, OSError):
            # Nobody can be told: wait until no cache anywhere can still hold the old state.
            log.exception("could not publish a key change on Redis; waiting out the cache TTL")
            await asyncio.sleep(max(0.0, deadline - loop.time()))

    async def listen(self, cache: KeyCache, stop: asyncio.Event) -> None:
        """Clear `cache` on every published change and acknowledge it; the cache is
        suspended while the subscription is down."""
        lost = False  # one warning per outage, not one per reconnection attempt
        while not stop.is_set():
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                cache.resume()
                if lost:
                    log.info("key-change subscription is back; cached keys on again")
                    lost = False
                while not stop.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    cache.clear()
                    data = message["data"]
                    token = data.decode() if isinstance(data, bytes) else str(data)
                    async with self.redis.pipeline(transaction=False) as pipe:
                        pipe.rpush(self._ack_prefix + token, 1)
                        pipe.expire(self._ack_prefix + token, ACK_TTL_S)
                        await pipe.execute()
            except (RedisError, OSError):
                cache.suspend()
                if not lost:
                    log.warning("key-change subscription lost; cached keys off until it is back")
                lost = True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
        cache.suspend()


@dataclass
class KeyChanges:
    """The key cache and the channels that keep it true in every process: `attach` it to
    the engine whose committed changes (`db/changes.py`) it must hear and pass on."""

    cache: KeyCache
    file: ChangeFile | None = None
    redis: RedisChannel | None = None

    _unsubscribe: list[Callable[[], None]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.redis is not None:
            # Deaf until subscribed: `listen` resumes the cache once it hears changes.
            self.cache.suspend()

    def attach(self, engine: AsyncEngine) -> KeyChanges:
        self._unsubscribe.append(changes.subscribe(engine, self.cache.on_change))
        if self.file is not None:
            self._unsubscribe.append(changes.subscribe(engine, self.file.bump))
        if self.redis is not None:
            self._unsubscribe.append(changes.subscribe(engine, self.redis.publish))
        return self

    async def listen(self, stop: asyncio.Event) -> None:
        """Clear the cache on every other process's change (Redis); returns on `stop`."""
        if self.redis is not None and self.cache.ttl_s > 0:
            await self.redis.listen(self.cache, stop)

    async def close(self) -> None:
        for undo in self._unsubscribe:
            undo()
        self._unsubscribe.clear()
        if self.redis is not None:
            await self.redis.redis.aclose()
