"""Stopping vendor jobs nobody will collect: the cancel and in-flight machinery.

A job an adapter polls runs at the vendor, billed to our vendor account. `InFlight` keeps
the stop URL of each job being waited on, so the gateway can cancel it (deadline, client
gone), and stops it itself when the wait ends without a result; `cancel_quietly` is the
best-effort, bounded call that does the stopping.

A durable job (one the gateway recorded, `Job.on_submitted`, or resumes, `Job.vendor_ref`)
is the exception: when only its waiting task is cancelled (the process shutting down) it is
left running, since another process resumes it; the gateway stops it with
`Provider.cancel`, which works from the reference in any process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from image_router.providers.contract import Job
from image_router.providers.errors import UpstreamError

#: How long an abandoned job may spend asking its vendor to stop it.
CANCEL_TIMEOUT_S = 5.0
#: Durable jobs left running whose stop URL an `InFlight` keeps (the oldest go first).
LEFT_RUNNING_KEPT = 1000

log = logging.getLogger(__name__)


#: Vendor cancels still running after their caller was cancelled (the loop keeps only weak
#: references to tasks).
_cancels: set[asyncio.Task[bool]] = set()


async def cancel_quietly(request: Awaitable[object], *, vendor: str) -> bool:
    """Best effort: await `request`, a vendor call that stops a job nobody will collect.

    Shielded, so a second cancellation of the caller (usually already unwinding one) does
    not cut the call short, and bounded by `CANCEL_TIMEOUT_S`. A failure is logged, never
    raised: the job is abandoned either way, and the log keeps it for follow-up. Returns
    whether the vendor accepted the cancel (a `request` answering False had nothing to stop).
    """

    async def attempt() -> bool:
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                outcome = await request
        except TimeoutError:
            log.warning("%s did not confirm a cancel within %ss", vendor, CANCEL_TIMEOUT_S)
        except (UpstreamError, httpx.HTTPError, ValueError) as exc:
            log.warning("%s refused to cancel an abandoned job: %s", vendor, exc)
        else:
            return outcome is not False
        return False

    task = asyncio.ensure_future(attempt())
    _cancels.add(task)
    task.add_done_callback(_cancels.discard)
    return await asyncio.shield(task)


def durable(job: Job) -> bool:
    """Whether the gateway keeps `job`'s vendor job on record, to resume it if need be."""
    return job.vendor_ref is not None or job.on_submitted is not None


@dataclass
class Watch:
    """What `InFlight.running` learns about one vendor job: did we ask it to stop?"""

    abandoned: bool = False


class InFlight:
    """The vendor jobs a provider is waiting on, by the URL that stops each one.

    `running` brackets the wait. While it lasts, `cancel(job)` calls `stop(url)` (the
    gateway abandoning the job: deadline, client gone). When the wait itself ends the job
    for us, the vendor job is stopped here (best effort, `cancel_quietly`), since it would
    otherwise run on, billing our vendor account, for nobody: a request cancelled mid-wait
    (not a durable job's, see `durable`), or polling that failed for good (the error then
    says `vendor_job_cancelled`).
    Afterwards `Watch.abandoned` says whether `cancel` was called for it.
    """

    def __init__(self, stop: Callable[[str], Awaitable[object]], *, vendor: str) -> None:
        self._stop = stop
        self._vendor = vendor
        self._urls: dict[str, str] = {}
        self._abandoned: set[str] = set()
        # Durable jobs whose wait was cancelled, left running: job id → stop URL. The
        # gateway's `cancel` for such a job may come after the wait has unwound (it cancels
        # the waiting task first), and must still reach the vendor.
        self._left: dict[str, str] = {}

    @property
    def urls(self) -> dict[str, str]:
        """Job id → the stop URL of the vendor job running for it."""
        return dict(self._urls)

    def abandoned(self, job: Job) -> bool:
        """Whether `cancel` was called for the job now running for `job`."""
        return bool(job.job_id) and job.job_id in self._abandoned

    @asynccontextmanager
    async def running(
        self, job: Job, url: str, *, gone_when_stopped: bool = False
    ) -> AsyncIterator[Watch]:
        """`gone_when_stopped`: a stopped job vanishes at the vendor, so an error while
        waiting on it after `cancel` means "abandoned", not a vendor failure.

        Only the wait for the job belongs inside: an error raised here is taken to leave
        the job running, so the vendor's own report that the job failed is read after.
        """
        watch = Watch()
        if job.job_id:
            self._urls[job.job_id] = url
            self._left.pop(job.job_id, None)
        try:
            yield watch
        except asyncio.CancelledError:
            if self.abandoned(job):
                pass  # `cancel` stopped it already
            elif durable(job):
                self._leave_running(job, url)
            else:
                await self._give_up(job, url, "the request was cancelled")
            raise
        except UpstreamError as exc:
            if self.abandoned(job):
                if not gone_when_stopped:
                    raise
                watch.abandoned = True
            else:
                exc.vendor_job_cancelled = await self._give_up(job, url, exc.message)
                raise
        finally:
            if job.job_id:
                self._urls.pop(job.job_id, None)
                watch.abandoned = watch.abandoned or job.job_id in self._abandoned
                self._abandoned.discard(job.job_id)

    async def cancel(self, job: Job, elsewhere: str | None = None) -> bool:
        """Stop the vendor job running for `job`, if there is one; True when one was.

        `elsewhere`: the stop URL of `job`'s vendor job when no wait in this process knows
        it (a durable job waited on by another process, or by none): it is called then, and
        True means the vendor did not say the job had ended already (`stop` answering False).
        A durable job whose wait here was cancelled just before is stopped too.
        """
        url = self._urls.get(job.job_id) if job.job_id else None
        if url is None:
            left = self._left.pop(job.job_id, None) if job.job_id else None
            elsewhere = left or elsewhere
            if elsewhere is None:
                return False
            stopped = await self._stop(elsewhere)
            log.info(
                "%s: asked to stop the vendor job of %s from its reference",
                self._vendor,
                job.job_id or "-",
            )
            return stopped is not False
        self._abandoned.add(job.job_id)
        await self._stop(url)
        log.info(
            "%s: cancelled the vendor job of %s at the gateway's request", self._vendor, job.job_id
        )
        return True

    def _leave_running(self, job: Job, url: str) -> None:
        """A durable job's wait was cancelled without `cancel`: the process is stopping,
        and another resumes the job from its reference, so it keeps running."""
        if job.job_id:
            self._left[job.job_id] = url
            while len(self._left) > LEFT_RUNNING_KEPT:
                del self._left[next(iter(self._left))]
        log.info(
            "%s: stopped waiting on the vendor job of %s; left running to be resumed",
            self._vendor,
            job.job_id or "-",
        )

    async def _give_up(self, job: Job, url: str, reason: str) -> bool:
        stopped = await cancel_quietly(self._stop(url), vendor=self._vendor)
        log.warning(
            "%s: gave up on the vendor job of %s (%s); cancel %s",
            self._vendor,
            job.job_id or "-",
            reason,
            "sent" if stopped else "failed",
        )
        return stopped
