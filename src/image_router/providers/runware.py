"""Runware task API (spec §9.1, §9.2): one `POST <base>` with a JSON array of tasks.

Images run synchronously (`imageInference`, or `imageUpscale` / `imageBackgroundRemoval` as
the route says); videos are submitted with `deliveryMethod: "async"` and polled with
`getResponse` until they succeed or fail. `taskUUID` is the job id, and `includeCost`
makes Runware report the cost that `upstream_cost` prices settle on. Which error a failure
is, is `runware_errors`'s to say.

How the route takes input images is its `image_input` token (in `target.options`); the
other route options are listed in docs/catalog.md. Runware has no call that stops a task,
so an abandoned video simply stops being polled; a failed status check is retried
(`polling.poll_once`) rather than abandoning it. Videos are resumable
(`providers.resume`): the reference is the taskUUID, which `getResponse` polls.

Deliberate differences from the reference: every failure raises (it never bills a "soft
failure", §2.9); `jpeg` is sent as Runware's `JPG`; background removal and upscaling get
no prompt or size (Runware's documented parameters for those tasks); the data URI of a
single input image carries its real type, not always `image/png` (§3.8 quirk).
"""

from __future__ import annotations

import asyncio
import binascii
import uuid
from collections.abc import Mapping
from decimal import Decimal
from functools import partial
from typing import Any

import pybase64

from image_router.providers.contract import Artifact, Job, Provider, Result, Target
from image_router.providers.errors import (
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRejectedError,
    redact,
    response_json,
    translate_errors,
)
from image_router.providers.polling import poll_once
from image_router.providers.resume import make_ref, ref_text, submit_or_resume
from image_router.providers.runware_dimensions import image_task_size, video_task_size
from image_router.providers.runware_errors import (
    MISSING_IMAGE_MESSAGE,
    PROVIDER_ID,
    error_from_response,
)
from image_router.providers.upstream_text import usd_amount

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
        raise _rejected(MISSING_IMAGE_MESSAGE, "image_required")
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
                data=pybase64.b64decode(encoded, validate=True), content_type=content_type
            )
        except binascii.Error as exc:
            raise UpstreamProtocolError(
                "Runware sent an image that is not valid base64", provider=PROVIDER_ID, body=body
            ) from exc
    return None


def _cost(items: list[Mapping[str, Any]]) -> Decimal | None:
    """The summed `cost` of the items; None when Runware reported none."""
    costs = [cost for item in items if (cost := usd_amount(item.get("cost"))) is not None]
    return sum(costs, Decimal(0)) if costs else None


def _misconfigured(message: str) -> UpstreamMisconfiguredError:
    return UpstreamMisconfiguredError(message, provider=PROVIDER_ID, code="route_option")


def _rejected(message: str, code: str) -> UpstreamRejectedError:
    return UpstreamRejectedError(message, provider=PROVIDER_ID, code=code)


# ---------------------------------------------------------------------------- provider


class RunwareProvider(Provider):
    id = PROVIDER_ID
    key_env = "RUNWARE_API_KEY"
    base_url_env = ("RUNWARE_BASE_URL",)
    default_base_url = "https://api.runware.ai/v1"
    api_prefix = "/v1"
    modalities = frozenset({"image", "video"})
    image_inputs = frozenset(IMAGE_PLACES) | VIDEO_TOKENS
    #: Videos; images are one synchronous call, with nothing to resume.
    resumable = True

    async def generate(self, job: Job, target: Target) -> Result:
        self.require_credential("Runware API key")
        async with translate_errors(self.id):
            if job.modality == "image":
                task_uuid = task_uuid_for(job)
                tasks = to_request(job, target, task_uuid)
                body = await self._send(tasks, task_uuid)
                return image_result(body, task_uuid, tasks[0]["outputFormat"])
            task_uuid = await submit_or_resume(
                job,
                partial(self._submit_video, job, target),
                vendor="Runware",
                to_ref=lambda task_uuid: make_ref(PROVIDER_ID, task_uuid=task_uuid),
                from_ref=lambda ref: ref_text(ref, "task_uuid", PROVIDER_ID),
            )
            while True:
                # Also yields to the loop when the interval is 0, so a cancel can land.
                await asyncio.sleep(self.poll_interval)
                answer = await poll_once(
                    partial(self._send, poll_request(task_uuid), task_uuid),
                    provider=self.id,
                    interval=self.poll_interval,
                )
                outcome = video_outcome(answer, task_uuid)
                if outcome is not None:
                    return outcome

    async def _submit_video(self, job: Job, target: Target) -> str:
        """Submit the video task (delivered asynchronously); return its taskUUID."""
        task_uuid = task_uuid_for(job)
        await self._send(to_request(job, target, task_uuid), task_uuid)
        return task_uuid

    async def _send(self, tasks: list[dict[str, Any]], task_uuid: str) -> Mapping[str, Any]:
        assert self.credential is not None
        response = await self.send(
            "POST",
            self.base_url,
            key=self.credential,
            errors=partial(error_from_response, task_uuid=task_uuid),
            json=tasks,
        )
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
