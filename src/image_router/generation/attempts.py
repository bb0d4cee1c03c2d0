"""Trying routes: health-ordered failover with per-attempt timeouts and back-off.

Each route of a model is tried at most once per request, healthiest first (catalog order
among healthy routes, cheapest first among degraded ones; open circuits are skipped); a
dearer fallback only when the account can pay for it (the hold is extended first). An
error another route may fix moves on to the next route at once — or, when a vendor said
"slow down" (429) and the next route is the same vendor, after a short jittered back-off —
and an error about the user's input stops at once. The one exception to "at most once":
when the last route left said "busy, try again", it is retried once. Every
outcome feeds the route's health unless the account opted out of routing improvement.
An attempt that is abandoned (deadline, client gone) asks the vendor to cancel its job.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import partial
from typing import Any

from image_router.catalog.spec import Route
from image_router.errors import GenerationUnavailable
from image_router.kit.money import usd_to_credits
from image_router.observability import metrics
from image_router.providers.contract import Job, Provider, Result, Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    log_operator_fault,
)
from image_router.routing.health import HealthStore, order_routes, route_key
from image_router.routing.preferences import NO_PREFERENCES, Candidate, Preferences, steer

log = logging.getLogger(__name__)

CANCEL_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Plan:
    """A route that can serve the request, with the options resolved for it."""

    route: Route
    target: Target
    quote_usd: Decimal

    @property
    def key(self) -> str:
        return route_key(self.route.provider, self.route.upstream)


PROMPT_PLACEHOLDER = "[prompt]"


@dataclass
class Attempts:
    """What was tried for one request, for the usage log.

    Vendors often quote the prompt in their refusals; the usage log and the application
    log must not keep it that way (prompts are stored only sealed, and only by choice), so
    every recorded message and body has the prompt replaced by a placeholder.
    """

    prompt: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    last_error: UpstreamError | None = None
    routing: dict[str, Any] | None = None  # how preferences ordered the routes, if they did

    def steered(self, note: dict[str, Any]) -> None:
        """Open the record with how the client's or the catalog's preferences ordered the
        routes (kind "routing"); `served` completes it."""
        self.routing = note
        self.records.insert(0, note)

    def served(self, plan: Plan, first: Plan) -> None:
        if self.routing is None:
            return
        self.routing["served"] = plan.key
        if plan.key != first.key:
            self.routing["reason"] = "fallback: the routes before it failed or were skipped"

    def add(self, plan: Plan, error: UpstreamError) -> None:
        record = {**error.record(), "upstream": plan.target.upstream}
        record["message"] = self.scrub(record["message"])
        if isinstance(record["body"], str):
            record["body"] = self.scrub(record["body"])
        elif record["body"] is not None and self.prompt and self.prompt in repr(record["body"]):
            record["body"] = PROMPT_PLACEHOLDER  # a structure quoting the prompt: drop it
        self.records.append(record)
        self.last_error = error

    def skip(self, plan: Plan, reason: str) -> None:
        """Record a route that was not tried, and why (it is not an error of the vendor)."""
        self.records.append(
            {
                "provider": plan.route.provider,
                "upstream": plan.target.upstream,
                "kind": "skipped",
                "status": None,
                "message": reason,
                "body": None,
            }
        )

    def scrub(self, text: str) -> str:
        """`text` without the prompt (vendors quote it in refusals)."""
        prompt = self.prompt.strip()
        if len(prompt) < 4 or prompt not in text:  # a word or two matches by chance
            return text
        return text.replace(prompt, PROMPT_PLACEHOLDER)


@dataclass(frozen=True)
class RoutingPolicy:
    attempt_timeout_s: float
    backoff_s: float = 0.2
    backoff_max_s: float = 2.0


async def usable_plans(
    plans: list[Plan], health: HealthStore, preferences: Preferences = NO_PREFERENCES
) -> list[Plan]:
    """The plans worth trying, best first; an open circuit gets one probe at a time.

    Health orders them, then the client's `order` and `sort` (routing/preferences.py);
    without fallbacks only the first is kept, even when it cannot be probed now.
    """
    by_key = {p.key: p for p in plans}
    states = await health.get_many(by_key)
    prices = {k: usd_to_credits(p.quote_usd) for k, p in by_key.items()}
    candidates = [
        Candidate(key, by_key[key].route.provider, prices[key], states[key])
        for key in order_routes(list(by_key), states, prices, health.policy)
    ]
    ordered = []
    for candidate in steer(candidates, preferences):
        if states[candidate.key].state == "half_open" and not await health.try_probe(candidate.key):
            continue
        ordered.append(by_key[candidate.key])
    return ordered


#: Makes sure a route's quote (credits) is held before it is tried: None when it is,
#: else why it cannot be (the route is then skipped). `generation.holds.Hold.cover`.
Cover = Callable[[int], Awaitable[str | None]]

#: A retry of a busy vendor is worth making only with at least this much deadline left.
MIN_RETRY_BUDGET_S = 1.0


#: Persists the reference a resumable vendor gave for its accepted job (`jobs/`).
Submitted = Callable[[Plan, Mapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Durable:
    """How the attempts keep a vendor job alive beyond this process (generation/durability):
    `submitted` persists a resumable vendor's reference; `suspended()` True when a
    cancellation means "this process stops, the job is resumed elsewhere", so the vendor
    job must be left running rather than cancelled."""

    submitted: Submitted
    suspended: Callable[[], bool]


async def call_routes(
    providers: Mapping[str, Provider],
    plans: list[Plan],
    job: Job,
    cover: Cover,
    attempts: Attempts,
    *,
    health: HealthStore,
    policy: RoutingPolicy,
    learn: bool,
    deadline: float,
    durable: Durable | None = None,
) -> tuple[Plan, Result]:
    """Try the plans in order until one succeeds; raise the last error otherwise.

    Before each attempt `cover` makes sure the route's quote is held (a dearer fallback
    extends the hold); a route the account cannot pay for is skipped, and the attempts
    record says why. When every route has been tried and the last one said "busy, try
    again" (429), that route is tried once more after its `Retry-After` (or a short
    back-off) if the deadline allows.
    """
    tried = 0
    last_plan: Plan | None = None
    for plan in plans:
        refusal = await cover(usd_to_credits(plan.quote_usd))
        if refusal is not None:
            attempts.skip(plan, refusal)
            log.info("route %s skipped: %s", plan.key, refusal)
            continue
        last = attempts.last_error
        if (
            last is not None
            and last.kind == "rate_limited"
            and last.provider == plan.route.provider
        ):
            # The vendor asked us to slow down and the next route is the same vendor.
            await _back_off(tried, policy, deadline)
        tried += 1
        result = await _try(
            providers, plan, job, attempts, health, policy, learn, deadline, durable
        )
        if result is not None:
            return plan, result
        last_plan = plan
    last = attempts.last_error
    if last is not None and last.busy and last_plan is not None:
        # No other route is left: the reference retries a busy vendor once, and so do we.
        delay = _busy_delay(last, tried, policy, deadline)
        if delay is not None:
            await asyncio.sleep(delay)
            result = await _try(
                providers, last_plan, job, attempts, health, policy, learn, deadline, durable
            )
            if result is not None:
                return last_plan, result
    if attempts.last_error is not None:
        raise attempts.last_error
    raise GenerationUnavailable("No route could take this request; try again shortly.")


async def _try(
    providers: Mapping[str, Provider],
    plan: Plan,
    job: Job,
    attempts: Attempts,
    health: HealthStore,
    policy: RoutingPolicy,
    learn: bool,
    deadline: float,
    durable: Durable | None = None,
) -> Result | None:
    """One attempt: its result, or None (recorded) when another attempt may succeed; an
    error another route would not fix is raised."""
    provider: Provider = providers[plan.route.provider]
    started = time.monotonic()
    suspended = None
    if durable is not None and provider.resumable:
        # The adapter reports the vendor's job reference once accepted; it is persisted
        # (with this route) before the adapter waits on it.
        if job.vendor_ref is None:
            job = replace(job, on_submitted=partial(durable.submitted, plan))
        suspended = durable.suspended
    try:
        result = await _attempt(provider, job, plan.target, policy, deadline, suspended)
    except UpstreamError as exc:
        attempts.add(plan, exc)
        await _learn(health, plan, exc.kind, time.monotonic() - started, learn)
        log.info("route %s failed: %s (%s)", plan.key, exc.kind, attempts.scrub(exc.message))
        log_operator_fault(provider.id, provider.public_base_url(), exc)
        if not exc.retry_elsewhere:
            raise
        return None
    if not result.artifacts:
        error = UpstreamProtocolError("the vendor returned no output", provider=plan.route.provider)
        attempts.add(plan, error)
        await _learn(health, plan, error.kind, time.monotonic() - started, learn)
        return None
    await _learn(health, plan, "success", time.monotonic() - started, learn)
    return result


def _busy_delay(
    error: UpstreamError, tried: int, policy: RoutingPolicy, deadline: float
) -> float | None:
    """How long to wait before asking a busy vendor again; None when the deadline does not
    leave room for the wait and an attempt after it."""
    if error.retry_after_s is not None:
        delay = error.retry_after_s
    else:
        delay = min(policy.backoff_max_s, policy.backoff_s * 2 ** max(0, tried - 1))
        delay *= random.uniform(0.5, 1.0)
    if time.monotonic() + delay + MIN_RETRY_BUDGET_S > deadline:
        return None
    return delay


async def _attempt(
    provider: Provider,
    job: Job,
    target: Target,
    policy: RoutingPolicy,
    deadline: float,
    suspended: Callable[[], bool] | None = None,
) -> Result:
    budget = min(policy.attempt_timeout_s, deadline - time.monotonic())
    if budget <= 0:
        raise UpstreamTimeoutError("the request's deadline passed", provider=provider.id)
    if not provider.stops_jobs:
        # Nothing to stop at the vendor when the call is abandoned: it runs in the request's
        # own task, which saves a task and four trips through the event loop's queue.
        try:
            async with asyncio.timeout(budget):
                return await provider.generate(job, target)
        except TimeoutError:
            raise _timed_out(provider, budget, cancelled=False) from None
    # A vendor job that can be stopped runs in a task of its own, shielded: abandoned, it
    # is asked to stop (`_abandon`) before its wait is cut off, so the cancel reaches the
    # vendor under the right reason.
    task = asyncio.ensure_future(provider.generate(job, target))
    try:
        return await asyncio.wait_for(asyncio.shield(task), timeout=budget)
    except TimeoutError:
        cancelled = await _abandon(provider, job, target, task, "deadline")
        raise _timed_out(provider, budget, cancelled=cancelled) from None
    except asyncio.CancelledError:
        if suspended is not None and suspended():
            # This process is stopping and the vendor job is persisted: another process
            # resumes it, so it keeps running at the vendor.
            task.cancel()
            raise
        await _abandon(provider, job, target, task, "cancelled")
        raise
    except UpstreamError as exc:
        if exc.vendor_job_cancelled:  # the provider gave up polling and stopped the job
            _cancelled_at_vendor(provider, job, "poll_failed")
        raise


def _timed_out(provider: Provider, budget: float, *, cancelled: bool) -> UpstreamTimeoutError:
    error = UpstreamTimeoutError(
        f"{provider.id} did not answer within {budget:.0f} s", provider=provider.id
    )
    error.vendor_job_cancelled = cancelled
    return error


async def _abandon(
    provider: Provider, job: Job, target: Target, task: asyncio.Future[Result], reason: str
) -> bool:
    """Stop waiting for a vendor job and ask the vendor to cancel it, best effort.

    Returns whether a running vendor job was asked to stop.
    """
    task.cancel()
    try:
        cancelled = await asyncio.shield(
            asyncio.wait_for(provider.cancel(job, target), CANCEL_TIMEOUT_S)
        )
    except (UpstreamError, TimeoutError, asyncio.CancelledError) as exc:
        log.warning("could not cancel the %s job %s: %s", provider.id, job.job_id, exc)
        return False
    except Exception:
        log.exception("cancelling the %s job %s failed", provider.id, job.job_id)
        return False
    if cancelled:
        _cancelled_at_vendor(provider, job, reason)
    return cancelled


def _cancelled_at_vendor(provider: Provider, job: Job, reason: str) -> None:
    log.info(
        "cancelled the abandoned %s job %s at the vendor (%s)", provider.id, job.job_id, reason
    )
    metrics.count_vendor_cancel(provider.id, reason)


async def _back_off(tried: int, policy: RoutingPolicy, deadline: float) -> None:
    delay = min(policy.backoff_max_s, policy.backoff_s * 2 ** (tried - 1))
    delay *= random.uniform(0.5, 1.0)  # jitter: workers failing together do not retry in step
    delay = min(delay, max(0.0, deadline - time.monotonic() - 0.5))
    if delay > 0:
        await asyncio.sleep(delay)


async def _learn(
    health: HealthStore, plan: Plan, outcome: str, seconds: float, learn: bool
) -> None:
    metrics.observe_attempt(plan.route.provider, plan.target.upstream, outcome, seconds)
    # A refused input says nothing about the route's health; a cancelled job neither.
    if not learn or outcome in ("rejected", "cancelled"):
        return
    try:
        state = await health.record(plan.key, outcome == "success", seconds)
    except Exception:
        log.exception("could not record the health of %s", plan.key)
        return
    metrics.set_circuit(plan.key, state.state)
