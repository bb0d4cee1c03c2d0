"""Runware task API (spec §9.1, §9.2): one `POST <base>` with a JSON array of tasks.

Images run synchronously (`imageInference`, or `imageUpscale` / `imageBackgroundRemoval` as
the route says); videos are submitted with `deliveryMethod: "async"` and polled with
`getResponse` until they succeed or fail. `taskUUID` is the job id, and `includeCost`
makes Runware report the cost that `upstream_cost` prices settle on.

How the route takes input images is its `image_input` token (in `target.options`); the
other route options are listed in docs/catalog.md. Runware has no call that stops a task,
so an abandoned video simply stops being polled.

Deliberate differences from the reference: every failure raises (it never bills a "soft
failure", §2.9); `jpeg` is sent as Runware's `JPG`; background removal and upscaling get
no prompt or size (Runware's documented parameters for those tasks); the data URI of a
single input image carries its real type, not always `image/png` (§3.8 quirk).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from image_router.providers.base import (
    Artifact,
    Job,
    Provider,
    Result,
    Target,
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
from image_router.providers.runware_dimensions import image_task_size, video_task_size

PROVIDER_ID = "runware"
# image_input token → the task field its data URIs go to, and whether it takes one image.
IMAGE_PLACES = {
    "seed_image": ("seedImage", True),
    "reference_images": ("referenceImages", False),
    "reference_images_1024": ("referenceImages", False),
    "inputs_reference_images": ("inputs.referenceImages", False),
    "inputs_references_1024": ("inputs.references", False),
    "input_image": ("inputImage", True),
    "inputs_image": ("inputs.image", True),
}
VIDEO_TOKENS = frozenset({"frame_image", "inputs_frame_images"})
TASK_TYPES = frozenset({"imageInference", "imageUpscale", "imageBackgroundRemoval"})
# Client spelling → Runware's; both jpeg spellings are Runware's JPG.
OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPG", "jpg": "JPG", "webp": "WEBP"}
CONTENT_TYPES = {
    "PNG": "image/png",
    "JPG": "image/jpeg",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
}

# Spec §7.2's strings, lower-cased, by what they mean for us; first match wins. Each rule:
# Runware error codes, HTTP statuses, message fragments, the error raised.
_CLASSES: tuple[
    tuple[frozenset[str], frozenset[int], tuple[str, ...], type[UpstreamError]], ...
] = (
    (
        frozenset({"invalidProviderContent"}),
        frozenset(),
        ("content moderation", "moderation system", "safety system", "nsfw"),
        UpstreamRejectedError,
    ),
    (
        # Our key, or a model our catalog names that Runware does not (or no longer) serve.
        frozenset({"invalidApiKey", "invalidModel"}),
        frozenset({401, 403}),
        ("invalid api key", "requires billing to be enabled", "invalid value for 'model' param"),
        UpstreamMisconfiguredError,
    ),
    (
        # Our account is out of money or requests: another route may still work.
        frozenset({"insufficientCredits"}),
        frozenset({402, 429}),
        (
            *("insufficient_quota", "usage_limit_exceeded", "credit", "balance", "quota"),
            *("rate_limit_exceeded", "too many requests", "rate limit exceeded"),
            *("high demand for this model", "high concurrency usage"),
        ),
        UpstreamRateLimitedError,
    ),
    (
        frozenset({"timeoutProvider"}),
        frozenset(),
        ("task processing timeout", "deadline expired", "504 gateway time-out"),
        UpstreamTimeoutError,
    ),
    (
        frozenset(),
        frozenset(),
        (
            *("unknown error", "try again later", "overloaded", "maximum capacity"),
            *("internal error encountered", "inference error occurred", "econnreset"),
            *("online_prediction_requests_per_base_model", "processing (stuck?)"),
            *("is not valid json", "the operation was cancelled", "returned an invalid response"),
            "bytedance responded with an error. the provider returned the .",
            "an error has occurred please read documentation",
        ),
        UpstreamUnavailableError,
    ),
)
# The reference renames Runware's parameters to the ones our clients sent (§9.1).
_RENAMES = (
    ("positivePrompt", "prompt"),
    ("Positive prompt", "Prompt"),
    ("seedImage", "image"),
    ("maskImage", "mask"),
)
_MISSING_IMAGE_MESSAGE = "Image input is missing for image-to-image generation."
_MISSING_IMAGE = (
    "Missing required parameter 'referenceImages'.",
    "Missing required parameter '[inputs][referenceImages]'.",
)


# ---------------------------------------------------------------------------- requests


def task_uuid_for(job: Job) -> str:
    """The job id when it is a UUID (Runware insists), else a fresh one."""
    try:
        return str(uuid.UUID(job.job_id))
    except ValueError:
        return str(uuid.uuid4())


def to_request(job: Job, target: Target, task_uuid: str) -> list[dict[str, Any]]:
    """The request body: Runware always takes an array of tasks, here exactly one."""
    if job.modality == "video":
        return [video_task(job, target, task_uuid)]
    return [image_task(job, target, task_uuid)]


def image_task(job: Job, target: Target, task_uuid: str) -> dict[str, Any]:
    options = target.options
    task_type = options.get("task_type") or "imageInference"
    if task_type not in TASK_TYPES:
        raise _misconfigured(f"unknown Runware task_type {task_type!r}")
    fmt = options.get("output_format") or OUTPUT_FORMATS.get((job.output_format or "").lower())
    task: dict[str, Any] = {
        "taskType": task_type,
        "taskUUID": task_uuid,
        "model": _model(job, target),
        "outputType": "URL",
        "outputFormat": fmt or "WEBP",
        "includeCost": True,
    }
    _add_knobs(task, options)
    if job.images:
        _add_images(task, job, options)
    elif job.mask is not None:
        raise _rejected("A mask needs an image to edit", "mask_without_image")
    elif task_type != "imageInference":
        raise _rejected(_MISSING_IMAGE_MESSAGE, "image_required")
    if job.mask is not None:
        task["maskImage"] = job.mask.data_uri()
    if task_type == "imageInference":
        task["positivePrompt"] = job.prompt
        task["numberResults"] = 1
        size = image_task_size(job, options)
        if size is not None and options.get("send_size", True) is not False:
            task["width"], task["height"] = size
    return task


def video_task(job: Job, target: Target, task_uuid: str) -> dict[str, Any]:
    options = target.options
    task: dict[str, Any] = {
        "taskType": "videoInference",
        "taskUUID": task_uuid,
        "deliveryMethod": "async",
        "positivePrompt": job.prompt,
        "model": _model(job, target),
        "outputFormat": "mp4",
        "numberResults": 1,
        "includeCost": True,
    }
    if job.seconds is not None:
        task["duration"] = int(job.seconds) if job.seconds == int(job.seconds) else job.seconds
    settings = options.get("provider_settings")
    if isinstance(settings, Mapping):
        # Catalog tables are read-only views; JSON needs plain dicts.
        task["providerSettings"] = {str(k): v for k, v in settings.items()}
    size = video_task_size(job, options)
    if size is not None:
        task["width"], task["height"] = size
    if job.images:
        # Video routes take one frame: the first upload (reference behaviour).
        frame = job.images[0].data_uri()
        token = options.get("image_input")
        if token == "frame_image":
            task["frameImages"] = [{"inputImage": frame}]
        elif token == "inputs_frame_images":
            task["inputs"] = {"frameImages": [{"image": frame}]}
        else:
            raise _misconfigured(f"Runware video routes cannot take image_input {token!r}")
    _add_knobs(task, options)
    return task


def poll_request(task_uuid: str) -> list[dict[str, Any]]:
    return [{"taskType": "getResponse", "taskUUID": task_uuid}]


def _model(job: Job, target: Target) -> str:
    image_upstream = target.options.get("image_upstream")
    if job.images and isinstance(image_upstream, str) and image_upstream:
        return image_upstream
    return target.upstream


def _add_knobs(task: dict[str, Any], options: Mapping[str, Any]) -> None:
    """Quality mappings: a value of None means "do not send"."""
    for key in ("steps", "acceleration"):
        if options.get(key) is not None:
            task[key] = options[key]
    if options.get("openai_quality") is not None:
        task["providerSettings"] = {"openai": {"quality": options["openai_quality"]}}


def _add_images(task: dict[str, Any], job: Job, options: Mapping[str, Any]) -> None:
    """Put the uploads where the route's `image_input` token says."""
    token = options.get("image_input")
    if token not in IMAGE_PLACES:
        raise _misconfigured(f"Runware image routes cannot take image_input {token!r}")
    field, single = IMAGE_PLACES[token]
    uris = [image.data_uri() for image in job.images]
    if single and len(uris) > 1:
        raise _rejected("This model supports only one image input", "too_many_images")
    value = uris[0] if single else uris
    if field.startswith("inputs."):
        task["inputs"] = {field.removeprefix("inputs."): value}
    else:
        task[field] = value
    if token == "seed_image" and options.get("strength") is not None:
        task["strength"] = options["strength"]


# ---------------------------------------------------------------------------- answers


def image_result(body: Mapping[str, Any], task_uuid: str, output_format: str) -> Result:
    """The images of our task (the first item when none carries our taskUUID)."""
    _raise_task_error(body, task_uuid)
    items = [item for item in body["data"] if isinstance(item, Mapping)]
    ours = [item for item in items if item.get("taskUUID") == task_uuid] or items[:1]
    artifacts = [a for a in (_image_artifact(i, output_format, body) for i in ours) if a]
    if not artifacts:
        raise UpstreamProtocolError(
            "Runware answered without an image", provider=PROVIDER_ID, body=body
        )
    return Result(artifacts=tuple(artifacts), reported_cost=_cost(ours), raw=redact(body))


def video_outcome(body: Mapping[str, Any], task_uuid: str) -> Result | None:
    """A finished video, or None while Runware is still working; failures raise."""
    _raise_task_error(body, task_uuid)
    for item in body.get("data") or ():
        if not isinstance(item, Mapping) or item.get("taskUUID") != task_uuid:
            continue
        if item.get("status") == "success":
            url = item.get("videoURL") or item.get("mediaURL")
            if not isinstance(url, str) or not url:
                raise UpstreamProtocolError(
                    "Runware finished the video without a URL", provider=PROVIDER_ID, body=body
                )
            artifact = Artifact(url=url, content_type="video/mp4")
            return Result(artifacts=(artifact,), reported_cost=_cost([item]), raw=redact(body))
        if item.get("status") == "error":
            raise error_from_response(200, {"errors": [item]}, task_uuid)
    return None


def _raise_task_error(body: Mapping[str, Any], task_uuid: str) -> None:
    """A 2xx answer may still list our task under `errors`."""
    errors = body.get("errors")
    if isinstance(errors, list) and any(
        isinstance(e, Mapping) and e.get("taskUUID") == task_uuid for e in errors
    ):
        raise error_from_response(200, body, task_uuid)


def _image_artifact(item: Mapping[str, Any], fmt: str, body: Any) -> Artifact | None:
    content_type = CONTENT_TYPES.get(fmt)
    url = item.get("imageURL") or item.get("imageDataURI")
    if isinstance(url, str) and url:
        return Artifact(url=url, content_type=content_type)
    encoded = item.get("imageBase64Data")
    if isinstance(encoded, str) and encoded:
        try:
            return Artifact(
                data=base64.b64decode(encoded, validate=True), content_type=content_type
            )
        except binascii.Error as exc:
            raise UpstreamProtocolError(
                "Runware sent an image that is not valid base64", provider=PROVIDER_ID, body=body
            ) from exc
    return None


def _cost(items: list[Mapping[str, Any]]) -> Decimal | None:
    """The summed `cost` of the items; None when Runware reported none."""
    costs = []
    for item in items:
        value = item.get("cost")
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            continue
        try:
            cost = Decimal(str(value))
        except InvalidOperation:
            continue
        if cost.is_finite() and cost >= 0:
            costs.append(cost)
    return sum(costs, Decimal(0)) if costs else None


# ---------------------------------------------------------------------------- errors


def error_from_response(status: int, body: Any, task_uuid: str | None = None) -> UpstreamError:
    """Classify Runware's `{"errors": [...]}` (or an `{"error": ...}`) by the §7.2 rules."""
    entry = _error_entry(body, task_uuid)
    code = entry.get("code") if isinstance(entry.get("code"), str) else None
    message = _client_message(entry, code)
    text = message.lower()
    # Whatever Runware calls it, a refused `model` is our catalog's mistake, not the user's.
    kind = "invalidModel" if entry.get("parameter") == "model" else code
    found = [c for k, s, hints, c in _CLASSES if kind in k or status in s or _has(text, hints)]
    # A task error inside a 2xx answer is about this job's input unless shown otherwise.
    cls = found[0] if found else type(error_for_status(PROVIDER_ID, max(status, 400), message))
    return cls(message, provider=PROVIDER_ID, status=status, body=body, code=code)


def _has(text: str, hints: tuple[str, ...]) -> bool:
    return any(hint in text for hint in hints)


def _error_entry(body: Any, task_uuid: str | None) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        return {"message": body} if isinstance(body, str) and body else {}
    errors = body.get("errors")
    if isinstance(errors, list):
        entries = [e for e in errors if isinstance(e, Mapping)]
        ours = [e for e in entries if task_uuid and e.get("taskUUID") == task_uuid]
        if ours or entries:
            return (ours or entries)[0]
    error = body.get("error")
    if isinstance(error, Mapping):
        return error
    if isinstance(error, str):
        return {"message": error}
    return body if isinstance(body.get("message"), str) else {}


def _client_message(entry: Mapping[str, Any], code: str | None) -> str:
    message = entry.get("message")
    text = message if isinstance(message, str) and message else "Runware generation failed"
    if any(missing in text for missing in _MISSING_IMAGE):
        text = _MISSING_IMAGE_MESSAGE
    for ours, theirs in _RENAMES:
        text = text.replace(ours, theirs, 1)
    content = entry.get("responseContent")
    more = "Additional information below." in text
    if code == "providerError" and more and isinstance(content, str) and content:
        return content
    if code in ("providerError", "invalidProviderContent") and isinstance(content, Mapping):
        data = content.get("data")
        detail = data.get("task_status_msg") if isinstance(data, Mapping) else None
        if isinstance(detail, str) and detail:
            return detail
    return text


def _misconfigured(message: str) -> UpstreamMisconfiguredError:
    return UpstreamMisconfiguredError(message, provider=PROVIDER_ID, code="route_option")


def _rejected(message: str, code: str) -> UpstreamRejectedError:
    return UpstreamRejectedError(message, provider=PROVIDER_ID, code=code)


# ---------------------------------------------------------------------------- provider


class RunwareProvider(Provider):
    id = PROVIDER_ID
    default_base_url = "https://api.runware.ai/v1"
    modalities = frozenset({"image", "video"})
    image_inputs = frozenset(IMAGE_PLACES) | VIDEO_TOKENS

    async def generate(self, job: Job, target: Target) -> Result:
        if not self.credential:
            raise UpstreamMisconfiguredError("no Runware API key is configured", provider=self.id)
        task_uuid = task_uuid_for(job)
        async with translate_errors(self.id):
            tasks = to_request(job, target, task_uuid)
            body = await self._send(tasks, task_uuid)
            if job.modality == "image":
                return image_result(body, task_uuid, tasks[0]["outputFormat"])
            while True:
                # Also yields to the loop when the interval is 0, so a cancel can land.
                await asyncio.sleep(self.poll_interval)
                outcome = video_outcome(
                    await self._send(poll_request(task_uuid), task_uuid), task_uuid
                )
                if outcome is not None:
                    return outcome

    async def _send(self, tasks: list[dict[str, Any]], task_uuid: str) -> Mapping[str, Any]:
        response = await self.http.post(
            self.base_url,
            headers={"Authorization": f"Bearer {self.credential}"},
            json=tasks,
        )
        if response.is_error:
            try:
                error_body: Any = response.json()
            except ValueError:
                error_body = response.text[:500]
            raise error_from_response(response.status_code, error_body, task_uuid)
        body = response_json(self.id, response)
        if isinstance(body, Mapping) and isinstance(body.get("data"), list):
            return body
        if isinstance(body, Mapping) and ("errors" in body or "error" in body):
            raise error_from_response(response.status_code, body, task_uuid)
        raise UpstreamProtocolError(
            "Runware answered without a data array",
            provider=self.id,
            status=response.status_code,
            body=body,
        )
