"""Which routes may serve a request, in which order, at which quote.

Pure functions of the catalog entry, the request and the enabled vendors: no I/O, so the
route choice is tested without a database or a vendor.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from image_router.catalog.pricing import PriceFacts, PricingError, quote
from image_router.catalog.spec import ModelSpec, Route
from image_router.errors import GatewayError, GenerationUnavailable, InvalidRequest
from image_router.generation.attempts import Plan
from image_router.generation.validation import GenerationRequest
from image_router.providers.contract import Target
from image_router.routing.preferences import Preferences
from image_router.routing.preferences import reason as steering_reason


def price_facts(request: GenerationRequest) -> PriceFacts:
    """What the price rules need to know about a request."""
    return PriceFacts(
        size=request.size,
        quality=request.quality,
        image_count=len(request.images),
        prompt_chars=len((request.prompt or "").encode("utf-16-le")) // 2,
        seconds=request.seconds,
        outputs=request.n,
    )


def plan_routes(
    providers: Container[str], spec: ModelSpec, request: GenerationRequest, facts: PriceFacts
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
        if route.provider not in providers:
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


def routing_note(request: GenerationRequest, plans: list[Plan]) -> dict[str, Any] | None:
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
