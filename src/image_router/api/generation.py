"""`POST /v1/openai/images/generations`, `/edits` and `/v1/openai/videos/generations`.

Errors get honest statuses. Only a generation that outlives `HEARTBEAT_AFTER_S` switches to
the reference's keep-alive mode: status 200 is committed, a space is written every
`HEARTBEAT_INTERVAL_S` so proxies keep the connection open, and the final JSON (success or
error) follows the spaces. JSON parsers ignore the leading whitespace.

`Prefer: respond-async` (RFC 7240) answers 202 with a job object and `Location:
/v1/jobs/{id}` once the credit is held (api/jobs.py, docs/jobs.md). A client that hangs up
before its credit is held cancels the request; after that, the generation runs on as a
job (charged if it succeeds, in the usage log and at `/v1/jobs/{id}`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Match, Route
from starlette.types import Scope

from image_router.account.service import Caller
from image_router.api.gates import admit
from image_router.api.idempotency import Fingerprinted, Idempotent
from image_router.api.jobs import PREFERENCE_APPLIED, RESPOND_ASYNC, jobs_for, wants_async
from image_router.api.responses import json_response
from image_router.api.uploads import IMAGE_LIMITS, VIDEO_LIMITS, read_body
from image_router.errors import GatewayError, InternalError, InvalidRequest
from image_router.generation.validation import GenerationRequest, validate_image, validate_video
from image_router.idempotency.store import Answer
from image_router.jobs.service import Jobs
from image_router.kit.ids import new_id
from image_router.resources import Resources

GENERATION_ID_HEADER = "X-Generation-Id"
log = logging.getLogger(__name__)


# Plain Starlette endpoints: FastAPI's dependency injection would cost every generation a
# dependency solve for nothing (the gate is one function, the body is read by hand).
# `api/openapi.py` documents them.
async def generate_image(request: Request) -> Response:
    res: Resources = request.app.state.resources
    body = Fingerprinted(request)  # Idempotency-Key: the body is read through it
    caller, validated = await admit(request, res, "image", partial(_read_image, body.request, res))
    return await _generate(request, res, caller, validated, body)


async def generate_video(request: Request) -> Response:
    res: Resources = request.app.state.resources
    body = Fingerprinted(request)
    caller, validated = await admit(request, res, "video", partial(_read_video, body.request, res))
    return await _generate(request, res, caller, validated, body)


class _Route(Route):
    """A plain route that, like FastAPI's, leaves itself in the scope: the request metrics
    label a request by its route's template, and an unlabelled one counts as unmatched."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        if match is not Match.NONE:
            child_scope["route"] = self
        return match, child_scope


# In the order FastAPI registered the decorated routes (the OpenAPI document keeps it).
ROUTES = [
    _Route("/v1/openai/images/edits", generate_image, methods=["POST"]),
    _Route("/v1/openai/images/generations", generate_image, methods=["POST"]),
    _Route("/v1/openai/videos/generations", generate_video, methods=["POST"]),
]


async def _read_image(request: Request, res: Resources) -> GenerationRequest:
    body = await read_body(request, IMAGE_LIMITS)
    return validate_image(
        body.fields, res.catalog, images=body.images, mask=body.mask, enabled=res.enabled
    )


async def _read_video(request: Request, res: Resources) -> GenerationRequest:
    body = await read_body(request, VIDEO_LIMITS)
    return validate_video(body.fields, res.catalog, images=body.images, enabled=res.enabled)


async def _generate(
    request: Request,
    res: Resources,
    caller: Caller,
    validated: GenerationRequest,
    body: Fingerprinted,
) -> Response:
    jobs = _async_jobs(request, res, caller, validated)  # refusals before the claim
    idempotent = await _claim(request, res, caller, validated, body)
    if isinstance(idempotent, Response):
        return idempotent  # the stored answer of this key's first request
    generation_id = new_id()
    if jobs is not None:
        return await _submit(request, res, jobs, caller, validated, idempotent, generation_id)
    run = res.generator.generate(
        caller,
        validated,
        client_ip=res.limits.client_ip(request.scope),
        store_prompt=store_prompt_allowed(request),
        generation_id=generation_id,
    )
    # The usage row's id (the website links a result to it); OpenAI clients ignore it.
    headers = {GENERATION_ID_HEADER: generation_id}
    # The playground (a website token) cancels by dropping its request (its Cancel button),
    # so there a hang-up still cancels; an API client's generation runs on as a job.
    detachable = None if caller.via_web_token else generation_id
    if idempotent is None:
        return await _respond(request, run, res, headers, generation_id=detachable)
    recorded = idempotent.record(run, headers, generation_id)
    return await _respond(
        request, recorded, res, headers, idempotent.stream_started, generation_id=detachable
    )


def _async_jobs(
    request: Request, res: Resources, caller: Caller, validated: GenerationRequest
) -> Jobs | None:
    """The jobs use case when the request asks `Prefer: respond-async`, else None."""
    if not wants_async(request.headers.get("prefer")):
        return None
    jobs = jobs_for(caller, res)  # 400 for a guest
    if validated.response_format == "b64_ephemeral":
        raise InvalidRequest(
            "response_format 'b64_ephemeral' is answered once and never stored, so it "
            "cannot be fetched from a job; use 'url' or 'b64_json' with Prefer: respond-async",
            param="response_format",
            code="async_ephemeral_output",
        )
    return jobs


async def _submit(
    request: Request,
    res: Resources,
    jobs: Jobs,
    caller: Caller,
    validated: GenerationRequest,
    idempotent: Idempotent | None,
    generation_id: str,
) -> Response:
    """202 with the job once its credit is held; every refusal (402, 503 …) as for a
    synchronous request. With an Idempotency-Key the 202 (or the refusal) is the stored
    answer, so a retry gets the same job."""
    headers = {
        GENERATION_ID_HEADER: generation_id,
        "Location": f"/v1/jobs/{generation_id}",
        PREFERENCE_APPLIED: RESPOND_ASYNC,
    }
    try:
        job = await jobs.submit(
            caller,
            validated,
            client_ip=res.limits.client_ip(request.scope),
            store_prompt=store_prompt_allowed(request),
            generation_id=generation_id,
        )
    except GatewayError as exc:
        if idempotent is not None:
            await idempotent.finish(
                Answer(exc.status, {**_JSON, **exc.headers}, orjson.dumps(exc.body()))
            )
        raise
    except BaseException:
        if idempotent is not None:
            await idempotent.release()
        raise
    if idempotent is not None:
        kept = {name.lower(): value for name, value in headers.items()} | _JSON
        await idempotent.finish(Answer(202, kept, orjson.dumps(job)))
    return json_response(job, status=202, headers=headers)


_JSON = {"content-type": "application/json"}


async def _claim(
    request: Request,
    res: Resources,
    caller: Caller,
    validated: GenerationRequest,
    body: Fingerprinted,
) -> Idempotent | Response | None:
    """The `Idempotency-Key` claim (api/idempotency.py). It stands for the deadline plus
    the hold grace: by then the hold reconciler gives a dead request's hold back."""
    deadline_s = res.generator.policy.deadline_s(validated.modality)
    return await body.begin(
        res,
        caller.account_id,
        lease_s=deadline_s + res.settings.generation.hold_grace_s,
        # Guests share one account: a guest's keys are its address's.
        scope=(res.limits.client_ip(request.scope) or "") if caller.guest else "",
    )


def store_prompt_allowed(request: Request) -> bool:
    """`X-Store-Prompt: false` keeps this request's prompt out of the usage log (DSR-6).

    Any other value changes nothing: the header can narrow storage, never widen it.
    """
    value = request.headers.get("x-store-prompt", "").strip().lower()
    return value not in ("false", "0", "no", "off")


async def _respond(
    request: Request,
    work: Awaitable[dict[str, Any]],
    res: Resources,
    headers: dict[str, str] | None = None,
    on_stream: Callable[[], None] | None = None,
    *,
    generation_id: str | None = None,
) -> Response:
    task = asyncio.ensure_future(work)
    detach = partial(_detach, res, generation_id, task)
    watcher = asyncio.ensure_future(_on_disconnect(request, task, detach))
    try:
        done, _ = await asyncio.wait(
            {task, watcher},
            timeout=res.settings.generation.heartbeat_after_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        # From here on the streaming response listens for the disconnect itself.
        watcher.cancel()
    if watcher in done and not task.done():
        detached = not watcher.cancelled() and watcher.exception() is None and watcher.result()
        if not detached:
            # Cancelled while taking its hold: let it give the hold back before we go.
            await asyncio.wait({task})
        # Nobody is left to answer; a detached generation runs on as a job.
        raise ClientDisconnect()
    if task in done:
        if task.cancelled():
            # Only the disconnect watcher cancels it: the client hung up, and the generation
            # released (or settled) its hold and logged so. Nobody is left to answer.
            raise ClientDisconnect()
        # A GatewayError propagates to the error handler.
        return json_response(task.result(), headers=headers)
    if on_stream is not None:
        on_stream()  # no await since the wait ended: the work learns it before it ends
    return StreamingResponse(
        _heartbeat(task, res.settings.generation.heartbeat_interval_s, detach),
        status_code=200,
        media_type="application/json",
        headers=headers,
    )


async def _on_disconnect(
    request: Request, task: asyncio.Future[Any], detach: Callable[[], Awaitable[bool]]
) -> bool:
    """When the client goes away: a generation whose credit is held runs on as a job
    (`detach`, True); one still taking its hold is abandoned (its hold released, not
    charged; False).

    The body has been read, so the next ASGI message is the disconnect (if any).
    """
    while not task.done():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            if await detach():
                return True
            task.cancel()
            return False
    return False


async def _detach(res: Resources, generation_id: str | None, task: asyncio.Future[Any]) -> bool:
    """Keep a generation whose client hung up running as a job (docs/jobs.md: the result
    was being made and is kept, charged, and fetched at /v1/jobs/{id}); False when its
    credit is not held yet, so it is cancelled instead."""
    jobs = res.generation_jobs
    if jobs is None or generation_id is None or not jobs.holding(generation_id):
        return False
    return await jobs.detach(generation_id, task)


async def _heartbeat(
    task: asyncio.Future[dict[str, Any]],
    interval: float,
    detach: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
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
        # The client went away mid-stream: the generation runs on as a job (or, still
        # taking its hold, is abandoned and released).
        if not task.done() and not await detach():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, GatewayError):
                pass  # expected: the cancelled generation released its hold itself
            except Exception:
                log.exception("an abandoned generation failed while stopping")
