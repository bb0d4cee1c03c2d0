"""Finishing a generation whose process died after its vendor accepted the job.

The job resumer (jobs/resumer.py) finds the generation unfinished, its lease lapsed, and
hands what was kept of it here as `Resumed`: `resume` waits again on the vendor job (no
second submission), stores, settles once and tells, through the same steps as a request
(`Generator.finish`). One the vendor never accepted, or whose route is gone, is released
with `job_interrupted`; one past its deadline is cancelled at the vendor and released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import replace as replaced
from datetime import datetime
from typing import Any

from image_router.errors import GatewayError
from image_router.generation.attempts import CANCEL_TIMEOUT_S, Attempts
from image_router.generation.durability import Tracker
from image_router.generation.events import Finished, tell
from image_router.generation.holds import Hold
from image_router.generation.runs import job_of, run_from_spec
from image_router.generation.service import Generator
from image_router.kit.shielding import shielded
from image_router.observability import metrics
from image_router.providers.contract import Job, Provider, Target
from image_router.usage import service as usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resumed:
    """A generation found unfinished, its process gone: what was kept of it."""

    generation_id: str
    account_id: str
    held: int  # the usage row's `held`
    deadline_at: datetime
    spec: Mapping[str, Any]  # `spec_of` the route the vendor job runs on (runs.py)
    vendor_ref: Mapping[str, Any] | None  # None: the vendor never accepted it


#: The error of a job whose process stopped before the vendor accepted it (docs/jobs.md).
INTERRUPTED = {
    "message": "The gateway process running this job stopped before the vendor accepted "
    "it, and its inputs are not kept, so it cannot be resumed. You were not charged.",
    "type": "upstream_error",
    "code": "job_interrupted",
}

#: The error of a resumed job found past its deadline.
DEADLINE_PASSED = {
    "message": "The generation did not finish in time. You were not charged.",
    "type": "upstream_error",
    "code": "upstream_timeout",
}


async def resume(generator: Generator, resumed: Resumed, tracker: Tracker) -> None:
    """Finish a generation whose process died: wait again on its vendor job (no second
    submission), store, settle once, tell. One the vendor never accepted, or whose
    route is gone, is released with `job_interrupted`; one past its deadline is
    cancelled at the vendor and released. Failures end in the usage row and the
    tracker and are not raised (a cancellation is)."""
    metrics.hold_taken()  # this process closes it: keep the gauge balanced
    hold = Hold(
        generator.engine,
        resumed.account_id,
        resumed.generation_id,
        resumed.held,
        limited_key=None,
    )
    run = (
        run_from_spec(
            resumed.spec,
            generation_id=resumed.generation_id,
            account_id=resumed.account_id,
            deadline_at=resumed.deadline_at,
            catalog=generator.catalog,
            providers=generator.providers,
        )
        if resumed.vendor_ref is not None
        else None
    )
    if run is None:
        try:
            await _fail(generator, resumed, hold, INTERRUPTED, tracker)
        finally:
            tracker.done()
        return
    plan = run.first
    job = replaced(job_of(run), vendor_ref=resumed.vendor_ref)
    if run.deadline_s <= 0:
        try:
            await _cancel_at_vendor(generator.providers[plan.route.provider], job, plan.target)
            await _fail(generator, resumed, hold, DEADLINE_PASSED, tracker)
        finally:
            tracker.done()
        return
    log.info("resuming generation %s at %s", run.generation_id, plan.route.provider)
    # A failure is released, recorded and told by `finish`.
    with contextlib.suppress(GatewayError):
        await generator.finish(run, hold, Attempts(), tracker, time.monotonic(), job)


async def _fail(
    generator: Generator, resumed: Resumed, hold: Hold, error: dict[str, Any], tracker: Tracker
) -> None:
    """Release a resumed generation that cannot finish, and tell its job and webhooks."""
    provider = str(resumed.spec.get("provider") or "") or None
    try:  # recorded first: the job never reads failed without its reason
        await shielded(tracker.failed(error))
    except Exception:
        log.exception("recording the failure of job %s failed", resumed.generation_id)
    released = await shielded(hold.release(usage.Finish(provider=provider, error=error["message"])))
    metrics.hold_finished()
    log.warning(
        "generation %s given up (%s); released %d held credits",
        resumed.generation_id,
        error["code"],
        released,
    )
    request = resumed.spec.get("request") or {}
    if not released:
        return  # closed meanwhile (cancelled, or the reconciler): told there
    await tell(
        generator.events,
        Finished(
            generation_id=resumed.generation_id,
            account_id=resumed.account_id,
            modality=str(request.get("modality") or "image"),
            model=str(request.get("model") or ""),
            cost=0,
            webhook_url=request.get("webhook_url"),
            error=error,
        ),
        ok=False,
    )


async def _cancel_at_vendor(provider: Provider, job: Job, target: Target) -> None:
    """Best effort, bounded: stop a vendor job nobody will wait for any longer."""
    try:
        async with asyncio.timeout(CANCEL_TIMEOUT_S):
            await provider.cancel(job, target)
    except Exception as exc:  # the job is given up either way; the log keeps it
        log.warning("could not cancel the %s job of %s: %s", provider.id, job.job_id, exc)
