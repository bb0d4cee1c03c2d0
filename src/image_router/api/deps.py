"""Request dependencies: the resources of this process and who is calling."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError

from image_router.account import web_tokens
from image_router.account.service import Caller, authenticate_key
from image_router.db.session import autocommit, unit_of_work
from image_router.errors import Forbidden, InternalError, Unauthenticated
from image_router.kit.clock import utcnow
from image_router.kit.ids import API_KEY_LENGTH
from image_router.privacy import policy
from image_router.resources import Resources

log = logging.getLogger(__name__)

JWT_MIN_LENGTH = web_tokens.MIN_TOKEN_LENGTH


async def get_resources(request: Request) -> Resources:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, and that hop on
    # every request made the event loop queue for the GIL (throughput fell to a fifth).
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_caller(request: Request, res: ResourcesDep) -> Caller:
    """Resolve `Authorization: Bearer <token>` exactly as the reference does (spec §4)."""
    header = request.headers.get("authorization")
    if header is None or not header.startswith("Bearer "):
        raise Unauthenticated(
            "Authorization header must be provided as Bearer token",
            code="missing_authorization",
        )
    token = header[7:].strip()
    if len(token) == API_KEY_LENGTH:
        try:
            async with autocommit(res.engine) as conn:
                caller = await authenticate_key(conn, token)
        except SQLAlchemyError as exc:
            log.exception("database error while validating an API key")
            raise InternalError("Error validating API key") from exc
        if caller is None:
            raise Unauthenticated("Invalid API key")
        return caller
    if len(token) >= JWT_MIN_LENGTH:
        return await _web_token_caller(request, res, token)
    raise Unauthenticated(
        f"Invalid authorization token length: {len(token)}", code="invalid_token_length"
    )


async def _web_token_caller(request: Request, res: Resources, token: str) -> Caller:
    secret = res.settings.jwt_secret.get_secret_value() if res.settings.jwt_secret else ""
    if not secret:
        # Without a secret no website token was ever minted here, so none can be valid.
        raise Unauthenticated(web_tokens.INVALID_MESSAGE, code="invalid_token")
    claims = web_tokens.verify(secret, token)
    try:
        # A unit of work: the first guest token creates the shared guest account.
        async with unit_of_work(res.engine) as conn:
            return await web_tokens.caller_for(conn, res.vault, claims, client_ip(request))
    except SQLAlchemyError as exc:
        log.exception("database error while validating a website token")
        raise InternalError("Error validating API key") from exc


CallerDep = Annotated[Caller, Depends(get_caller)]


def client_ip(request: Request) -> str | None:
    """The client's address under TRUSTED_PROXY_COUNT / CLIENT_IP_HEADER (spec §1.1)."""
    resources: Resources = request.app.state.resources
    return resources.limits.client_ip(request.scope)


# ----------------------------------------------------------------- generation limits (§6)


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
        terms, res.settings.legal_grace_days
    ):
        return  # the usual case: no connection needed
    async with autocommit(res.engine) as conn:
        message = await policy.terms_block(
            conn, caller.account_id, documents, now, res.settings.legal_grace_days
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
