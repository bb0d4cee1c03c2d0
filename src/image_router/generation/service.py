"""The generation use case: plan → hold → call the routes → store → settle → answer.

Transactions are short and never span the upstream call: the hold commits before the
vendor is called, and the settle (or the release) is a second transaction. A crash in
between leaves a `processing` row whose hold the reconciler gives back after its deadline.
A client that hangs up cancels the request; every transaction still runs to its end
(`shielded`), and what was held goes back unless the generation was already made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.personal_data import Vault
from image_router.account.service import Caller
from image_router.account.spend_limits import KeySpendLimitExceeded
from image_router.catalog.pricing import PriceFacts, PriceOutcome, PricingError, settle
from image_router.catalog.spec import Catalog
from image_router.errors import (
    GatewayError,
    GenerationUnavailable,
    InsufficientCredits,
    InternalError,
    InvalidRequest,
)
from image_router.generation.attempts import Attempts, Plan, call_routes, usable_plans
from image_router.generation.events import NO_EVENTS, Finished, GenerationEvents
from image_router.generation.failures import client_error, describe, outcome
from image_router.generation.holds import Hold
from image_router.generation.outputs import StoredOutput, store_outputs
from image_router.generation.planning import plan_routes, price_facts, routing_note
from image_router.generation.policy import GenerationPolicy
from image_router.generation.validation import GenerationRequest
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id
from image_router.kit.money import usd_number, usd_to_credits
from image_router.kit.shielding import shielded
from image_router.observability import metrics
from image_router.providers.contract import Job, Provider, Result
from image_router.providers.errors import UpstreamError
from image_router.providers.output_fetch import OutputFetcher
from image_router.routing.health import HealthStore
from image_router.storage.base import Store
from image_router.usage import service as usage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Run:
    """One request on its way through the steps."""

    caller: Caller
    request: GenerationRequest
    facts: PriceFacts
    plans: list[Plan]  # best first; never empty
    generation_id: str
    deadline_s: float

    @property
    def first(self) -> Plan:
        return self.plans[0]


@dataclass(frozen=True)
class _Served:
    """What the route that served the request made, and what it costs."""

    plan: Plan
    result: Result
    latency_ms: int
    outputs: list[StoredOutput]
    cost: int


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
        if request.webhook_url is not None:  # refused (400) before anything is held
            await self.events.check_url(request.webhook_url)
        run = await self._plan(caller, request, generation_id or new_id())
        received = time.monotonic()
        hold = await self._hold(run, client_ip=client_ip, store_prompt=store_prompt)
        attempts = Attempts(prompt=request.prompt or "")
        note = routing_note(request, run.plans)
        if note is not None:
            attempts.steered(note)
        try:
            served = await self._serve(run, hold, attempts)
        except BaseException as exc:
            # Whatever happened (vendor failure, deadline, client gone, a bug), the hold goes back.
            await self._give_back(run, hold, attempts, exc)
            await self._tell_failed(run, exc)
            if isinstance(
                exc, asyncio.CancelledError | GatewayError | KeyboardInterrupt | SystemExit
            ):
                raise
            raise client_error(exc) from exc
        cost = await self._settle(run, hold, attempts, served)
        metrics.hold_finished()
        metrics.count_generation(request.model, request.modality, "success")
        metrics.observe_gateway_overhead(
            max(0.0, time.monotonic() - received - served.latency_ms / 1000)
        )
        await self._tell(self.events.completed, _finished(run, cost, served=served))
        return _answer(served, cost)

    async def _plan(self, caller: Caller, request: GenerationRequest, generation_id: str) -> _Run:
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
        return _Run(caller, request, facts, plans, generation_id, deadline_s)

    async def _hold(self, run: _Run, *, client_ip: str | None, store_prompt: bool) -> Hold:
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
        taking = Hold.take(
            self.engine,
            caller.account_id,
            run.generation_id,
            amount,
            limited_key=caller.api_key_id if caller.spend_limit is not None else None,
            opening=partial(self._opening, run, client_ip=client_ip, keep_prompt=keep_prompt),
            # The balance read at authentication: hold and open the row in one round trip.
            likely_covered=caller.balance >= amount,
        )
        try:
            # A client that disconnects cancels this task: the transaction still runs to its
            # end, and what it took is given back before the cancellation goes on.
            hold = await shielded(taking, after_cancel=partial(self._give_back_taken, run))
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
        self, run: _Run, *, client_ip: str | None, keep_prompt: bool
    ) -> usage.NewGeneration:
        """The usage row of a request whose credit is held (its prompt sealed if kept)."""
        caller, request = run.caller, run.request
        now = utcnow()
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
        )

    async def _serve(self, run: _Run, hold: Hold, attempts: Attempts) -> _Served:
        """Call the routes until one serves the request within its deadline, store what it
        made and price it."""
        request = run.request
        started = time.monotonic()
        plan, result = await asyncio.wait_for(
            call_routes(
                self.providers,
                run.plans,
                _job(run),
                hold.cover,
                attempts,
                health=self.health,
                policy=self.policy.routing(run.deadline_s),
                learn=run.caller.allow_routing_improvement,
                deadline=started + run.deadline_s,
            ),
            timeout=run.deadline_s,
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
        return _Served(plan, result, latency_ms, outputs, _charge(plan, run.facts, result))

    async def _settle(self, run: _Run, hold: Hold, attempts: Attempts, served: _Served) -> int:
        """Charge what the served route cost and give the rest back; returns the charge."""
        outputs = served.outputs
        finish = usage.Finish(
            provider=served.plan.route.provider,
            cost=served.cost,
            latency_ms=served.latency_ms,
            output_urls=[o.url for o in outputs if o.url],
            attempts=attempts.records,
            output_keys=[o.name for o in outputs if o.name],
            outputs_expire_at=utcnow() + timedelta(hours=self.policy.retention_outputs_hours)
            if any(o.name for o in outputs)
            else None,
        )
        # Shielded like the hold: a disconnect now must not cut the settle in half.
        return await shielded(
            hold.settle(served.cost, finish),
            after_cancel=partial(_settled_after_cancel, run.generation_id),
        )

    async def _give_back(
        self, run: _Run, hold: Hold, attempts: Attempts, exc: BaseException
    ) -> None:
        """Release the hold of a generation that failed (or was abandoned), and count it."""
        released = await self._release(run, hold, attempts, describe(exc))
        if isinstance(exc, asyncio.CancelledError):
            _log_disconnect(run.generation_id, "during the vendor call", released)
        metrics.hold_finished()
        metrics.count_generation(run.request.model, run.request.modality, outcome(exc))

    async def _give_back_taken(self, run: _Run, taking: asyncio.Future[Hold | None]) -> None:
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
        _log_disconnect(run.generation_id, "while its hold was taken", released)
        await self._tell_failed(run, asyncio.CancelledError())

    async def _release(self, run: _Run, hold: Hold, attempts: Attempts, error: str) -> int:
        """Give the hold back; returns the credits released (0 when nothing was held)."""
        last = attempts.last_error
        finish = usage.Finish(
            provider=last.provider if last else run.first.route.provider,
            attempts=attempts.records,
            error=attempts.scrub(error),
        )
        return await shielded(hold.release(finish))

    async def _tell_failed(self, run: _Run, exc: BaseException) -> None:
        if isinstance(exc, Exception | asyncio.CancelledError):
            await self._tell(self.events.failed, _finished(run, 0, error=_error_object(exc)))

    async def _tell(self, send: Callable[[Finished], Awaitable[None]], finished: Finished) -> None:
        """Hand the ended generation to `events`, after its settle or release committed: a
        failure here is logged and changes neither the answer nor what was charged; a
        client hanging up meanwhile does not cut it short (`shielded`)."""
        try:
            await shielded(send(finished))
        except Exception:
            log.exception("recording the events of generation %s failed", finished.generation_id)


def _finished(
    run: _Run, cost: int, *, served: _Served | None = None, error: dict[str, Any] | None = None
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


def _error_object(exc: BaseException) -> dict[str, Any]:
    """The error a failed generation's event carries: what its client was (or would have
    been) answered, without logging the failure a second time."""
    if isinstance(exc, asyncio.CancelledError):
        return {
            "message": "The client disconnected before the generation finished. "
            "You were not charged.",
            "type": "cancelled",
            "code": "client_disconnected",
        }
    if isinstance(exc, GatewayError):
        error = exc
    elif isinstance(exc, UpstreamError | TimeoutError):
        error = client_error(exc)
    else:  # a bug: `client_error` logs it once, when the client's answer is made
        error = InternalError("Failed to generate. You were not charged.")
    return {"message": error.message, "type": error.error_type, "code": error.code}


def _job(run: _Run) -> Job:
    request = run.request
    return Job(
        modality=request.modality,
        model=request.model,
        prompt=request.prompt or "",
        quality=request.quality,
        size=request.size,
        output_format=request.output_format,
        seconds=request.seconds,
        images=request.images,
        mask=request.mask,
        user_ref=run.caller.account_id,
        job_id=run.generation_id,
        n=request.n,
    )


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


async def _settled_after_cancel(generation_id: str, settling: asyncio.Future[int]) -> None:
    # The client is gone but the generation was made: the settle finished and charged.
    charged = settling.result()
    metrics.hold_finished()
    log.info(
        "generation %s: client disconnected during the settle; charged %d credits",
        generation_id,
        charged,
    )


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
