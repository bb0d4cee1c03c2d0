"""The state of a link to a shared service that the process can do without (Redis).

Rate limits and route health live in Redis so that every worker agrees; when Redis is away
each process falls back to its own state instead of failing requests. `Link` is what
decides, per call, whether to try Redis at all: while it is down only one call every
`retry_s` tries it again, so requests do not each wait a connect timeout on a dead address.
It logs one WARNING when the link goes down and one INFO when it is back, and tells
`on_change` (the `image_router_redis_up` gauge) about each change.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Link:
    def __init__(
        self,
        name: str,
        *,
        retry_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.retry_s = retry_s
        self.clock = clock
        self.up = True
        self.on_change: list[Callable[[bool], None]] = []
        self._next_try = 0.0

    def should_try(self) -> bool:
        """Whether this call should use the shared service (else: the local fallback)."""
        if self.up:
            return True
        now = self.clock()
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_s  # this caller probes; the others fall back
        return True

    def failed(self, exc: BaseException) -> None:
        """A call to the service failed (connection refused, timed out, reset)."""
        self._next_try = self.clock() + self.retry_s
        if not self.up:
            return
        self.up = False
        log.warning(
            "%s is unavailable (%s: %s): falling back to per-process state "
            "(rate limits and route health are no longer shared) until it is back",
            self.name,
            type(exc).__name__,
            exc,
        )
        self._tell(False)

    def worked(self) -> None:
        """A call to the service succeeded."""
        if self.up:
            return
        self.up = True
        log.info("%s is back: rate limits and route health are shared again", self.name)
        self._tell(True)

    def _tell(self, up: bool) -> None:
        for listener in self.on_change:
            try:
                listener(up)
            except Exception:
                log.exception("a %s state listener failed", self.name)
