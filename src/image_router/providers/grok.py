"""xAI (Grok): images synchronously, videos as an async job (spec §9.17).

Images: `POST /images/generations`, or `/images/edits` with an input image, JSON
`{model, prompt, n: 1, user, aspect_ratio?, image?: {url: <data URI>}}`; sizes map to
aspect ratios by the reference's table. Videos: `POST /videos/generations`
`{model, prompt, duration, aspect_ratio, resolution, user, image?}` answers a
`request_id`; `GET /videos/{request_id}` is polled until it carries `video.url`.

xAI errors are `{"code": <gRPC status text>, "error": <message>}`. A wrong key is an HTTP
400 ("Incorrect API key provided"), a content refusal a 400/403 or a 200 whose item says
`respect_moderation: false`; "We're experiencing high demand…" means try elsewhere.
xAI reports costs in ticks of 1e-10 USD (`usage.cost_in_usd_ticks`): kept as
`reported_cost`. There is no cancel endpoint for video jobs, so an abandoned job is left
to finish; a failed status check is retried (`polling.poll_once`) rather than abandoning it.
Videos are resumable (`providers.resume`): the reference is the `request_id`.

`to_request`, `from_image_response`, `read_video_status` and `error_from_response` are pure.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import partial
from typing import Any

import pybase64

from image_router.providers.contract import Artifact, Job, Provider, Result, Target, refuse_mask
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_for_status,
    redact,
    response_json,
    translate_errors,
)
from image_router.providers.polling import poll_once
from image_router.providers.resume import make_ref, ref_text, submit_or_resume
from image_router.providers.upstream_text import mentions, scrub

PROVIDER_ID = "grok"
USD_PER_TICK = Decimal("1e-10")
DEFAULT_VIDEO_SECONDS = 5

#: The reference's `wrongGrokSizeToAspectRatio` (the catalog's grok-imagine-image sizes).
IMAGE_ASPECT_RATIOS: Mapping[str, str] = {
    "1024x1024": "1:1",
    "1280x896": "4:3",
    "896x1280": "3:4",
    "1408x768": "16:9",
    "768x1408": "9:16",
    "1296x864": "3:2",
    "864x1296": "2:3",
    "1248x576": "19.5:9",
    "576x1248": "9:19.5",
    "1280x576": "20:9",
    "576x1280": "9:20",
    "1408x704": "2:1",
    "704x1408": "1:2",
}
#: The reference's `wrongGrokVideoSizeToAspectRatio`: size → (aspect ratio, resolution).
VIDEO_FORMATS: Mapping[str, tuple[str, str]] = {
    "1280x720": ("16:9", "720p"),
    "960x720": ("4:3", "720p"),
    "1088x720": ("3:2", "720p"),
    "720x720": ("1:1", "720p"),
    "720x1088": ("2:3", "720p"),
    "720x960": ("3:4", "720p"),
    "720x1280": ("9:16", "720p"),
    "848x480": ("16:9", "480p"),
    "640x480": ("4:3", "480p"),
    "720x480": ("3:2", "480p"),
    "480x480": ("1:1", "480p"),
    "480x720": ("2:3", "480p"),
    "480x640": ("3:4", "480p"),
    "480x848": ("9:16", "480p"),
}
DEFAULT_VIDEO_FORMAT = ("16:9", "720p")

_PENDING = frozenset({"pending", "queued", "processing", "in_progress"})
_REFUSAL_HINTS = ("content moderation", "violates usage guidelines", "content policy")
_OUR_KEY_HINTS = ("incorrect api key", "no api key", "invalid api key", "missing bearer")
_ACCOUNT_HINTS = ("credits", "spending limit", "billing", "quota")
_BUSY_HINTS = ("high demand", "overloaded")
MODERATED_IMAGE = "Generated image rejected by content moderation."
MODERATED_VIDEO = "Generated video rejected by content moderation."


@dataclass(frozen=True)
class GrokRequest:
    """One call: `path` below the base URL and its JSON body."""

    path: str
    body: dict[str, Any]


def to_request(job: Job, target: Target) -> GrokRequest:
    refuse_mask(job, PROVIDER_ID)
    body: dict[str, Any] = {"model": target.upstream, "prompt": job.prompt}
    if job.modality == "video":
        aspect_ratio, resolution = VIDEO_FORMATS.get(job.size, DEFAULT_VIDEO_FORMAT)
        seconds = job.seconds or DEFAULT_VIDEO_SECONDS
        body["duration"] = int(seconds) if float(seconds).is_integer() else seconds
        body["aspect_ratio"] = aspect_ratio
        body["resolution"] = resolution
        _add_user(body, job)
        if job.images:
            # Video routes use only the first image (reference behaviour).
            body["image"] = {"url": job.images[0].data_uri()}
        return GrokRequest("/videos/generations", body)
    body["n"] = 1
    _add_user(body, job)
    if job.size in IMAGE_ASPECT_RATIOS:
        body["aspect_ratio"] = IMAGE_ASPECT_RATIOS[job.size]
    if not job.images:
        return GrokRequest("/images/generations", body)
    if len(job.images) > 1:
        raise UpstreamRejectedError(
            "This model supports only one image input",
            provider=PROVIDER_ID,
            code="too_many_images",
        )
    body["image"] = {"url": job.images[0].data_uri()}
    return GrokRequest("/images/edits", body)


def _add_user(body: dict[str, Any], job: Job) -> None:
    if job.user_ref:
        body["user"] = job.user_ref


def reported_cost(body: Mapping[str, Any]) -> Decimal | None:
    usage = body.get("usage")
    ticks = usage.get("cost_in_usd_ticks") if isinstance(usage, Mapping) else None
    if isinstance(ticks, int) and not isinstance(ticks, bool) and ticks >= 0:
        return ticks * USD_PER_TICK
    return None


def from_image_response(body: Any) -> Result:
    """Map an images answer; a moderated item is the user's refusal, not a missing image."""
    if not isinstance(body, Mapping) or not isinstance(body.get("data"), list):
        raise UpstreamProtocolError(
            "xAI answered without an image list", provider=PROVIDER_ID, body=body
        )
    artifacts = []
    for item in body["data"]:
        if not isinstance(item, Mapping):
            continue
        if item.get("respect_moderation") is False:
            raise UpstreamRejectedError(
                MODERATED_IMAGE, provider=PROVIDER_ID, body=body, code="content_moderation"
            )
        revised = item.get("revised_prompt")
        revised_prompt = revised if isinstance(revised, str) and revised else None
        if isinstance(item.get("b64_json"), str) and item["b64_json"]:
            try:
                data = pybase64.b64decode(item["b64_json"], validate=True)
            except binascii.Error as exc:
                raise UpstreamProtocolError(
                    "xAI sent an image that is not valid base64", provider=PROVIDER_ID, body=body
                ) from exc
            artifacts.append(Artifact(data=data, revised_prompt=revised_prompt))
        elif isinstance(item.get("url"), str) and item["url"]:
            artifacts.append(Artifact(url=item["url"], revised_prompt=revised_prompt))
    if not artifacts:
        raise UpstreamProtocolError(
            "xAI answered without any image", provider=PROVIDER_ID, body=body
        )
    usage = body.get("usage")
    return Result(
        artifacts=tuple(artifacts),
        created=body["created"] if isinstance(body.get("created"), int) else None,
        reported_cost=reported_cost(body),
        extra={"usage": usage} if isinstance(usage, Mapping) else {},
        raw=redact(body),
    )


def read_video_status(body: Any) -> Result | None:
    """The finished video, or None while xAI is still rendering; raises if the job failed."""
    if body is None:
        return None  # xAI answers 202 with no body while a job is pending
    if not isinstance(body, Mapping):
        raise UpstreamProtocolError(
            "xAI answered a video status that is not an object", provider=PROVIDER_ID, body=body
        )
    response = body.get("response")
    video = (response.get("video") if isinstance(response, Mapping) else None) or body.get("video")
    status = body.get("status")
    if isinstance(video, Mapping):
        if video.get("respect_moderation") is False:
            raise UpstreamRejectedError(
                MODERATED_VIDEO, provider=PROVIDER_ID, body=body, code="content_moderation"
            )
        url = video.get("url")
        if isinstance(url, str) and url:
            return Result(
                artifacts=(Artifact(url=url, content_type="video/mp4"),),
                reported_cost=reported_cost(body),
                raw=redact(body),
            )
    if status in _PENDING or status is None:
        return None
    if status == "failed":
        message = _message(body.get("error")) or "xAI video generation failed"
        refused = mentions(message, _REFUSAL_HINTS)
        cls = UpstreamRejectedError if refused else UpstreamUnavailableError
        raise cls(message, provider=PROVIDER_ID, body=body, code="failed")
    if status == "expired":
        raise UpstreamTimeoutError(
            "xAI let the video request expire", provider=PROVIDER_ID, body=body, code="expired"
        )
    raise UpstreamProtocolError(
        f"Unexpected status: {status}", provider=PROVIDER_ID, body=body, code="unknown_status"
    )


def _message(error: Any) -> str | None:
    if isinstance(error, str) and error:
        return error
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        return str(error["message"]) or None
    return None


def error_from_response(status: int, body: Any) -> UpstreamError:
    """Classify an xAI error answer by its message first: statuses alone mislead here."""
    if isinstance(body, Mapping):
        message = _message(body.get("error")) or f"xAI answered HTTP {status}"
        raw_code = body.get("code")
        code = raw_code if isinstance(raw_code, str) else None
    else:
        message = body if isinstance(body, str) and body else f"xAI answered HTTP {status}"
        code = None
    cls: type[UpstreamError] | None = None
    if mentions(message, _REFUSAL_HINTS):
        cls = UpstreamRejectedError
    elif mentions(message, _OUR_KEY_HINTS):
        cls = UpstreamMisconfiguredError
    elif mentions(message, _BUSY_HINTS):
        cls = UpstreamUnavailableError
    elif mentions(message, _ACCOUNT_HINTS):
        cls = UpstreamRateLimitedError
    elif status == 404:
        cls = UpstreamMisconfiguredError  # our catalog names a model xAI does not serve
    if cls is None:
        return error_for_status(PROVIDER_ID, status, message, body, code)
    return cls(message, provider=PROVIDER_ID, status=status, body=body, code=code)


_ACCEPT_JSON = {"accept": "application/json"}


class GrokProvider(Provider):
    id = PROVIDER_ID
    key_env = "XAI_API_KEY"
    base_url_env = ("XAI_BASE_URL", "GROK_BASE_URL")
    default_base_url = "https://api.x.ai/v1"
    api_prefix = "/v1"
    modalities = frozenset({"image", "video"})
    image_inputs = frozenset({"single_data_uri"})
    #: Videos; images are one synchronous call, with nothing to resume.
    resumable = True

    async def generate(self, job: Job, target: Target) -> Result:
        key = self.require_credential("xAI API key")
        if job.modality != "video":
            answer = await self._submit(job, target, key)
            async with translate_errors(self.id):
                return self._scrubbed(from_image_response(answer))
        request_id = await submit_or_resume(
            job,
            partial(self._submit_video, job, target, key),
            vendor="xAI",
            to_ref=lambda request_id: make_ref(PROVIDER_ID, request_id=request_id),
            from_ref=lambda ref: ref_text(ref, "request_id", PROVIDER_ID),
        )
        async with translate_errors(self.id):
            while True:
                # poll_interval may be 0 in tests: sleep(0) still yields to the loop.
                await asyncio.sleep(self.poll_interval)
                answer = await poll_once(
                    partial(self._poll, f"{self.base_url}/videos/{request_id}", key),
                    provider=self.id,
                    interval=self.poll_interval,
                )
                finished = read_video_status(answer)
                if finished is not None:
                    return self._scrubbed(finished)

    async def _submit(self, job: Job, target: Target, key: str) -> Any:
        request = to_request(job, target)
        return await self.post_json(
            self.base_url + request.path,
            request.body,
            key=key,
            errors=error_from_response,
            headers=_ACCEPT_JSON,
        )

    async def _submit_video(self, job: Job, target: Target, key: str) -> str:
        """Submit a video job; return the `request_id` it is polled by."""
        answer = await self._submit(job, target, key)
        request_id = answer.get("request_id") if isinstance(answer, Mapping) else None
        if not isinstance(request_id, str) or not request_id:
            raise UpstreamProtocolError(
                "No request_id returned from xAI API", provider=self.id, body=answer
            )
        return request_id

    async def _poll(self, url: str, key: str) -> Any:
        poll = await self.send(
            "GET", url, key=key, errors=error_from_response, headers=_ACCEPT_JSON
        )
        # A pending job may answer 202 with no body at all.
        return response_json(self.id, poll) if poll.content else None

    def _scrubbed(self, result: Result) -> Result:
        # xAI never echoes our key in a success, but the usage log must not depend on that.
        return replace(result, raw=scrub(result.raw, self.credential))
