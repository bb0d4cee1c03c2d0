"""Checking on a running vendor job: one failed status check does not end the job.

A job we poll is already running at the vendor, and usually billing our vendor account;
a status check that fails on the way (a 5xx or 429 from the vendor's edge, a reset
connection, a read timeout, a proxy's HTML page instead of JSON) says nothing about the
job itself. `poll_once` makes one status check and retries such failures with capped,
jittered exponential back-off; after `PollRetry.max_failures` failures in a row, or at
the first failure that is not transient, it raises and the caller gives up on the job
(and cancels it at the vendor where it can, see `InFlight.running`).

The request's deadline bounds all of this from outside: the gateway cancels the task that
polls when the deadline passes, which interrupts a back-off as well as a check.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from image_router.providers.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
    translate_errors,
)

T = TypeVar("T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollRetry:
    """How failed status checks are retried.

    The n-th retry in a row waits `interval * 2**n` seconds (the interval is the provider's
    poll interval), capped at `cap_s`, times a random factor in [0.5, 1] so that workers
    polling one troubled vendor do not retry in step.
    """

    cap_s: float = 16.0
    #: Failed checks in a row before the job is given up (with a 2 s interval: about
    #: 20 to 45 s of a vendor's status endpoint failing).
    max_failures: int = 5

    def delay(self, failures: int, interval: float) -> float:
        return min(self.cap_s, interval * 2.0**failures) * random.uniform(0.5, 1.0)


DEFAULT_RETRY = PollRetry()


def is_transient(error: UpstreamError) -> bool:
    """Whether a failed status check is worth repeating: 408/429/5xx, transport, garbage.

    Statuses like 404 (the job vanished, e.g. after a cancel), 401/403 (our key) or 402
    (our vendor account is empty) will not change by asking again.
    """
    if isinstance(error, UpstreamProtocolError):
        return True  # one unreadable answer: typically a proxy's error page
    status = error.status
    if isinstance(error, UpstreamRateLimitedError):
        return status == 429
    if isinstance(error, UpstreamUnavailableError):
        return status is None or status == 408 or status >= 500
    return False


async def poll_once(
    check: Callable[[], Awaitable[T]],
    *,
    provider: str,
    interval: float,
    retry: PollRetry = DEFAULT_RETRY,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> T:
    """Run one status `check` (an HTTP call and the parsing of its answer).

    Only the check belongs here, never the reading of the job's state: a job the vendor
    reports as failed is an answer, not a failed check, and must not be retried.
    """
    failures = 0
    while True:
        try:
            async with translate_errors(provider):
                return await check()
        except UpstreamError as exc:
            if not is_transient(exc):
                raise
            failures += 1
            if failures >= retry.max_failures:
                log.warning(
                    "%s: %d status checks in a row failed, giving up on the job: %s",
                    provider,
                    failures,
                    exc.message,
                )
                raise
            delay = retry.delay(failures, interval)
            log.info(
                "%s: a status check failed (%s, HTTP %s), retrying in %.1f s",
                provider,
                exc.kind,
                exc.status,
                delay,
            )
            await sleep(delay)
