"""The generation gates (spec §6): who may generate, checked before the body is read.

Banned networks and the per-IP limiter come first, before authentication; then the caller
(an API key or a website token) must not be restricted, a management key, or past the grace
period of a material terms change; then the account's image or video limiter.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from image_router.account.service import Caller
from image_router.api.deps import ResourcesDep
from image_router.api.identity import CallerDep
from image_router.db.session import autocommit
from image_router.errors import Forbidden
from image_router.kit.clock import utcnow
from image_router.privacy import policy
from image_router.resources import Resources


async def guard_generation_ip(request: Request, res: ResourcesDep) -> None:
    """Banned networks, then the per-IP generation limiter: before authentication."""
    await res.limits.guard_generation_ip(request.scope)


GenerationIpGuard = Annotated[None, Depends(guard_generation_ip)]


async def get_image_caller(
    request: Request, res: ResourcesDep, _: GenerationIpGuard, caller: CallerDep
) -> Caller:
    """The caller, once the IP guards and then the account's image limiter let it through."""
    _refuse_management_key(caller)
    await _refuse_outdated_terms(request, res, caller)
    await res.limits.guard_account(request.scope, "image", caller.account_id, caller.balance)
    return caller


async def get_video_caller(
    request: Request, res: ResourcesDep, _: GenerationIpGuard, caller: CallerDep
) -> Caller:
    _refuse_management_key(caller)
    await _refuse_outdated_terms(request, res, caller)
    await res.limits.guard_account(request.scope, "video", caller.account_id, caller.balance)
    return caller


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


ImageCallerDep = Annotated[Caller, Depends(get_image_caller)]
VideoCallerDep = Annotated[Caller, Depends(get_video_caller)]
