"""One request on its way through the generation's steps, and the record that outlives it.

`Run` is what `Generator` carries from the plan to the answer. `spec_of` writes down what
another process needs to finish a run on one route once the vendor has accepted it (JSON,
without the request's inputs: its prompt and images are never kept); `run_from_spec`
reads it back (generation/resumption.py). The two sit side by side because they must agree.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from image_router.account.service import Caller
from image_router.catalog.pricing import PriceFacts
from image_router.catalog.spec import Catalog
from image_router.generation.attempts import Plan
from image_router.generation.validation import GenerationRequest
from image_router.kit.clock import utcnow
from image_router.providers.contract import Job, Provider, Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
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


def job_of(run: Run) -> Job:
    """The vendor job a run asks for."""
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


def spec_of(run: Run, plan: Plan) -> dict[str, Any]:
    """What a process needs to finish `run` on `plan` without its inputs (JSON)."""
    request, facts = run.request, run.facts
    spec = {
        "provider": plan.route.provider,
        "route": plan.route.upstream,
        "target": {"upstream": plan.target.upstream, "options": dict(plan.target.options)},
        "quote_usd": str(plan.quote_usd),
        "facts": {
            "size": facts.size,
            "quality": facts.quality,
            "image_count": facts.image_count,
            "prompt_chars": facts.prompt_chars,
            "seconds": facts.seconds,
            "outputs": facts.outputs,
        },
        "request": {
            "modality": request.modality,
            "model": request.model,
            "requested_model": request.requested_model,
            "response_format": request.response_format,
            "quality": request.quality,
            "size": request.size,
            "output_format": request.output_format,
            "seconds": request.seconds,
            "n": request.n,
            "webhook_url": request.webhook_url,
        },
        "caller": {
            "api_key_id": run.caller.api_key_id,
            "learn": run.caller.allow_routing_improvement,
        },
    }
    # Route options come from TOML (numbers, strings, lists); anything else as text.
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(spec, default=str))
    return loaded


def run_from_spec(
    spec: Mapping[str, Any],
    *,
    generation_id: str,
    account_id: str,
    deadline_at: datetime,
    catalog: Catalog,
    providers: Mapping[str, Provider],
) -> Run | None:
    """The run a `spec_of` describes, on its one route; None when that route is gone or
    the spec cannot be read (both logged)."""
    try:
        req, facts, caller = spec["request"], spec["facts"], spec["caller"]
        model = catalog.get(req["model"])
        provider = spec["provider"]
        routes = model.routes if model is not None else ()
        route = next(
            (r for r in routes if r.provider == provider and r.upstream == spec["route"]),
            None,
        )
        if route is None or provider not in providers:
            log.warning(
                "cannot resume generation %s: its route %s %s is gone",
                generation_id,
                provider,
                spec["route"],
            )
            return None
        target = Target(spec["target"]["upstream"], dict(spec["target"]["options"]))
        plan = Plan(route, target, Decimal(spec["quote_usd"]))
        request = GenerationRequest(
            modality=req["modality"],
            model=req["model"],
            requested_model=req["requested_model"],
            prompt=None,  # never kept: a vendor job waited on again does not need it
            response_format=req["response_format"],
            quality=req["quality"],
            size=req["size"],
            output_format=req["output_format"],
            seconds=req["seconds"],
            images=(),
            mask=None,
            n=req["n"],
            webhook_url=req["webhook_url"],
        )
        who = Caller(
            account_id=account_id,
            balance=0,
            api_key_id=caller["api_key_id"],
            allow_routing_improvement=caller["learn"],
        )
        price = PriceFacts(**facts)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        log.error(
            "cannot resume generation %s: its spec is unreadable (%r)",
            generation_id,
            exc,
        )
        return None
    left = (deadline_at - utcnow()).total_seconds()
    return Run(who, request, price, [plan], generation_id, left)
