"""WaveSpeedAI v3 API (spec §9.8 images, §9.9 videos).

A job is one task: `POST /{model}` answers `{"code", "message", "data": prediction}`.
Images ask for sync mode, so the answer is usually already `completed`; videos (and images
whose sync answer is still running) are polled at `data.urls.get` until `completed` or
`failed`. Outputs are URLs the gateway downloads. An abandoned task is deleted
(`DELETE /predictions/{id}`), which is how WaveSpeed cancels. Resumable
(`providers.resume`): a task still running after the submit is referenced by its id and
its result and delete URLs; resuming polls it again, and `cancel` works from the reference.

`to_request`, `from_prediction`, `task_error` and `error_from_response` are pure;
`WavespeedProvider` only moves them over HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
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
from image_router.providers.resume import make_ref, ref_text, submit_or_resume
from image_router.providers.upstream_text import (
    ACCOUNT_LIMIT_PHRASES,
    loggable,
    mentions,
    scrub,
)

PROVIDER_ID = "wavespeed"

#: WaveSpeed's task error code for content moderation.
MODERATION_CODE = 1200
#: The stable error code clients see when a model's safety checker refused the job.
REFUSAL_CODE = "content_moderation"

_RUNNING = frozenset({"created", "processing"})

# The model's safety checker refused the prompt, the input image or its own output.
_REFUSAL_PHRASES = ("nsfw", "sensitive", "moderation", "safety", "content policy")


@dataclass(frozen=True)
class WavespeedRequest:
    """One task to submit: the model path below the base URL and the JSON body."""

    model: str
    body: dict[str, Any]


def to_request(job: Job, target: Target) -> WavespeedRequest:
    """Map a job onto a task; an input image may switch the model (`image_upstream`)."""
    model = target.upstream
    image_upstream = target.options.get("image_upstream")
    if job.images and isinstance(image_upstream, str) and image_upstream:
        model = image_upstream
    body: dict[str, Any] = {}
    if job.prompt:
        body["prompt"] = job.prompt
    if job.images:
        # Route token `single_data_uri`; video jobs keep their first image only.
        body["image"] = job.images[0].data_uri()
    if job.modality == "video":
        if job.seconds is not None:
            body["duration"] = int(job.seconds) if job.seconds.is_integer() else job.seconds
        dims = job.dimensions
        # Only models priced by size take one (`send_size`); WaveSpeed writes it "W*H".
        if target.options.get("send_size") is True and dims is not None:
            body["size"] = f"{dims[0]}*{dims[1]}"
    else:
        body["enable_base64_output"] = False
        body["enable_sync_mode"] = True
        body["output_format"] = job.output_format or "webp"
    return WavespeedRequest(model, body)


def prediction_of(body: Any) -> Mapping[str, Any]:
    """The `data` of a WaveSpeed envelope; an error envelope raises its error."""
    if not isinstance(body, Mapping):
        raise UpstreamProtocolError(
            "WaveSpeed answered with a body that is not an object",
            provider=PROVIDER_ID,
            body=loggable(body),
        )
    data = body.get("data")
    if isinstance(data, Mapping):
        return data
    code = body.get("code")
    # Some errors come back as HTTP 200 with the status only in the envelope.
    if isinstance(code, int) and code >= 400:
        raise error_from_response(code, body)
    raise UpstreamProtocolError(
        "WaveSpeed answered without a task", provider=PROVIDER_ID, body=loggable(body)
    )


def from_prediction(prediction: Mapping[str, Any], body: Any = None) -> Result:
    """A completed task as a `Result` (its output URLs)."""
    raw = loggable(body if body is not None else prediction)
    if prediction.get("status") != "completed":
        raise UpstreamProtocolError(
            f"WaveSpeed task is {prediction.get('status')!r}, not completed",
            provider=PROVIDER_ID,
            body=raw,
        )
    outputs = prediction.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise UpstreamProtocolError(
            "WaveSpeed task completed without outputs", provider=PROVIDER_ID, body=raw
        )
    if not all(isinstance(url, str) and url for url in outputs):
        raise UpstreamProtocolError(
            "WaveSpeed task has an output that is not a URL", provider=PROVIDER_ID, body=raw
        )
    return Result(
        artifacts=tuple(Artifact(url=url) for url in outputs),
        created=_epoch_seconds(prediction.get("created_at")),
        raw=raw,
    )


def _epoch_seconds(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(datetime.fromisoformat(value).timestamp())
    except ValueError:
        return None


def task_error(prediction: Mapping[str, Any], body: Any = None) -> UpstreamError:
    """The error of a `failed` task: a safety refusal is the user's, the rest is ours."""
    message = str(prediction.get("error") or "WaveSpeed task failed")
    args: dict[str, Any] = {
        "provider": PROVIDER_ID,
        "body": loggable(body if body is not None else prediction),
    }
    if prediction.get("code") == MODERATION_CODE or mentions(message, _REFUSAL_PHRASES):
        return UpstreamRejectedError(message, code=REFUSAL_CODE, **args)
    if mentions(message, ACCOUNT_LIMIT_PHRASES):
        return UpstreamRateLimitedError(message, **args)
    return UpstreamUnavailableError(message, **args)


def error_from_response(status: int, body: Any, *, polling: bool = False) -> UpstreamError:
    """Classify an error answer (`{"code", "message"}` envelopes)."""
    envelope = body if isinstance(body, Mapping) else {}
    message = str(
        envelope.get("message") or envelope.get("error") or f"WaveSpeed answered HTTP {status}"
    )
    args: dict[str, Any] = {"provider": PROVIDER_ID, "status": status, "body": loggable(body)}
    # Checked first: an empty account may be refused with 403 and a "balance" message.
    if status in (402, 429) or mentions(message, ACCOUNT_LIMIT_PHRASES):
        return UpstreamRateLimitedError(message, **args)
    if status in (401, 403):
        return UpstreamMisconfiguredError(message, **args)
    if status == 404:
        # Submitting: the catalog names a model WaveSpeed does not have. Polling: the
        # task vanished; either way not the user's fault.
        cls = UpstreamUnavailableError if polling else UpstreamMisconfiguredError
        return cls(message, **args)
    if mentions(message, _REFUSAL_PHRASES):
        return UpstreamRejectedError(message, code=REFUSAL_CODE, **args)
    return error_for_status(PROVIDER_ID, status, message, args["body"])


def _envelope_from_ref(ref: Mapping[str, Any]) -> Mapping[str, Any]:
    """A running task's envelope as `_until_done` takes it, rebuilt from its reference (the
    result URL is checked against our host again, like the vendor's own `urls.get`)."""
    task = {
        "id": ref_text(ref, "id", PROVIDER_ID),
        "status": "processing",
        "urls": {"get": ref_text(ref, "result_url", PROVIDER_ID)},
    }
    return {"code": 200, "message": "resumed", "data": task}


# ---------------------------------------------------------------------------- provider


class WavespeedProvider(Provider):
    id = PROVIDER_ID
    key_env = "WAVESPEED_API_KEY"
    base_url_env = ("WAVESPEED_BASE_URL",)
    default_base_url = "https://api.wavespeed.ai/api/v3"
    api_prefix = "/api/v3"
    modalities = frozenset({"image", "video"})
    image_inputs = frozenset({"single_data_uri"})
    resumable = True

    def __init__(self, http: httpx.AsyncClient, **kwargs: Any) -> None:
        super().__init__(http, **kwargs)
        self._in_flight = InFlight(partial(self._call, "DELETE"), vendor="WaveSpeed")

    async def generate(self, job: Job, target: Target) -> Result:
        self.require_credential("WaveSpeed API key")
        async with translate_errors(self.id):
            body = await submit_or_resume(
                job,
                partial(self._submit, job, target),
                vendor="WaveSpeed",
                to_ref=self._ref,
                from_ref=_envelope_from_ref,
                stop=lambda running: self._call("DELETE", self._task_url(prediction_of(running))),
            )
            body = await self._until_done(job, body)
            result = from_prediction(prediction_of(body), body)
        return result

    async def cancel(self, job: Job, target: Target) -> bool:
        async with translate_errors(self.id):
            elsewhere = None
            if job.vendor_ref is not None:
                elsewhere = self._task_url(prediction_of(_envelope_from_ref(job.vendor_ref)))
            return await self._in_flight.cancel(job, elsewhere)

    async def _submit(self, job: Job, target: Target) -> Any:
        request = to_request(job, target)
        return await self._call("POST", f"{self.base_url}/{request.model}", json=request.body)

    def _ref(self, body: Any) -> dict[str, Any] | None:
        """The reference of a task still running (None: it is done, or failed, already)."""
        prediction = prediction_of(body)
        if prediction.get("status") not in _RUNNING:
            return None
        self._task_url(prediction)  # raises when the task has no id
        return make_ref(
            PROVIDER_ID,
            id=str(prediction.get("id") or prediction.get("task_id")),
            result_url=self._task_url(prediction, "/result"),
        )

    async def _until_done(self, job: Job, body: Any) -> Any:
        prediction = prediction_of(body)
        abandoned = False
        if prediction.get("status") in _RUNNING:
            result_url = self._task_url(prediction, "/result")
            # A deleted task is gone: its poll fails rather than saying "canceled".
            async with self._in_flight.running(
                job, self._task_url(prediction), gone_when_stopped=True
            ) as watch:
                while prediction.get("status") in _RUNNING:
                    await asyncio.sleep(self.poll_interval)
                    body, prediction = await poll_once(
                        partial(self._poll, result_url),
                        provider=self.id,
                        interval=self.poll_interval,
                    )
            abandoned = watch.abandoned
        if abandoned:
            raise UpstreamCancelledError(
                "the WaveSpeed task was canceled", provider=self.id, body=loggable(body)
            )
        status = prediction.get("status")
        if status == "completed":
            return body
        if status == "failed":
            raise task_error(prediction, body)
        raise UpstreamProtocolError(
            f"WaveSpeed answered an unknown task status {status!r}",
            provider=self.id,
            body=loggable(body),
        )

    def _task_url(self, prediction: Mapping[str, Any], suffix: str = "") -> str:
        """The task's URL, always on our configured host.

        `urls.get` is used for results when it points there; otherwise the URL is built
        from the id, so our key is never sent to another host.
        """
        urls = prediction.get("urls")
        given = urls.get("get") if isinstance(urls, Mapping) and suffix else None
        if isinstance(given, str) and given.startswith(self.base_url + "/"):
            return given
        task_id = prediction.get("id") or prediction.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise UpstreamProtocolError(
                "Unable to determine polling URL from Wavespeed response",
                provider=self.id,
                body=loggable(prediction),
            )
        return f"{self.base_url}/predictions/{quote(task_id, safe='')}{suffix}"

    async def _poll(self, result_url: str) -> tuple[Any, Mapping[str, Any]]:
        """One status check: the envelope and its task (an error envelope raises)."""
        body = await self._call("GET", result_url, polling=True)
        return body, prediction_of(body)

    async def _call(self, method: str, url: str, *, json: Any = None, polling: bool = False) -> Any:
        assert self.credential is not None
        response = await self.send(
            method,
            url,
            key=self.credential,
            errors=partial(error_from_response, polling=polling),
            json=json,
        )
        return scrub(response_json(self.id, response), self.credential)
