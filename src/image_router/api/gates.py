"""The generation gate (spec §6): who may generate, checked in one place, once.

`admit` runs every check in the reference's order and returns the caller and its validated
request: banned networks and the per-IP generation limiter before authentication; then the
caller (an API key or a website token) must not be restricted, a management key, or past the
grace period of a material terms change; then the account's image or video limiter; then
the body is read and validated; last the free tier (the `:free` gate and daily caps), which
needs the validated model. The general limiter, which counts every route, stays in the
ASGI middleware (`limits/asgi.py`) that also writes the `RateLimit-*` headers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Literal

from starlette.requests import Request

from image_router.account.service import Caller
from image_router.api.identity import get_caller
from image_router.db.session import autocommit
from image_router.errors import Forbidden
from image_router.generation.validation import GenerationRequest
from image_router.kit.clock import utcnow
from image_router.privacy import policy
from image_router.resources import Resources


async def admit(
    request: Request,
    res: Resources,
    modality: Literal["image", "video"],
    validate: Callable[[], Awaitable[GenerationRequest]],
) -> tuple[Caller, GenerationRequest]:
    """Every gate of a generation, in order; `validate` reads and checks the body once the
    caller is let through. Raises the refusal (403, 401, 429, 400, …) of the first that
    fails."""
    limits = res.limits
    scope = request.scope
    await limits.guard_generation_ip(scope)  # bans (403), then the per-IP rate (429)
    caller = await get_caller(request, res)  # 401
    _refuse_management_key(caller)  # 403
    await _refuse_outdated_terms(request, res, caller)  # 403
    await limits.guard_account(scope, modality, caller.account_id, caller.balance)  # 429
    validated = await validate()  # 400, 413
    await limits.free_tier.check(  # 403, 429
        validated.requested_model,
        # Guests share one account: only their own address's cap binds them.
        account_id=None if caller.guest else caller.account_id,
        funded=caller.balance > 0,
        via_web_token=caller.via_web_token,
        ip=limits.client_ip(scope),
    )
    return caller, validated


async def _refuse_outdated_terms(request: Request, res: Resources, caller: Caller) -> None:
    """LEG-3: past the grace period of a material terms change, only accepters generate."""
    documents = request.app.state.legal.documents
    now = utcnow()
    terms = documents.terms
    if terms.material_version is None or now < policy.terms_deadline(
        terms, res.settings.legal.legal_grace_days
    ):
        return  # the usual case: no connection needed
    async with autocommit(res.engine) as conn:
        message = await policy.terms_block(
            conn, caller.account_id, documents, now, res.settings.legal.legal_grace_days
        )
    if message is not None:
        raise Forbidden(message, code=policy.TERMS_REQUIRED_CODE)


def _refuse_management_key(caller: Caller) -> None:
    if caller.restricted:
        # Restriction of processing (GDPR Art. 18), asked for by the person: nothing of
        # theirs is processed until an operator lifts it.
        raise Forbidden(
            "Processing is restricted for this account at your request; contact support "
            "to lift the restriction",
            code="account_restricted",
        )
    # A management key mints keys; keeping it out of generation means it never needs to
    # sit in an application's configuration, where it would be easier to leak.
    if caller.is_management:
        raise Forbidden(
            "Management API keys cannot generate. Create a normal key with "
            "POST /v1/api-keys and use that one",
            code="management_key",
        )
