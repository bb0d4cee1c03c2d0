"""`POST /v1/openai/images/generations`, `/edits` and `/v1/openai/videos/generations`.

Errors get honest statuses. Only a generation that outlives `HEARTBEAT_AFTER_S` switches to
the reference's keep-alive mode: status 200 is committed, a space is written every
`HEARTBEAT_INTERVAL_S` so proxies keep the connection open, and the final JSON (success or
error) follows the spaces. JSON parsers ignore the leading whitespace.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.requests import ClientDisconnect

from image_router.account.service import Caller
from image_router.api.deps import ResourcesDep, client_ip
from image_router.api.gates import ImageCallerDep, VideoCallerDep
from image_router.api.responses import json_response
from image_router.api.uploads import IMAGE_LIMITS, VIDEO_LIMITS, read_body
from image_router.errors import GatewayError, InternalError
from image_router.generation.validation import GenerationRequest, validate_image, validate_video
from image_router.kit.ids import new_id

router = APIRouter()
GENERATION_ID_HEADER = "X-Generation-Id"
log = logging.getLogger(__name__)


@router.post("/v1/openai/images/generations")
@router.post("/v1/openai/images/edits")
async def generate_image(request: Request, res: ResourcesDep, caller: ImageCallerDep) -> Response:
    body = await read_body(request, IMAGE_LIMITS)
    validated = validate_image(
        body.fields,
        res.catalog,
        images=body.images,
        mask=body.mask,
        enabled=res.enabled,
    )
    return await _generate(request, res, caller, validated)


@router.post("/v1/openai/videos/generations")
async def generate_video(request: Request, res: ResourcesDep, caller: VideoCallerDep) -> Response:
    body = await read_body(request, VIDEO_LIMITS)
    validated = validate_video(body.fields, res.catalog, images=body.images, enabled=res.enabled)
    return await _generate(request, res, caller, validated)


async def _generate(
    request: Request, res: ResourcesDep, caller: Caller, validated: GenerationRequest
) -> Response:
    await _free_tier(request, res, caller, validated)
    generation_id = new_id()
    run = res.generator.generate(
        caller,
        validated,
        client_ip=client_ip(request),
        store_prompt=store_prompt_allowed(request),
        generation_id=generation_id,
    )
    # The usage row's id (the website links a result to it); OpenAI clients ignore it.
    return await _respond(request, run, res, {GENERATION_ID_HEADER: generation_id})


def store_prompt_allowed(request: Request) -> bool:
    """`X-Store-Prompt: false` keeps this request's prompt out of the usage log (DSR-6).

    Any other value changes nothing: the header can narrow storage, never widen it.
    """
    value = request.headers.get("x-store-prompt", "").strip().lower()
    return value not in ("false", "0", "no", "off")


async def _free_tier(
    request: Request, res: ResourcesDep, caller: Caller, validated: GenerationRequest
) -> None:
    """The `:free` gate and daily caps (spec §6.3): after validation, before the hold."""
    await res.limits.free_tier.check(
        validated.requested_model,
        # Guests share one account: only their own address's cap binds them.
        account_id=None if caller.guest else caller.account_id,
        funded=caller.balance > 0,
        via_web_token=caller.via_web_token,
        ip=client_ip(request),
    )


async def _respond(
    request: Request,
    work: Awaitable[dict[str, Any]],
    res: ResourcesDep,
    headers: dict[str, str] | None = None,
) -> Response:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_cancel_on_disconnect(request, task))
    try:
        done, _ = await asyncio.wait({task}, timeout=res.settings.generation.heartbeat_after_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        # From here on the streaming response listens for the disconnect itself.
        watcher.cancel()
    if done:
        if task.cancelled():
            # Only the disconnect watcher cancels it: the client hung up, and the generation
            # released (or settled) its hold and logged so. Nobody is left to answer.
            raise ClientDisconnect()
        # A GatewayError propagates to the error handler.
        return json_response(task.result(), headers=headers)
    return StreamingResponse(
        _heartbeat(task, res.settings.generation.heartbeat_interval_s),
        status_code=200,
        media_type="application/json",
        headers=headers,
    )


async def _cancel_on_disconnect(request: Request, task: asyncio.Future[Any]) -> None:
    """Abandon the generation when the client goes away: its hold is released, not charged.

    The body has been read, so the next ASGI message is the disconnect (if any).
    """
    while not task.done():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return


async def _heartbeat(task: asyncio.Future[dict[str, Any]], interval: float) -> AsyncIterator[bytes]:
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                break
            yield b" "
        try:
            yield orjson.dumps(task.result())
        except GatewayError as exc:
            yield orjson.dumps(exc.body())
        except Exception:
            yield orjson.dumps(InternalError("Failed to generate. You were not charged.").body())
    finally:
        # The client went away mid-stream: abandon the generation (its hold is released).
        if not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, GatewayError):
                pass  # expected: the cancelled generation released its hold itself
            except Exception:
                log.exception("an abandoned generation failed while stopping")
