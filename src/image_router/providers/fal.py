"""fal.ai through its queue API (spec §9.6 images, §9.7 videos).

Submit `POST {queue}/{endpoint}` with `Authorization: Key <FAL_API_KEY>`; poll the
`status_url` the submit answer names until it says COMPLETED; fetch `response_url`. A job
we abandon (the task is cancelled mid-poll) is cancelled at fal with `PUT cancel_url`.
Resumable (`providers.resume`): a queued job's reference is its request id and the three
URLs fal gave; resuming polls `status_url` again, and `cancel` works from the reference.

Input images go where the route's `image_input` token (in `target.options`) says:
`fal_image_url` → `image_url` (one data URI), `fal_image_urls` → `image_urls`; with images
the endpoint becomes the route's `image_upstream` when it has one.

Deliberate differences from the reference, which returned billed "soft failures":

- a FAILED/CANCELED/ERROR job, a failed poll (once `polling.poll_once` stops retrying it)
  and a failed result fetch all raise the matching `UpstreamError` (an NSFW or
  content-policy refusal is `UpstreamRejectedError`);
- the catalog's `steps` mapping (qwen-image, Ovis) is sent as `num_inference_steps`, which
  those endpoints take; the reference dropped it (spec §13 item 11);
- `output_format` is sent only as png or jpeg, which every fal image endpoint takes; webp
  is left to the gateway's conversion rather than risking a 422 from endpoints without it.

`to_request`, `read_status`, `from_response`, `job_ref`, `job_from_ref` and
`error_from_response` are pure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import httpx

from image_router.providers.contract import Artifact, Job, Provider, Result, Target, refuse_mask
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
    error_for_status,
    redact,
    response_json,
    translate_errors,
)
from image_router.providers.inflight import InFlight, cancel_quietly
from image_router.providers.polling import poll_once
from image_router.providers.resume import make_ref, ref_text, submit_or_resume
from image_router.providers.upstream_text import error_body, mentions

PROVIDER_ID = "fal"
DEFAULT_SYNC_BASE_URL = "https://fal.run"
#: fal takes these as `output_format` on every image endpoint the catalog uses.
OUTPUT_FORMATS = frozenset({"png", "jpeg"})
VIDEO_RESOLUTION = "720p"

_PENDING = frozenset({"IN_QUEUE", "IN_PROGRESS"})
_FAILED = frozenset({"FAILED", "CANCELED", "CANCELLED", "ERROR"})
# Words of fal's (and its models') refusals of the user's prompt or image.
_REFUSAL_HINTS = ("nsfw", "content_policy", "content policy", "flagged", "unsafe content")
# Our fal account is locked or out of money: another route may still work.
_ACCOUNT_HINTS = ("exhausted balance", "user is locked", "balance", "credit", "quota")


@dataclass(frozen=True)
class FalRequest:
    """One submission: the endpoint id (`owner/app[/path]`) and its JSON input."""

    endpoint: str
    body: dict[str, Any]


@dataclass(frozen=True)
class QueuedJob:
    """Where a submitted job is watched, fetched and cancelled."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    completed: bool


def to_request(job: Job, target: Target) -> FalRequest:
    """Map a job onto a fal endpoint and its input (the reference's `generateFal`)."""
    refuse_mask(job, PROVIDER_ID)
    options = target.options
    endpoint = target.upstream
    if job.images and options.get("image_upstream"):
        endpoint = str(options["image_upstream"])
    if job.modality == "video":
        body: dict[str, Any] = {"prompt": job.prompt, "resolution": VIDEO_RESOLUTION}
        if job.seconds is not None:
            body["duration"] = _number(job.seconds)
        if job.images:
            body["image_url"] = job.images[0].data_uri()
        return FalRequest(endpoint, body)
    body = {"prompt": job.prompt, "enable_safety_checker": False}
    body.update(_image_inputs(job, options))
    steps = options.get("num_inference_steps")
    if steps is None:
        steps = options.get("steps")
    if steps is not None:
        body["num_inference_steps"] = steps
    dimensions = job.dimensions
    if dimensions is not None:
        body["image_size"] = {"width": dimensions[0], "height": dimensions[1]}
    if job.output_format in OUTPUT_FORMATS:
        body["output_format"] = job.output_format
    return FalRequest(endpoint, body)


def _image_inputs(job: Job, options: Mapping[str, Any]) -> dict[str, Any]:
    if not job.images:
        return {}
    token = options.get("image_input")
    if token is None:
        # Routes that do not say how they take images: several images can only be a list.
        token = "fal_image_urls" if len(job.images) > 1 else "fal_image_url"
    if token == "fal_image_urls":
        return {"image_urls": [image.data_uri() for image in job.images]}
    if token == "fal_image_url":
        if len(job.images) > 1:
            raise UpstreamRejectedError(
                "This model supports only one image input",
                provider=PROVIDER_ID,
                code="too_many_images",
            )
        return {"image_url": job.images[0].data_uri()}
    raise UpstreamMisconfiguredError(f"fal does not take images as '{token}'", provider=PROVIDER_ID)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def app_root(endpoint: str) -> str:
    """`owner/app` of an endpoint id: the queue's status/result/cancel URLs use only that."""
    return "/".join(endpoint.strip("/").split("/")[:2])


def queued_job(body: Any, base_url: str, endpoint: str) -> QueuedJob:
    """Read a submit answer; URLs it leaves out are built the way fal builds them."""
    if not isinstance(body, Mapping) or not isinstance(body.get("request_id"), str):
        raise UpstreamProtocolError(
            "fal accepted the job without a request_id", provider=PROVIDER_ID, body=body
        )
    request_id = str(body["request_id"])
    root = f"{base_url}/{app_root(endpoint)}/requests/{request_id}"

    def url(key: str, default: str) -> str:
        value = body.get(key)
        return value if isinstance(value, str) and value else default

    return QueuedJob(
        request_id=request_id,
        status_url=url("status_url", f"{root}/status"),
        response_url=url("response_url", root),
        cancel_url=url("cancel_url", f"{root}/cancel"),
        completed=body.get("status") == "COMPLETED",
    )


def job_ref(queued: QueuedJob) -> dict[str, Any] | None:
    """The reference of a job still queued or running (None: it completed at submit)."""
    if queued.completed:
        return None
    return make_ref(
        PROVIDER_ID,
        request_id=queued.request_id,
        status_url=queued.status_url,
        response_url=queued.response_url,
        cancel_url=queued.cancel_url,
    )


def job_from_ref(ref: Mapping[str, Any]) -> QueuedJob:
    """The queued job a `job_ref` names, to wait on it again."""
    return QueuedJob(
        request_id=ref_text(ref, "request_id", PROVIDER_ID),
        status_url=ref_text(ref, "status_url", PROVIDER_ID),
        response_url=ref_text(ref, "response_url", PROVIDER_ID),
        cancel_url=ref_text(ref, "cancel_url", PROVIDER_ID),
        completed=False,
    )


def read_status(body: Any) -> bool:
    """True once the job is COMPLETED, False while it waits or runs; raises if it failed."""
    status = body.get("status") if isinstance(body, Mapping) else None
    if status == "COMPLETED":
        return True
    if status in _PENDING:
        return False
    if status in _FAILED:
        error = body.get("error")
        message = error if isinstance(error, str) and error else "Generation failed"
        refused = mentions(message, _REFUSAL_HINTS)
        cls = UpstreamRejectedError if refused else UpstreamUnavailableError
        raise _error(cls, message, body, None, str(status).lower())
    raise UpstreamProtocolError(
        f"fal answered an unknown job status: {status!r}", provider=PROVIDER_ID, body=body
    )


def from_response(body: Any, modality: str = "image") -> Result:
    """Map a completed job's output to a `Result`; no output at all is a protocol error."""
    if not isinstance(body, Mapping):
        raise UpstreamProtocolError(
            "fal answered with a result that is not an object", provider=PROVIDER_ID, body=body
        )
    if modality == "video":
        artifacts = _files([body.get("video")], default_type="video/mp4")
    else:
        images = body.get("images")
        found = list(_flatten(images)) if isinstance(images, list) else []
        artifacts = _files([*found, body.get("image")], default_type=None)
    if not artifacts:
        kind = "video" if modality == "video" else "image"
        raise UpstreamProtocolError(
            f"fal answered without any {kind}", provider=PROVIDER_ID, body=body
        )
    seed = body.get("seed")
    return Result(
        artifacts=tuple(artifacts),
        extra={"seed": seed} if isinstance(seed, int) and not isinstance(seed, bool) else {},
        raw=redact(body),
    )


def _flatten(items: list[Any]) -> Any:
    for item in items:
        if isinstance(item, list):
            yield from _flatten(item)
        else:
            yield item


def _files(items: list[Any], *, default_type: str | None) -> list[Artifact]:
    artifacts = []
    for item in items:
        if isinstance(item, str) and item:
            artifacts.append(Artifact(url=item, content_type=default_type))
        elif isinstance(item, Mapping) and isinstance(item.get("url"), str) and item["url"]:
            declared = item.get("content_type")
            content_type = declared if isinstance(declared, str) and declared else default_type
            artifacts.append(Artifact(url=item["url"], content_type=content_type))
    return artifacts


def error_message(body: Any) -> str | None:
    """fal's most descriptive message: `error`, the `detail` list's `msg`s, `detail`, `message`."""
    if isinstance(body, str):
        return body.strip() or None
    if not isinstance(body, Mapping):
        return None
    if isinstance(body.get("error"), str) and body["error"]:
        return str(body["error"])
    detail = body.get("detail")
    if isinstance(detail, list):
        messages = [
            d["msg"] for d in detail if isinstance(d, Mapping) and isinstance(d.get("msg"), str)
        ]
        if messages:
            return "; ".join(messages)
    if isinstance(detail, str) and detail:
        return detail
    message = body.get("message")
    return message if isinstance(message, str) and message else None


def error_from_response(status: int, body: Any, *, on_submit: bool = True) -> UpstreamError:
    """Classify a fal error answer (model errors: `detail` list; request errors: `error_type`)."""
    message = error_message(body) or f"fal.ai answered HTTP {status}"
    detail = body.get("detail") if isinstance(body, Mapping) else None
    types = (
        [d.get("type") for d in detail if isinstance(d, Mapping)]
        if isinstance(detail, list)
        else []
    )
    raw_type = body.get("error_type") if isinstance(body, Mapping) else None
    error_type = raw_type if isinstance(raw_type, str) else None
    if "content_policy_violation" in (*types, error_type) or mentions(message, _REFUSAL_HINTS):
        return _error(UpstreamRejectedError, message, body, status, "content_policy_violation")
    if status in (401, 402, 403, 429) and mentions(message, _ACCOUNT_HINTS):
        return _error(UpstreamRateLimitedError, message, body, status, "account_limit")
    if status == 404:
        # On submit only our catalog's endpoint id can be unknown; later the job vanished.
        cls = UpstreamMisconfiguredError if on_submit else UpstreamUnavailableError
        return _error(cls, message, body, status, "not_found")
    if status == 499:
        # client_cancelled / client_disconnected: fal dropped the job, not the user's input.
        return _error(UpstreamUnavailableError, message, body, status, error_type)
    return error_for_status(PROVIDER_ID, status, message, body, error_type)


def _error(
    cls: type[UpstreamError], message: str, body: Any, status: int | None, code: str | None
) -> UpstreamError:
    return cls(message, provider=PROVIDER_ID, status=status, body=body, code=code)


#: Errors of calls about a submitted job (status, result, cancel).
_after_submit = partial(error_from_response, on_submit=False)


class FalProvider(Provider):
    """fal.ai queue API. `extra["sync_base_url"]` (the `fal.run` host) is accepted but not
    used: like the reference, every call goes through the queue, which fal retries on
    runner failures and which can be cancelled."""

    id = PROVIDER_ID
    key_env = "FAL_API_KEY"
    base_url_env = ("FAL_BASE_URL",)
    extra_env: ClassVar[Mapping[str, str]] = {"sync_base_url": "FAL_SYNC_BASE_URL"}
    env_notes: ClassVar[Mapping[str, str]] = {
        "FAL_BASE_URL": "the queue host",
        "FAL_SYNC_BASE_URL": "the `fal.run` host, default `https://fal.run`; read, not used: "
        "every call goes through the queue",
    }
    default_base_url = "https://queue.fal.run"
    modalities = frozenset({"image", "video"})
    image_inputs = frozenset({"fal_image_url", "fal_image_urls"})
    resumable = True

    def __init__(self, http: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(http, **kwargs)
        self.sync_base_url = self.extra.get("sync_base_url", DEFAULT_SYNC_BASE_URL).rstrip("/")
        self._in_flight = InFlight(self._send_cancel, vendor="fal")

    async def generate(self, job: Job, target: Target) -> Result:
        key = self.require_credential("fal.ai API key")
        queued = await submit_or_resume(
            job,
            partial(self._submit, job, target, key),
            vendor="fal",
            to_ref=job_ref,
            from_ref=job_from_ref,
            stop=lambda queued: self._send_cancel(queued.cancel_url),
        )
        async with translate_errors(self.id):
            if not queued.completed:
                # Only the wait is inside: a job fal reports as ended needs no cancel.
                async with self._in_flight.running(job, queued.cancel_url):
                    status = await self._wait(queued, key)
                read_status(status)
            return from_response(await self._get(queued.response_url, key), job.modality)

    async def _submit(self, job: Job, target: Target, key: str) -> QueuedJob:
        request = to_request(job, target)
        return await self.post_json(
            f"{self.base_url}/{request.endpoint}",
            request.body,
            key=key,
            auth="Key",
            errors=error_from_response,
            read=lambda body: queued_job(body, self.base_url, request.endpoint),
        )

    async def _wait(self, queued: QueuedJob, key: str) -> Any:
        """Poll the job's status until it is no longer pending; return that status."""
        separator = "&" if "?" in queued.status_url else "?"
        url = f"{queued.status_url}{separator}logs=0"
        while True:
            # poll_interval may be 0 in tests: sleep(0) still yields to the loop.
            await asyncio.sleep(self.poll_interval)
            status = await poll_once(
                partial(self._get, url, key), provider=self.id, interval=self.poll_interval
            )
            if not isinstance(status, Mapping) or status.get("status") not in _PENDING:
                return status

    async def _get(self, url: str, key: str) -> Any:
        """A job's status or result (a 404 now means the job vanished, not our endpoint)."""
        response = await self.send("GET", url, key=key, auth="Key", errors=_after_submit)
        return response_json(self.id, response)

    async def cancel(self, job: Job, target: Target) -> bool:
        """Best effort `PUT cancel_url` (see `cancel_quietly`), from `job.vendor_ref` when
        no wait in this process knows the job."""
        ref = job.vendor_ref
        elsewhere = job_from_ref(ref).cancel_url if ref is not None else None
        return await cancel_quietly(self._in_flight.cancel(job, elsewhere), vendor="fal")

    async def _send_cancel(self, cancel_url: str) -> bool:
        """`PUT cancel_url`; False when fal says nothing is left running to stop."""
        key = self.require_credential("fal.ai API key")
        response = await self.http.put(cancel_url, headers={"Authorization": f"Key {key}"})
        # 400 ALREADY_COMPLETED / 404 NOT_FOUND: nothing is left running to stop.
        if response.status_code in (400, 404):
            return False
        if response.is_error:
            raise _after_submit(response.status_code, error_body(response, key))
        return True
