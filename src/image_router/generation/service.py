"""The generation use case: plan → hold → call the routes → store → settle → answer.

Transactions are short and never span the upstream call: the hold commits before the
vendor is called, and the settle (or the release) is a second transaction. A crash in
between leaves a `processing` row whose hold the reconciler gives back after its deadline.
A client that hangs up before the hold is taken cancels the request; every transaction
still runs to its end (`shielded`), and what was held goes back. Once the credit is held
the API no longer cancels on a hang-up (docs/jobs.md): the generation finishes and is kept.

`accept` (plan and hold) and `complete` (vendor, store, settle, events) are the two
halves of `generate`, so an async request (`jobs/`) is answered 202 between them.
`durability` (`generation/durability.py`) keeps a resumable vendor job on record, and
`generation/resumption.py` waits again on one that a process which died had submitted,
through `finish`: the steps from the vendor call on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.personal_data import Vault
from image_router.account.service import Caller
from image_router.account.spend_limits import KeySpendLimitExceeded
from image_router.catalog.pricing import PriceFacts, PriceOutcome, PricingError, settle
from image_router.catalog.spec import Catalog
from image_router.db.outage import is_outage
from image_router.errors import (
    GatewayError,
    GenerationUnavailable,
    InsufficientCredits,
    InvalidRequest,
    ShuttingDown,
)
from image_router.generation.attempts import Attempts, Durable, Plan, call_routes, usable_plans
from image_router.generation.durability import (
    NO_DURABILITY,
    Durability,
    JobCancelled,
    JobContinues,
    Tracker,
)
from image_router.generation.events import NO_EVENTS, Finished, GenerationEvents, tell
from image_router.generation.failures import (
    client_error,
    database_unavailable,
    describe,
    event_error,
    outcome,
)
from image_router.generation.holds import Hold
from image_router.generation.outputs import StoredOutput, store_outputs
from image_router.generation.planning import plan_routes, price_facts, routing_note
from image_router.generation.policy import GenerationPolicy
from image_router.generation.runs import Run, job_of, spec_of
from image_router.generation.validation import GenerationRequest
from image_router.kit.clock import utcnow
from image_router.kit.drain import Drain
from image_router.kit.ids import new_id
from image_router.kit.money import usd_number, usd_to_credits
from image_router.kit.shielding import shielded
from image_router.observability import metrics
from image_router.providers.contract import Job, Provider, Result
from image_router.providers.output_fetch import OutputFetcher
from image_router.routing.health import HealthStore
from image_router.storage.base import Store
from image_router.usage import service as usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    """A generation whose credit is held and whose usage row is open: `complete` runs it."""

    run: Run
    hold: Hold
    received: float  # time.monotonic() when it was planned

    @property
    def generation_id(self) -> str:
        return self.run.generation_id

    @property
    def deadline_s(self) -> float:
        return self.run.deadline_s

    def spec(self) -> dict[str, Any]:
        """What a resumer needs to finish it (its first route; see `runs.spec_of`)."""
        return spec_of(self.run, self.run.first)


@dataclass(frozen=True)
class _Served:
    """What the route that served the request made, and what it costs."""

    plan: Plan
    result: Result
    latency_ms: int
    outputs: list[StoredOutput]
    cost: int
    outputs_expire_at: datetime | None  # when the stored outputs are purged (none: None)


@dataclass(frozen=True)
class Generator:
    """Runs generations; built once by the composition root with exactly what it needs."""

    engine: AsyncEngine
    catalog: Catalog
    providers: Mapping[str, Provider]
    health: HealthStore
    store: Store
    outputs: OutputFetcher  # downloads vendor output URLs (address-checked)
    vault: Vault  # seals the prompts that are stored
    policy: GenerationPolicy
    events: GenerationEvents = NO_EVENTS  # told when a generation ends (the webhooks)
    durability: Durability = NO_DURABILITY  # keeps vendor jobs beyond a request (jobs/)
    # The process's graceful stop: a generation still running when the drain time is up
    # is cancelled through it, gives its hold back and answers 503 `server_shutting_down`.
    drain: Drain = field(default_factory=Drain)

    async def generate(
        self,
        caller: Caller,
        request: GenerationRequest,
        *,
        client_ip: str | None,
        store_prompt: bool = True,
        generation_id: str | None = None,
    ) -> dict[str, Any]:
        """Run one generation and return the response body. Raises `GatewayError`s only.

        `generation_id` names its usage row (the API sends it as `X-Generation-Id`); by
        default a new id.

        `store_prompt=False` (the X-Store-Prompt header) keeps this request's prompt out of
        the usage log; it can only narrow what the account's `store_prompts` allows.
        """
        with self.drain.track():
            try:
                accepted = await self.accept(
                    caller,
                    request,
                    client_ip=client_ip,
                    store_prompt=store_prompt,
                    generation_id=generation_id,
                )
                return await self.complete(accepted)
            except asyncio.CancelledError:
                if not self.drain.was_cut():
                    raise
                # Our own cancellation (the drain's), already cleaned up after (the hold
                # given back): the client gets an honest answer instead of a dropped line.
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                raise ShuttingDown(
                    "The server stopped before the generation finished. You were not "
                    "charged; send the request again.",
                    headers={"Retry-After": "1"},
                ) from None
            except GatewayError:
                raise
            except Exception as exc:
                # The hold or the settle could not reach the database: 503, not 500. A hold
                # that was taken and not settled stays `processing` for the reconciler.
                if is_outage(exc):
                    raise database_unavailable(exc) from exc
                raise

    async def accept(
        self,
        caller: Caller,
        request: GenerationRequest,
        *,
        client_ip: str | None,
        store_prompt: bool = True,
        generation_id: str | None = None,
    ) -> Accepted:
        """Plan the request and hold its credit: every refusal (400, 402, 503 …) happens
        here, before any vendor is called."""
        if request.webhook_url is not None:  # refused (400) before anything is held
            await self.events.check_url(request.webhook_url)
        run = await self._plan(caller, request, generation_id or new_id())
        received = time.monotonic()
        hold = await self._hold(run, client_ip=client_ip, store_prompt=store_prompt)
        return Accepted(run, hold, received)

    async def _plan(self, caller: Caller, request: GenerationRequest, generation_id: str) -> Run:
        """The routes worth trying, best first; 503 when every one is failing right now."""
        spec = self.catalog.get(request.model)
        if spec is None:  # validation guarantees a model; keep the type checker honest
            raise InvalidRequest(f"model '{request.model}' is not available", param="model")
        facts = price_facts(request)
        plans = await usable_plans(
            plan_routes(self.providers, spec, request, facts), self.health, request.preferences
        )
        if not plans:
            cooldown_s = self.health.policy.cooldown_s
            raise GenerationUnavailable(
                f"Every route of '{spec.id}' is failing right now; try again in "
                f"{cooldown_s:.0f} seconds. You were not charged.",
                code="circuit_open",
                headers={"Retry-After": str(int(cooldown_s))},
            )
        deadline_s = self.policy.deadline_s(request.modality)
        return Run(caller, request, facts, plans, generation_id, deadline_s)

    async def _hold(self, run: Run, *, client_ip: str | None, store_prompt: bool) -> Hold:
        """Hold the first route's quote and open the usage row; 402 when the balance cannot
        cover it, the key's refusal when its spend limit leaves no room."""
        caller, request = run.caller, run.request
        keep_prompt = (
            store_prompt
            and caller.store_prompts
            and self.policy.retention_prompts_days > 0
            and bool(request.prompt)
        )
        amount = usd_to_credits(run.first.quote_usd)
        try:
            hold = await Hold.take(
                self.engine,
                caller.account_id,
                run.generation_id,
                amount,
                limited_key=caller.api_key_id if caller.spend_limit is not None else None,
                opening=partial(self._opening, run, client_ip=client_ip, keep_prompt=keep_prompt),
                # The balance read at authentication: hold and open the row in one round trip.
                likely_covered=caller.balance >= amount,
                # A client that disconnects cancels this task: the transaction still runs to
                # its end, and what it took is given back before the cancellation goes on.
                after_cancel=partial(self._give_back_taken, run),
            )
        except KeySpendLimitExceeded:
            metrics.count_generation(request.model, request.modality, "key_spend_limit")
            raise
        if hold is None:
            metrics.count_generation(request.model, request.modality, "insufficient_credits")
            raise InsufficientCredits(
                f"Insufficient credits (this model needs minimum "
                f"${_js_number(run.first.quote_usd)} credits), please topup your ImageRouter "
                f"account: {self.policy.pricing_url}"
            )
        metrics.hold_taken()
        return hold

    async def _opening(
        self, run: Run, *, client_ip: str | None, keep_prompt: bool
    ) -> usage.NewGeneration:
        """The usage row of a request whose credit is held (its prompt sealed if kept)."""
        caller, request = run.caller, run.request
        now = utcnow()
        # The webhook outbox's mark, written by the hold's own statement: no round trip
        # of its own, and none at all for an account known to have no endpoint.
        evented = self.events.expects(caller.account_id, request.webhook_url)
        return usage.NewGeneration(
            id=run.generation_id,
            account_id=caller.account_id,
            api_key_id=caller.api_key_id,
            via_web_token=caller.via_web_token,
            modality=request.modality,
            model=request.model,
            provider=run.first.route.provider,
            prompt_enc=await self.vault.seal(caller.account_id, request.prompt)
            if keep_prompt
            else None,
            content_expires_at=now + timedelta(days=self.policy.retention_prompts_days)
            if keep_prompt
            else None,
            size=request.size,
            quality=request.quality,
            seconds=None if request.seconds is None else _js_number(Decimal(request.seconds)),
            input_types=request.input_types,
            held=usd_to_credits(run.first.quote_usd),
            ip=client_ip,
            deadline_at=now + timedelta(seconds=run.deadline_s),
            events_pending=True if evented else None,
            webhook_url=request.webhook_url if evented else None,
        )

    async def complete(self, accepted: Accepted, tracker: Tracker | None = None) -> dict[str, Any]:
        """Call the vendor, store, settle, tell; the answer, or the `GatewayError`.

        `tracker` (default: `durability`'s, an in-memory registration) is told what a job
        needs to know (generation/durability.py)."""
        run = accepted.run
        if tracker is None:
            tracker = self.durability.track(
                run.generation_id,
                run.caller.account_id,
                modality=run.request.modality,
                model=run.request.model,
                deadline_s=run.deadline_s,
            )
        attempts = Attempts(prompt=run.request.prompt or "")
        note = routing_note(run.request, run.plans)
        if note is not None:
            attempts.steered(note)
        return await self.finish(run, accepted.hold, attempts, tracker, accepted.received)

    async def finish(
        self,
        run: Run,
        hold: Hold,
        attempts: Attempts,
        tracker: Tracker,
        received: float,
        job: Job | None = None,
    ) -> dict[str, Any]:
        """From the vendor call on, for a run whose credit is held: serve, keep the job's
        answer, settle, tell; or give the hold back and raise. `job`: the vendor job to
        wait on again (a resumed generation, generation/resumption.py)."""
        request = run.request
        try:
            try:
                served = await self._serve(run, hold, attempts, tracker, job)
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError) and tracker.suspended():
                    # This process is stopping and the vendor job is on record: the hold
                    # stays, and the process that resumes the job settles it.
                    log.info("generation %s left to be resumed elsewhere", run.generation_id)
                    metrics.hold_finished()
                    if self.drain.was_cut():
                        # Its client (if any) is told where the result will be, not
                        # "send it again", which would pay for it twice.
                        task = asyncio.current_task()
                        if task is not None:
                            task.uncancel()
                        raise JobContinues(
                            f"The server is restarting. This generation was accepted by the "
                            f"vendor and continues as job {run.generation_id}: fetch it at "
                            f"GET /v1/jobs/{run.generation_id} (charged only if it "
                            f"succeeds). Do not send the request again.",
                            headers={
                                "x-should-retry": "false",
                                "X-Generation-Id": run.generation_id,
                            },
                        ) from None
                    raise
                # Whatever happened (vendor failure, deadline, cancel, a bug), the hold
                # goes back; a job records why first, so it never reads failed without it.
                error = await self._job_failed(run, exc, tracker, attempts)
                await self._give_back(run, hold, attempts, exc)
                if error is not None:
                    await tell(self.events, _finished(run, 0, error=error), ok=False)
                if isinstance(exc, asyncio.CancelledError) and tracker.cancelled():
                    # Cancelled through the job API, not by a client gone: say so (409).
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    raise JobCancelled(
                        "This generation was cancelled (POST /v1/jobs/{id}/cancel). "
                        "You were not charged."
                    ) from None
                if isinstance(
                    exc, asyncio.CancelledError | GatewayError | KeyboardInterrupt | SystemExit
                ):
                    raise
                raise client_error(exc) from exc
            answer = _answer(served, served.cost)
            try:
                # Before the settle: once the usage row says success, the job's answer is
                # there. Not kept, the job still lists the stored outputs' URLs.
                keeping = tracker.keep(answer, served.outputs_expire_at)
                if keeping is not None:
                    await shielded(keeping)
            except Exception:
                log.exception("keeping the answer of job %s failed", run.generation_id)
            cost = await self._settle(run, hold, attempts, served)
        finally:
            tracker.done()
        metrics.hold_finished()
        metrics.count_generation(request.model, request.modality, "success")
        metrics.observe_gateway_overhead(
            max(0.0, time.monotonic() - received - served.latency_ms / 1000)
        )
        await tell(self.events, _finished(run, cost, served=served), ok=True)
        return _answer(served, cost)

    async def _serve(
        self, run: Run, hold: Hold, attempts: Attempts, tracker: Tracker, job: Job | None
    ) -> _Served:
        """Call the routes until one serves the request within its deadline, store what it
        made and price it. `job`: the vendor job to wait on again (a resumed generation)."""
        request = run.request
        started = time.monotonic()
        durable = (
            Durable(partial(_submitted, run, tracker), tracker.suspended)
            if tracker.durable
            else None
        )
        # A timeout scope, not `wait_for`: the routes run in this task, where `wait_for`
        # would spend a task and a future of its own on every request.
        async with asyncio.timeout(run.deadline_s):
            plan, result = await call_routes(
                self.providers,
                run.plans,
                job_of(run) if job is None else job,
                hold.cover,
                attempts,
                health=self.health,
                policy=self.policy.routing(run.deadline_s),
                learn=run.caller.allow_routing_improvement,
                deadline=started + run.deadline_s,
                durable=durable,
            )
        latency_ms = int((time.monotonic() - started) * 1000)
        attempts.served(plan, run.first)
        outputs = await store_outputs(
            self.store,
            self.outputs,
            result,
            vendor_base_url=self.providers[plan.route.provider].base_url,
            generation_id=run.generation_id,
            response_format=request.response_format,
            output_format=request.output_format if request.modality == "image" else None,
            modality=request.modality,
        )
        return _Served(
            plan,
            result,
            latency_ms,
            outputs,
            _charge(plan, run.facts, result),
            _outputs_expire_at(self.policy, outputs),
        )

    async def _settle(self, run: Run, hold: Hold, attempts: Attempts, served: _Served) -> int:
        """Charge what the served route cost and give the rest back; returns the charge."""
        outputs = served.outputs
        finish = usage.Finish(
            provider=served.plan.route.provider,
            cost=served.cost,
            latency_ms=served.latency_ms,
            output_urls=[o.url for o in outputs if o.url],
            attempts=attempts.records,
            output_keys=[o.name for o in outputs if o.name],
            outputs_expire_at=served.outputs_expire_at,
        )
        return await hold.settle(served.cost, finish)  # shielded: see `Hold.settle`

    async def release_accepted(self, accepted: Accepted, exc: BaseException) -> None:
        """Give back the hold of an accepted generation that will not run (an async job
        whose record could not be written): released, not told here; its usage row, marked
        for events when it was opened, is told by the events' sweeper (docs/webhooks.md)."""
        await self._give_back(accepted.run, accepted.hold, Attempts(), exc)

    async def _give_back(
        self, run: Run, hold: Hold, attempts: Attempts, exc: BaseException
    ) -> None:
        """Release the hold of a generation that failed (or was abandoned), and count it."""
        cut = isinstance(exc, asyncio.CancelledError) and self.drain.was_cut()
        error = "the server stopped before the generation finished" if cut else describe(exc)
        released = await self._release(run, hold, attempts, error)
        if isinstance(exc, asyncio.CancelledError):
            self._log_cancelled(run.generation_id, "during the vendor call", released)
        metrics.hold_finished()
        metrics.count_generation(run.request.model, run.request.modality, outcome(exc))

    async def _give_back_taken(self, run: Run, taking: asyncio.Future[Hold | None]) -> None:
        """The client hung up while the hold was being taken: give back whatever it took."""
        request = run.request
        try:
            hold = taking.result()
        except GatewayError as refusal:  # the key's spend limit: nothing was held
            if isinstance(refusal, KeySpendLimitExceeded):
                metrics.count_generation(request.model, request.modality, "key_spend_limit")
            _log_disconnect(run.generation_id, "while its hold was refused", 0)
            return
        except Exception:
            log.exception("taking the hold of generation %s failed", run.generation_id)
            return
        if hold is None:  # the balance could not cover it: nothing was held
            metrics.count_generation(request.model, request.modality, "insufficient_credits")
            _log_disconnect(run.generation_id, "while its hold was refused", 0)
            return
        released = await self._release(run, hold, Attempts(), describe(asyncio.CancelledError()))
        self._log_cancelled(run.generation_id, "while its hold was taken", released)
        await self._tell_failed(run, asyncio.CancelledError())

    async def _release(self, run: Run, hold: Hold, attempts: Attempts, error: str) -> int:
        """Give the hold back; returns the credits released (0 when nothing was held)."""
        last = attempts.last_error
        finish = usage.Finish(
            provider=last.provider if last else run.first.route.provider,
            attempts=attempts.records,
            error=attempts.scrub(error),
        )
        return await shielded(hold.release(finish))

    def _log_cancelled(self, generation_id: str, stage: str, released: int) -> None:
        """One INFO line for a generation abandoned by its client, or cut off by the drain
        (which also counts the release for its summary)."""
        if not self.drain.was_cut():
            _log_disconnect(generation_id, stage, released)
            return
        self.drain.released(released)
        log.info(
            "generation %s: cut off by the server's shutdown %s; released %d held credits",
            generation_id,
            stage,
            released,
        )

    async def _tell_failed(self, run: Run, exc: BaseException) -> None:
        if isinstance(exc, Exception | asyncio.CancelledError):
            error = event_error(exc, cut=self.drain.was_cut())
            await tell(self.events, _finished(run, 0, error=error), ok=False)

    async def _job_failed(
        self, run: Run, exc: BaseException, tracker: Tracker, attempts: Attempts
    ) -> dict[str, Any] | None:
        """The error object of a failed generation (None: nobody is told), as its job
        records it (in its own words: cancelled, interrupted)."""
        if not isinstance(exc, Exception | asyncio.CancelledError):
            return None
        error = event_error(exc, cut=self.drain.was_cut())
        # A vendor's refusal often quotes the prompt. The job row (kept as long as the usage
        # row) and the webhook delivery log keep it unsealed, whatever the account's prompt
        # storage says: they get the usage log's placeholder instead (docs/privacy.md).
        error["message"] = attempts.scrub(str(error["message"]))
        try:
            return dict(await shielded(tracker.failed(error)))
        except Exception:
            log.exception("recording the failure of job %s failed", run.generation_id)
            return error


def _finished(
    run: Run, cost: int, *, served: _Served | None = None, error: dict[str, Any] | None = None
) -> Finished:
    return Finished(
        generation_id=run.generation_id,
        account_id=run.caller.account_id,
        modality=run.request.modality,
        model=run.request.model,
        cost=cost,
        webhook_url=run.request.webhook_url,
        latency_ms=served.latency_ms if served is not None else None,
        urls=tuple(o.url for o in served.outputs) if served is not None else (),
        error=error,
    )


async def _submitted(run: Run, tracker: Tracker, plan: Plan, ref: Mapping[str, Any]) -> None:
    """A resumable vendor accepted the job on `plan`: put its reference on record."""
    await shielded(tracker.submitted(spec_of(run, plan), ref))


def _outputs_expire_at(policy: GenerationPolicy, outputs: list[StoredOutput]) -> datetime | None:
    if not any(o.name for o in outputs):
        return None
    return utcnow() + timedelta(hours=policy.retention_outputs_hours)


def _charge(plan: Plan, facts: PriceFacts, result: Result) -> int:
    outcome = PriceOutcome(
        output_count=len(result.artifacts),
        usage=result.usage,
        reported_cost=result.reported_cost,
        predict_seconds=result.predict_seconds,
    )
    quoted = usd_to_credits(plan.quote_usd)
    try:
        owed: int = usd_to_credits(settle(plan.route.price, facts, outcome))
    except PricingError:
        log.exception("settle price failed for %s; charging the quote", plan.route.upstream)
        owed = quoted
    # Never more than the served route's quote, which the hold covered before the attempt:
    # the quote is the most a client agreed to pay for that route.
    return max(0, min(owed, quoted))


def _answer(served: _Served, cost: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": [o.item for o in served.outputs],
        "latency": served.latency_ms,
        "cost": usd_number(cost),
    }
    for key, value in served.result.extra.items():
        body.setdefault(key, value)
    return body


def _log_disconnect(generation_id: str, stage: str, released: int) -> None:
    """A client hanging up is normal: one INFO line (with the request id), no traceback."""
    log.info(
        "generation %s: client disconnected %s; released %d held credits",
        generation_id,
        stage,
        released,
    )


def _js_number(value: Decimal) -> str:
    """A USD amount printed like a JavaScript number: 0.04, 1.6, 0 (no trailing zeros)."""
    text = format(value.normalize(), "f")
    return text


__all__ = ["GenerationPolicy", "Generator", "StoredOutput"]
