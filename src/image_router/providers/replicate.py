"""Replicate predictions API (spec §9.4 images, §9.5 videos).

A job becomes one prediction: `POST /models/{owner}/{name}/predictions` (or
`POST /predictions` with `version` for `owner/name:hash` upstreams) with `Prefer: wait`,
then `GET` on the prediction until it succeeds, fails or is canceled. Outputs are URLs the
gateway downloads. Resumable (`providers.resume`): a prediction still running when the
`Prefer: wait` window closes is referenced by its id and `urls.get`/`urls.cancel`; resuming
polls it again, and `cancel` works from the reference. `to_request`, `from_prediction`,
`prediction_error` and `error_from_response` are pure; `ReplicateProvider` only moves them
over HTTP.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import partial
from typing import Any
from urllib.parse import quote

import httpx

from image_router.providers.contract import Artifact, Job, Provider, Result, Target
from image_router.providers.errors import (
    UpstreamCancelledError,
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
    error_for_status,
    response_json,
    translate_errors,
)
from image_router.providers.inflight import InFlight
from image_router.providers.polling import poll_once
from image_router.providers.resume import make_ref, optional_text, ref_text, submit_or_resume
from image_router.providers.upstream_text import (
    ACCOUNT_LIMIT_PHRASES,
    loggable,
    mentions,
    scrub,
)

PROVIDER_ID = "replicate"

#: The stable error code clients see when a model's safety checker refused the job.
REFUSAL_CODE = "content_moderation"

_RUNNING = frozenset({"starting", "processing"})
_ENDED = frozenset({"failed", "canceled", "aborted"})
#: The video aspect ratios Kling takes on Replicate.
_ASPECT_RATIOS = frozenset({"16:9", "9:16", "1:1"})

# Spec §7.2 "switch provider" phrases: our Replicate account is throttled or out of money.
_ACCOUNT_LIMIT_PHRASES = (*ACCOUNT_LIMIT_PHRASES, "throttled")
# A model's safety checker refused the prompt, an input image or its own output.
_REFUSAL_PHRASES = (
    "nsfw",
    "flagged as sensitive",
    "(e005)",
    "safety",
    "content policy",
    "moderation",
    "inappropriate",
)


@dataclass(frozen=True)
class ReplicateRequest:
    """One prediction to create: `path` below the base URL and the JSON `body`."""

    path: str
    body: dict[str, Any]


def to_request(job: Job, target: Target) -> ReplicateRequest:
    """Map a job onto a prediction; upstreams with `:hash` go through `/predictions`."""
    if job.modality == "video":
        model, inputs = target.upstream, _video_inputs(job, target)
    else:
        model, inputs = _image_inputs(job, target)
    if ":" in model:
        return ReplicateRequest("/predictions", {"version": model, "input": inputs})
    return ReplicateRequest(f"/models/{model}/predictions", {"input": inputs})


def _image_inputs(job: Job, target: Target) -> tuple[str, dict[str, Any]]:
    model = target.upstream
    inputs: dict[str, Any] = {}
    if job.prompt:
        inputs["prompt"] = job.prompt
    options = target.options
    # Route token `reve`: one image edits it, several are remixed, each on its own model.
    if len(job.images) == 1:
        low = job.quality == "low" and options.get("edit_low_upstream")
        model = str(low or options.get("edit_upstream") or model)
        inputs["image"] = job.images[0].data_uri()
    elif job.images:
        model = str(options.get("remix_upstream") or model)
        inputs["reference_images"] = [image.data_uri() for image in job.images]
    if job.output_format:
        # Replicate's image models name JPEG "jpg".
        inputs["output_format"] = "jpg" if job.output_format == "jpeg" else job.output_format
    steps = options.get("num_inference_steps")
    if steps is not None:
        inputs["num_inference_steps"] = steps
    dimensions = job.dimensions
    if dimensions is not None:
        inputs["width"], inputs["height"] = dimensions
    return model, inputs


def _video_inputs(job: Job, target: Target) -> dict[str, Any]:
    inputs: dict[str, Any] = {"enhance_prompt": True}
    if job.prompt:
        inputs["prompt"] = job.prompt
    mode = target.options.get("mode")
    if mode is not None:
        inputs["mode"] = mode
    # The job is priced by its seconds, so they are sent (the reference sent none, §13.13).
    if job.seconds is not None:
        inputs["duration"] = int(job.seconds) if job.seconds.is_integer() else job.seconds
    if job.images:
        inputs["start_image"] = job.images[0].data_uri()
    else:
        # With a start image the video takes that image's shape.
        ratio = _aspect_ratio(job.dimensions)
        if ratio is not None:
            inputs["aspect_ratio"] = ratio
    return inputs


def _aspect_ratio(dimensions: tuple[int, int] | None) -> str | None:
    if dimensions is None or 0 in dimensions:
        return None
    width, height = dimensions
    divisor = math.gcd(width, height)
    ratio = f"{width // divisor}:{height // divisor}"
    return ratio if ratio in _ASPECT_RATIOS else None


# ---------------------------------------------------------------------------- answers


def from_prediction(body: Mapping[str, Any]) -> Result:
    """A succeeded prediction as a `Result`: its output URLs and billed compute time."""
    if body.get("status") != "succeeded":
        raise UpstreamProtocolError(
            f"Replicate prediction is {body.get('status')!r}, not succeeded",
            provider=PROVIDER_ID,
            body=loggable(body),
        )
    output = body.get("output")
    urls = [output] if isinstance(output, str) else output
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) and u for u in urls):
        raise UpstreamProtocolError(
            "Replicate prediction succeeded without output URLs",
            provider=PROVIDER_ID,
            body=loggable(body),
        )
    metrics = body.get("metrics")
    predict_time = metrics.get("predict_time") if isinstance(metrics, Mapping) else None
    has_time = isinstance(predict_time, int | float) and not isinstance(predict_time, bool)
    return Result(
        artifacts=tuple(Artifact(url=url) for url in urls),
        created=_epoch_seconds(body.get("created_at")),
        predict_seconds=Decimal(str(predict_time)) if has_time else None,
        # The reference hands this field to its clients (spec §2.8).
        extra={"replicate_predict_time": predict_time} if has_time else {},
        raw=loggable(body),
    )


def _epoch_seconds(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        return None


def prediction_error(body: Mapping[str, Any]) -> UpstreamError:
    """The error for a prediction that ended without output (failed, canceled, aborted)."""
    status = str(body.get("status"))
    error = body.get("error")
    message = str(error) if error else f"Replicate prediction {status}"
    args: dict[str, Any] = {"provider": PROVIDER_ID, "body": loggable(body)}
    if mentions(message, _REFUSAL_PHRASES):
        return UpstreamRejectedError(message, code=REFUSAL_CODE, **args)
    if mentions(message, _ACCOUNT_LIMIT_PHRASES):
        return UpstreamRateLimitedError(message, **args)
    return UpstreamUnavailableError(message, **args)


def error_from_response(status: int, body: Any, *, polling: bool = False) -> UpstreamError:
    """Classify an HTTP error answer (`{"title", "detail", "status"}` problem documents)."""
    problem = body if isinstance(body, Mapping) else {}
    title = problem.get("title")
    message = str(problem.get("detail") or title or f"Replicate answered HTTP {status}")
    args: dict[str, Any] = {"provider": PROVIDER_ID, "status": status, "body": body}
    # Checked first: an empty account may be refused with 403 and a "balance" message.
    if status in (402, 429) or mentions(message, _ACCOUNT_LIMIT_PHRASES):
        return UpstreamRateLimitedError(message, **args)
    if status in (401, 403):
        return UpstreamMisconfiguredError(message, **args)
    if polling and status == 404:
        return UpstreamUnavailableError(message, **args)
    # An unknown model or version is our catalog's mistake, not the user's.
    if status == 404 or (status == 422 and title == "Invalid version"):
        return UpstreamMisconfiguredError(message, **args)
    if mentions(message, _REFUSAL_PHRASES):
        return UpstreamRejectedError(message, code=REFUSAL_CODE, **args)
    return error_for_status(PROVIDER_ID, status, message, body)


def _prediction_from_ref(ref: Mapping[str, Any]) -> Mapping[str, Any]:
    """A running prediction as `_until_done` takes it, rebuilt from its reference (its
    URLs are checked against our host again, like the vendor's own)."""
    return {
        "id": ref_text(ref, "id", PROVIDER_ID),
        "status": "processing",
        "urls": {"get": optional_text(ref, "get_url"), "cancel": optional_text(ref, "cancel_url")},
    }


# ---------------------------------------------------------------------------- provider


class ReplicateProvider(Provider):
    id = PROVIDER_ID
    key_env = "REPLICATE_API_KEY"
    base_url_env = ("REPLICATE_BASE_URL",)
    default_base_url = "https://api.replicate.com/v1"
    api_prefix = "/v1"
    modalities = frozenset({"image", "video"})
    image_inputs = frozenset({"reve", "start_image"})
    resumable = True

    def __init__(self, http: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(http, **kwargs)
        self._in_flight = InFlight(partial(self._call, "POST"), vendor="Replicate")

    async def generate(self, job: Job, target: Target) -> Result:
        self.require_credential("Replicate API key")
        async with translate_errors(self.id):
            prediction = await submit_or_resume(
                job,
                partial(self._submit, job, target),
                vendor="Replicate",
                to_ref=self._ref,
                from_ref=_prediction_from_ref,
                stop=lambda running: self._call("POST", self._prediction_url(running, "/cancel")),
            )
            prediction = await self._until_done(job, prediction)
            result = from_prediction(prediction)
        return result

    async def cancel(self, job: Job, target: Target) -> bool:
        async with translate_errors(self.id):
            elsewhere = None
            if job.vendor_ref is not None:
                running = _prediction_from_ref(job.vendor_ref)
                elsewhere = self._prediction_url(running, "/cancel")
            return await self._in_flight.cancel(job, elsewhere)

    async def _submit(self, job: Job, target: Target) -> Mapping[str, Any]:
        request = to_request(job, target)
        return await self._call("POST", self.base_url + request.path, json=request.body, wait=True)

    def _ref(self, prediction: Mapping[str, Any]) -> dict[str, Any] | None:
        """The reference of a prediction still running (None: it ended within the wait)."""
        if prediction.get("status") not in _RUNNING:
            return None
        prediction_id = prediction.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise UpstreamProtocolError(
                "Replicate answered a running prediction without an id",
                provider=self.id,
                body=loggable(prediction),
            )
        return make_ref(
            PROVIDER_ID,
            id=prediction_id,
            get_url=self._prediction_url(prediction),
            cancel_url=self._prediction_url(prediction, "/cancel"),
        )

    async def _until_done(self, job: Job, prediction: Mapping[str, Any]) -> Mapping[str, Any]:
        abandoned = False
        if prediction.get("status") in _RUNNING:
            get_url = self._prediction_url(prediction)
            cancel_url = self._prediction_url(prediction, "/cancel")
            async with self._in_flight.running(job, cancel_url) as watch:
                while prediction.get("status") in _RUNNING:
                    await asyncio.sleep(self.poll_interval)
                    prediction = await poll_once(
                        partial(self._call, "GET", get_url, polling=True),
                        provider=self.id,
                        interval=self.poll_interval,
                    )
            abandoned = watch.abandoned
        status = prediction.get("status")
        if status == "succeeded":
            return prediction
        if abandoned:
            raise UpstreamCancelledError(
                "the Replicate prediction was canceled", provider=self.id, body=loggable(prediction)
            )
        if status in _ENDED:
            raise prediction_error(prediction)
        raise UpstreamProtocolError(
            f"Replicate answered an unknown prediction status {status!r}",
            provider=self.id,
            body=loggable(prediction),
        )

    def _prediction_url(self, prediction: Mapping[str, Any], suffix: str = "") -> str:
        """The prediction's URL, always on our configured host.

        Replicate's `urls.get`/`urls.cancel` are used when they point there; otherwise the
        URL is built from the id, so our key is never sent to another host.
        """
        urls = prediction.get("urls")
        given = urls.get("cancel" if suffix else "get") if isinstance(urls, Mapping) else None
        if isinstance(given, str) and given.startswith(self.base_url + "/"):
            return given
        prediction_id = prediction.get("id")
        if not isinstance(prediction_id, str) or not prediction_id:
            raise UpstreamProtocolError(
                "Replicate answered a running prediction without an id",
                provider=self.id,
                body=loggable(prediction),
            )
        return f"{self.base_url}/predictions/{quote(prediction_id, safe='')}{suffix}"

    async def _call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        wait: bool = False,
        polling: bool = False,
    ) -> Mapping[str, Any]:
        assert self.credential is not None
        response = await self.send(
            method,
            url,
            key=self.credential,
            errors=partial(error_from_response, polling=polling),
            # Replicate holds the answer up to 60 s, which often spares every poll.
            headers={"Prefer": "wait"} if wait else None,
            json=json,
        )
        parsed = response_json(self.id, response)
        if not isinstance(parsed, Mapping):
            raise UpstreamProtocolError(
                "Replicate answered with a body that is not an object",
                provider=self.id,
                status=response.status_code,
                body=loggable(parsed),
            )
        scrubbed: Mapping[str, Any] = scrub(parsed, self.credential)
        return scrubbed
