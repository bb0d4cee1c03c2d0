"""Request dependencies: the resources of this process and who is calling."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError

from image_router.account.service import Caller, authenticate_key
from image_router.db.session import autocommit
from image_router.errors import InternalError, Unauthenticated
from image_router.kit.ids import API_KEY_LENGTH
from image_router.resources import Resources

log = logging.getLogger(__name__)

JWT_MIN_LENGTH = 100


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
        # Website tokens are minted by the accounts feature; until a secret is configured
        # no JWT can be valid.
        raise Unauthenticated("Invalid or expired JWT token", code="invalid_token")
    raise Unauthenticated(
        f"Invalid authorization token length: {len(token)}", code="invalid_token_length"
    )


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
    await res.limits.guard_account(request.scope, "image", caller.account_id, caller.balance)
    return caller


async def get_video_caller(
    request: Request, res: ResourcesDep, _: GenerationIpGuard, caller: CallerDep
) -> Caller:
    await res.limits.guard_account(request.scope, "video", caller.account_id, caller.balance)
    return caller


ImageCallerDep = Annotated[Caller, Depends(get_image_caller)]
VideoCallerDep = Annotated[Caller, Depends(get_video_caller)]
