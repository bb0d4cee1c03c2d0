"""Veo videos on Vertex AI, for the Vertex adapter (spec §9.15).

A job is submitted with `:predictLongRunning` (`veo_body`) and its operation polled with
`:fetchPredictOperation` (`wait_for_operation`) until it is done; the videos come back
inline as base64. `VertexProvider` owns the HTTP calls and the cancellation. Resumable
(`providers.resume`): an operation is referenced by its model and name (`veo_ref`).

This module also holds the adapter's id and the small answer-reading helpers the image
half of the adapter uses, so that `vertex` imports this module and never the reverse.
"""

from __future__ import annotations

import asyncio
import binascii
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import pybase64

from image_router.providers.contract import Artifact, Job, Result
from image_router.providers.errors import (
    UpstreamCancelledError,
    UpstreamProtocolError,
    UpstreamRejectedError,
    redact,
)
from image_router.providers.polling import poll_once
from image_router.providers.resume import make_ref, ref_text
from image_router.providers.upstream_text import expect_object
from image_router.providers.vertex_auth import operation_error

PROVIDER_ID: Final = "vertex"


# ---------------------------------------------------------------------------- mapping


def veo_body(job: Job, model: str) -> dict[str, Any]:
    instance: dict[str, Any] = {"prompt": job.prompt}
    if job.images:
        first = job.images[0]
        instance["image"] = {"bytesBase64Encoded": first.b64(), "mimeType": first.content_type}
    aspect_ratio, resolution = "16:9", "720p"
    dims = job.dimensions
    if dims is not None:
        width, height = dims
        if width * 9 == height * 16:
            aspect_ratio = "16:9"
        elif width * 16 == height * 9:
            aspect_ratio = "9:16"
        else:
            raise rejected(f"Unsupported size '{job.size}' for model '{model}'", "invalid_size")
        resolution = f"{min(dims)}p"
    # Veo asks for explicit consent to people of all ages; with a start image only adults.
    everyone = not job.images and model.startswith(("veo-2", "veo-3"))
    parameters: dict[str, Any] = {
        "aspectRatio": aspect_ratio,
        "personGeneration": "allow_all" if everyone else "allow_adult",
        "sampleCount": 1,
        "resolution": resolution,
    }
    if job.seconds is not None:
        parameters["durationSeconds"] = round(job.seconds)
    if not model.startswith("veo-2"):
        parameters["generateAudio"] = True  # Veo 2 has no audio track and refuses the field
    return {"instances": [instance], "parameters": parameters}


def operation_name(body: Any) -> str:
    name = body.get("name") if isinstance(body, Mapping) else None
    if not isinstance(name, str) or not name:
        raise protocol_error("no operation name returned from video generation request.", body)
    return name


@dataclass(frozen=True)
class VeoJob:
    """A submitted Veo operation: the publisher model it runs on (which its status URL
    names) and the operation's name."""

    model: str
    name: str


def veo_ref(veo: VeoJob) -> dict[str, Any]:
    return make_ref(PROVIDER_ID, model=veo.model, operation=veo.name)


def veo_from_ref(ref: Mapping[str, Any]) -> VeoJob:
    return VeoJob(ref_text(ref, "model", PROVIDER_ID), ref_text(ref, "operation", PROVIDER_ID))


def from_operation(body: Any) -> Result | None:
    """The finished Veo operation's videos; None while it is still running."""
    body = expect_object(body, vendor="Vertex AI", provider=PROVIDER_ID)
    if not body.get("done"):
        return None
    error = body.get("error")
    if isinstance(error, Mapping):
        raise operation_error(error, body, provider=PROVIDER_ID)
    response = required_field(body, "response", Mapping, "without the operation's response")
    artifacts = []
    for sample in response.get("videos") or []:
        video = sample.get("video", sample) if isinstance(sample, Mapping) else None
        if not isinstance(video, Mapping) or not isinstance(video.get("bytesBase64Encoded"), str):
            raise protocol_error("Vertex AI returned a video sample without its bytes", body)
        data = decode_media(video["bytesBase64Encoded"], body)
        artifacts.append(Artifact(data=data, content_type=video.get("mimeType") or "video/mp4"))
    if artifacts:
        return Result(artifacts=tuple(artifacts), raw=redact(body))
    reasons = response.get("raiMediaFilteredReasons") or []
    if response.get("raiMediaFilteredCount") or reasons:
        message = "Generated video rejected by Vertex content moderation: " + ", ".join(
            str(reason) for reason in reasons
        )
        raise rejected(message, "content_moderated", body)
    raise protocol_error("No video samples found in the Vertex AI response", body)


# ---------------------------------------------------------------------------- polling


async def wait_for_operation(
    fetch: Callable[[], Awaitable[Any]],
    name: str,
    *,
    poll_interval: float,
    cancelled: Callable[[], bool],
) -> Mapping[str, Any]:
    """Poll with `fetch` until the operation is done and return it; `cancelled` stops it
    at once. A failed fetch is retried (`polling.poll_once`); the done operation is read by
    `from_operation`, outside the wait, so that a failed job is never taken for a lost one.
    """
    while True:
        # Also yields to the loop when poll_interval is 0.
        await asyncio.sleep(poll_interval)
        if cancelled():
            raise UpstreamCancelledError(
                f"Vertex AI operation {name} was cancelled", provider=PROVIDER_ID
            )
        body = await poll_once(fetch, provider=PROVIDER_ID, interval=poll_interval)
        operation = expect_object(body, vendor="Vertex AI", provider=PROVIDER_ID)
        if operation.get("done"):
            return operation


# ---------------------------------------------------------------------------- answers


def rejected(message: str, code: str, body: Any = None) -> UpstreamRejectedError:
    return UpstreamRejectedError(message, provider=PROVIDER_ID, body=body, code=code)


def protocol_error(message: str, body: Any) -> UpstreamProtocolError:
    return UpstreamProtocolError(message, provider=PROVIDER_ID, body=body)


def required_field(body: Any, name: str, kind: type, missing: str) -> Any:
    """`body[name]`, non-empty and of `kind`; else "Vertex AI answered {missing}"."""
    value = body.get(name) if isinstance(body, Mapping) else None
    if not isinstance(value, kind) or not value:
        raise protocol_error(f"Vertex AI answered {missing}", body)
    return value


def decode_media(encoded: str, body: Any) -> bytes:
    try:
        return pybase64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise protocol_error("Vertex AI sent media that is not valid base64", body) from None
