"""The generation use case: validate → quote → hold → call upstream → store → settle.

Transactions are short and never span the upstream call: the hold commits before the
vendor is called, and the settle (or the release) is a second transaction. A crash in
between leaves a `processing` row whose hold the reconciler gives back after its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

from image_router.account import spend_limits
from image_router.account.service import Caller
from image_router.catalog.pricing import (
    PriceFacts,
    PriceOutcome,
    PricingError,
    quote,
    settle,
)
from image_router.catalog.spec import ModelSpec, Route
from image_router.db.session import unit_of_work
from image_router.errors import (
    GatewayError,
    GenerationFailed,
    GenerationRejected,
    GenerationTimeout,
    GenerationUnavailable,
    InsufficientCredits,
    InternalError,
    InvalidRequest,
)
from image_router.generation.attempts import (
    Attempts,
    Plan,
    RoutingPolicy,
    call_routes,
    usable_plans,
)
from image_router.generation.holds import Hold
from image_router.generation.outputs import StoredOutput, store_outputs
from image_router.generation.validation import GenerationRequest
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id
from image_router.kit.money import usd_number, usd_to_credits
from image_router.ledger import service as ledger
from image_router.observability import metrics
from image_router.providers.base import (
    Job,
    Result,
    Target,
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from image_router.resources import Resources
from image_router.routing.preferences import Preferences
from image_router.routing.preferences import reason as steering_reason
from image_router.usage import service as usage

log = logging.getLogger(__name__)

#: The `Retry-After` (seconds) of a 503 for a busy vendor that did not say when to return.
BUSY_RETRY_AFTER_S = 5


async def generate(
    res: Resources,
    caller: Caller,
    request: GenerationRequest,
    *,
    client_ip: str | None,
    store_prompt: bool = True,
) -> dict[str, Any]:
    """Run one generation and return the response body. Raises `GatewayError`s only.

    `store_prompt=False` (the X-Store-Prompt header) keeps this request's prompt out of
    the usage log; it can only narrow what the account's `store_prompts` allows.
    """
    spec = res.catalog.get(request.model)
    if spec is None:  # validation guarantees a model; keep the type checker honest
        raise InvalidRequest(f"model '{request.model}' is not available", param="model")
    facts = PriceFacts(
        size=request.size,
        quality=request.quality,
        image_count=len(request.images),
        prompt_chars=len((request.prompt or "").encode("utf-16-le")) // 2,
        seconds=request.seconds,
        outputs=request.n,
    )
    plans = await usable_plans(
        plan_routes(res, spec, request, facts), res.health, request.preferences
    )
    if not plans:
        raise GenerationUnavailable(
            f"Every route of '{spec.id}' is failing right now; try again in "
            f"{res.settings.circuit_cooldown_s:.0f} seconds. You were not charged.",
            code="circuit_open",
            headers={"Retry-After": str(int(res.settings.circuit_cooldown_s))},
        )
    first = plans[0]
    held = usd_to_credits(first.quote_usd)
    generation_id = new_id()
    deadline_s = (
        res.settings.video_deadline_s
        if request.modality == "video"
        else res.settings.image_deadline_s
    )

    received = time.monotonic()

    keep_prompt = (
        store_prompt
        and caller.store_prompts
        and res.settings.retention_prompts_days > 0
        and bool(request.prompt)
    )

    async def take_hold() -> None:
        async with unit_of_work(res.engine) as conn:
            if not await ledger.hold(conn, caller.account_id, held, generation_id=generation_id):
                metrics.count_generation(request.model, request.modality, "insufficient_credits")
                minimum = _js_number(first.quote_usd)
                raise InsufficientCredits(
                    f"Insufficient credits (this model needs minimum ${minimum} credits), "
                    f"please topup your ImageRouter account: {res.settings.pricing_url}"
                )
            if caller.spend_limit is not None and caller.api_key_id is not None:
                # After the hold, in its transaction: raising here rolls the hold back.
                refusal = await spend_limits.check(conn, caller.api_key_id, held)
                if refusal is not None:
                    metrics.count_generation(request.model, request.modality, "key_spend_limit")
                    raise refusal
            await usage.start(
                conn,
                usage.NewGeneration(
                    id=generation_id,
                    account_id=caller.account_id,
                    api_key_id=caller.api_key_id,
                    via_web_token=caller.via_web_token,
                    modality=request.modality,
                    model=request.model,
                    provider=first.route.provider,
                    prompt_enc=await res.vault.seal(caller.account_id, request.prompt)
                    if keep_prompt
                    else None,
                    content_expires_at=utcnow()
                    + timedelta(days=res.settings.retention_prompts_days)
                    if keep_prompt
                    else None,
                    size=request.size,
                    quality=request.quality,
                    seconds=None
                    if request.seconds is None
                    else _js_number(Decimal(request.seconds)),
                    input_types=request.input_types,
                    held=held,
                    ip=client_ip,
                    deadline_at=utcnow() + timedelta(seconds=deadline_s),
                ),
            )

    # A client that disconnects cancels this task; the hold's transaction must neither be
    # cut in half nor leave credit held, so it runs shielded and is given back after.
    holding = asyncio.ensure_future(take_hold())
    try:
        await asyncio.shield(holding)
    except asyncio.CancelledError:
        await _give_back_after_cancel(res, caller, generation_id, holding, first)
        raise
    hold = Hold(
        res.engine,
        caller.account_id,
        generation_id,
        held,
        limited_key=caller.api_key_id if caller.spend_limit is not None else None,
    )

    metrics.hold_taken()
    job = Job(
        modality=request.modality,
        model=request.model,
        prompt=request.prompt or "",
        quality=request.quality,
        size=request.size,
        output_format=request.output_format,
        seconds=request.seconds,
        images=request.images,
        mask=request.mask,
        user_ref=caller.account_id,
        job_id=generation_id,
        n=request.n,
    )
    attempts = Attempts(prompt=request.prompt or "")
    note = _routing_note(request, plans)
    if note is not None:
        attempts.steered(note)
    try:
        started = time.monotonic()
        plan, result = await asyncio.wait_for(
            call_routes(
                res.providers,
                plans,
                job,
                hold.cover,
                attempts,
                health=res.health,
                policy=RoutingPolicy(
                    attempt_timeout_s=res.settings.attempt_timeout_s or deadline_s,
                    backoff_s=res.settings.retry_backoff_s,
                ),
                learn=caller.allow_routing_improvement,
                deadline=started + deadline_s,
            ),
            timeout=deadline_s,
        )
        latency_ms = int((time.monotonic() - started) * 1000)
        attempts.served(plan, plans[0])
        outputs = await store_outputs(
            res.store,
            res.outputs,
            result,
            vendor_base_url=res.providers[plan.route.provider].base_url,
            generation_id=generation_id,
            response_format=request.response_format,
            output_format=request.output_format if request.modality == "image" else None,
            modality=request.modality,
        )
        cost = _charge(plan, facts, result)
    except BaseException as exc:
        # Whatever happened (vendor failure, deadline, client gone, a bug), the hold goes back.
        released = await asyncio.shield(
            _release(res, caller, hold, attempts, _describe(exc), plans[0])
        )
        if isinstance(exc, asyncio.CancelledError):
            _log_disconnect(generation_id, "during the vendor call", released)
        metrics.hold_finished()
        metrics.count_generation(request.model, request.modality, _outcome(exc))
        if isinstance(exc, asyncio.CancelledError | GatewayError | KeyboardInterrupt | SystemExit):
            raise
        raise _client_error(exc) from exc

    async def settle_charge() -> int:
        async with unit_of_work(res.engine) as conn:
            held_now = await usage.finish(
                conn,
                generation_id,
                "success",
                usage.Finish(
                    provider=plan.route.provider,
                    cost=cost,
                    latency_ms=latency_ms,
                    output_urls=[o.url for o in outputs if o.url],
                    attempts=attempts.records,
                    output_keys=[o.name for o in outputs if o.name],
                    outputs_expire_at=utcnow()
                    + timedelta(hours=res.settings.retention_outputs_hours)
                    if any(o.name for o in outputs)
                    else None,
                ),
            )
            if held_now is not None:
                # The hold may have grown for a dearer fallback; what the served route did
                # not cost goes back, whichever route that was.
                await ledger.release(
                    conn, caller.account_id, held_now - cost, generation_id=generation_id
                )
                return cost
        # The reconciler released this hold already (we outlived the deadline): the
        # client still gets its images, and is not charged twice or at all.
        log.warning("generation %s finished after its hold was released", generation_id)
        return 0

    # Shielded like the hold: a disconnect now must not cut the settle transaction in half.
    settling = asyncio.ensure_future(settle_charge())
    try:
        cost = await asyncio.shield(settling)
    except asyncio.CancelledError:
        # The client is gone but the generation was made: the settle finishes and charges.
        charged = await settling
        metrics.hold_finished()
        log.info(
            "generation %s: client disconnected during the settle; charged %d credits",
            generation_id,
            charged,
        )
        raise

    metrics.hold_finished()
    metrics.count_generation(request.model, request.modality, "success")
    metrics.observe_gateway_overhead(max(0.0, time.monotonic() - received - latency_ms / 1000))
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": [o.item for o in outputs],
        "latency": latency_ms,
        "cost": usd_number(cost),
    }
    for key, value in result.extra.items():
        body.setdefault(key, value)
    return body


def plan_routes(
    res: Resources, spec: ModelSpec, request: GenerationRequest, facts: PriceFacts
) -> list[Plan]:
    """The enabled routes able to take this request, in preference order.

    Routes whose catalog condition (`prefer_when`) holds go first; then the client's
    `provider` filters (`only`, `ignore`, `max_price`) leave routes out, and a 400 says
    so when none is left. The first route decides the error a client sees when none fits
    (so an image upload to a text-only model gets the reference's message).
    """
    plans: list[Plan] = []
    first_problem: GatewayError | None = None
    for route in spec.routes:
        if route.provider not in res.providers:
            continue
        problem = _route_problem(route, request)
        if problem is None:
            try:
                quote_usd = quote(route.price, facts)
            except PricingError as exc:
                problem = InvalidRequest(str(exc), code="price_unavailable")
        if problem is not None:
            first_problem = first_problem or problem
            continue
        options = route.resolve(request.quality)
        upstream = str(options.pop("upstream", route.upstream))
        # The vendor adapter needs to know which of its input forms this route uses.
        options.setdefault("image_input", route.image_input)
        plans.append(Plan(route, Target(upstream=upstream, options=options), quote_usd))
    if not plans:
        raise first_problem or GenerationUnavailable(
            f"model provider for '{spec.id}' is not available"
        )
    return _client_filter(spec, _catalog_preferred(plans, request), request.preferences)


def _catalog_preferred(plans: list[Plan], request: GenerationRequest) -> list[Plan]:
    """Routes whose `prefer_when` holds for this request first, catalog order otherwise."""
    return sorted(plans, key=lambda plan: not _prefers(plan.route, request))


def _prefers(route: Route, request: GenerationRequest) -> bool:
    condition = route.prefer_when
    return condition is not None and condition.holds(
        has_images=bool(request.images), size=request.size
    )


def _routing_note(request: GenerationRequest, plans: list[Plan]) -> dict[str, Any] | None:
    """The usage log's account of a steered request (None when nothing steered it)."""
    first = plans[0].route
    preferred = _prefers(first, request)
    if not preferred and not request.preferences.given:
        return None
    return {
        "kind": "routing",
        "preferences": request.preferences.as_record(),
        "candidates": [plan.key for plan in plans],
        "reason": steering_reason(first.provider, request.preferences, catalog_preferred=preferred),
        "served": None,
    }


def _client_filter(spec: ModelSpec, plans: list[Plan], preferences: Preferences) -> list[Plan]:
    kept, reasons = [], []
    for plan in plans:
        why = preferences.excludes(plan.route.provider, plan.quote_usd)
        if why is None:
            kept.append(plan)
        else:
            reasons.append(f"{plan.route.provider}: {why}")
    if not kept:
        raise InvalidRequest(
            f"No route of '{spec.id}' fits the 'provider' preferences ({'; '.join(reasons)})",
            param="provider",
            code="no_route_fits_preferences",
        )
    return kept


def _route_problem(route: Route, request: GenerationRequest) -> GatewayError | None:
    if request.images and route.image_input is None:
        return InvalidRequest(
            "This model does not support image inputs",
            param="image",
            code="image_not_supported",
        )
    if request.mask is not None and not route.mask:
        return InvalidRequest(
            "Mask editing is not supported for this model",
            param="mask",
            code="mask_not_supported",
        )
    if len(request.images) > route.max_images:
        default = (
            "This model supports only one image input"
            if route.max_images == 1
            else f"This model supports at most {route.max_images} input images"
        )
        return InvalidRequest(
            str(route.options.get("max_images_message", default)),
            param="image",
            code="too_many_images",
        )
    refusal = route.refusal(request.quality)
    if refusal is not None:
        return InvalidRequest(refusal, param="quality", code="quality_not_supported")
    return None


async def _give_back_after_cancel(
    res: Resources,
    caller: Caller,
    generation_id: str,
    holding: asyncio.Future[None],
    plan: Plan,
) -> None:
    try:
        await holding
    except GatewayError:
        _log_disconnect(generation_id, "while its hold was refused", 0)
        return  # refused (no credit, key limit): nothing was held
    except Exception:
        log.exception("taking the hold of generation %s failed", generation_id)
        return
    hold = Hold(res.engine, caller.account_id, generation_id, usd_to_credits(plan.quote_usd))
    released = await asyncio.shield(
        _release(res, caller, hold, Attempts(), _describe(asyncio.CancelledError()), plan)
    )
    _log_disconnect(generation_id, "while its hold was taken", released)


def _log_disconnect(generation_id: str, stage: str, released: int) -> None:
    """A client hanging up is normal: one INFO line (with the request id), no traceback."""
    log.info(
        "generation %s: client disconnected %s; released %d held credits",
        generation_id,
        stage,
        released,
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


async def _release(
    res: Resources,
    caller: Caller,
    hold: Hold,
    attempts: Attempts,
    error: str,
    plan: Plan,
) -> int:
    """Give the hold back; returns the credits released (0 when nothing was held)."""
    generation_id = hold.generation_id
    try:
        await hold.finished()  # an extension cut short by a disconnect still commits first
        async with unit_of_work(res.engine) as conn:
            held = await usage.finish(
                conn,
                generation_id,
                "error",
                usage.Finish(
                    provider=(
                        attempts.last_error.provider if attempts.last_error else plan.route.provider
                    ),
                    attempts=attempts.records,
                    error=attempts.scrub(error),
                ),
            )
            if held is not None:
                await ledger.release(conn, caller.account_id, held, generation_id=generation_id)
                return held
    except Exception:
        # The reconciler will release it after the deadline; say so loudly.
        log.exception("could not release hold of generation %s", generation_id)
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, UpstreamError | GatewayError):
        return exc.message
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "the generation did not finish before its deadline"
    if isinstance(exc, asyncio.CancelledError):
        return "the request was cancelled (client disconnected)"
    return f"internal error: {type(exc).__name__}"


def _client_error(exc: BaseException) -> GatewayError:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | UpstreamTimeoutError):
        return GenerationTimeout("The generation did not finish in time. You were not charged.")
    if isinstance(exc, UpstreamRejectedError):
        return GenerationRejected(exc.message, code=exc.code or "upstream_rejected")
    if isinstance(exc, UpstreamMisconfiguredError):
        # Our key or base URL, not the request: say so without the vendor's words (they
        # may quote part of our key); the ERROR log names vendor and URL for the operator.
        return GenerationFailed(
            f"The gateway's configuration for {exc.provider} was refused by the vendor "
            f"(HTTP {exc.status or '-'}); the operator must fix it. You were not charged.",
            code="upstream_misconfigured",
        )
    if isinstance(exc, UpstreamError) and exc.busy:
        # The last route left was busy, and still was when retried: a try-again-later case.
        wait = max(1, math.ceil(exc.retry_after_s or BUSY_RETRY_AFTER_S))
        return GenerationUnavailable(
            f"The upstream provider is busy: {exc.message.rstrip('.')}. Try again in "
            f"{wait} seconds. You were not charged.",
            code="upstream_busy",
            headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, UpstreamError):
        return GenerationFailed(
            f"The upstream provider failed: {exc.message.rstrip('.')}. You were not charged.",
            code=f"upstream_{exc.kind}",
        )
    log.error("generation failed unexpectedly", exc_info=exc)
    return InternalError("Failed to generate. You were not charged.")


def _outcome(exc: BaseException) -> str:
    """The status label of a failed generation for the metrics."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, UpstreamRejectedError):
        return "rejected"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | UpstreamTimeoutError):
        return "timeout"
    return "error"


def _js_number(value: Decimal) -> str:
    """A USD amount printed like a JavaScript number: 0.04, 1.6, 0 (no trailing zeros)."""
    text = format(value.normalize(), "f")
    return text


__all__ = ["StoredOutput", "generate", "plan_routes"]
