"""Veo videos on Google AI Studio, for the Gemini adapter (spec §9.16).

`POST {base}/v1beta/models/{model}:predictLongRunning`, then `GET {base}/v1beta/{operation}`
every `poll_interval` seconds until `done`; the sample files are downloaded here as bytes.
The reference gave storage Veo URIs with `&key=` appended; here the key is sent only to the
API host, never to the storage redirect.

Deliberate differences from the reference:
- Veo failures raise (never billed soft failures, §2.9); a failed operation is classified
  by its google.rpc code. Veo 2 gets no `resolution`: it renders 720p only.
- The Gemini API cannot cancel a Veo operation (only tuning and batch jobs), so the Gemini
  adapter's `cancel` stays the base no-op: an abandoned job is simply no longer polled,
  and a failed status check is retried (`polling.poll_once`) rather than abandoning it.

Resumable (`providers.resume`): an operation not done at submit is referenced by its name;
resuming polls it again (there is still nothing to cancel it with).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any, Final

import httpx

from image_router.providers.contract import Artifact, Job, Result, Target
from image_router.providers.errors import (
    UpstreamProtocolError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
    redact,
    response_json,
)
from image_router.providers.google_ai import (
    API_VERSION,
    DEFAULT_BASE_URL,
    KEY_HEADER,
    classify,
    decode_b64,
    error_reasons,
    post_json,
    raise_for_google,
    size_key,
    size_table,
    text_or_none,
)
from image_router.providers.polling import poll_once
from image_router.providers.resume import make_ref, ref_text, submit_or_resume
from image_router.providers.upstream_text import expect_object

#: Veo on AI Studio runs under the Gemini adapter's id.

PROVIDER_ID: Final = "gemini"

#: The Veo rows of §9.13 `sizeToAspectRatio`.
VIDEO_ASPECT_RATIOS: Final = size_table("1280x720=16:9 720x1280=9:16 1920x1080=16:9 1080x1920=9:16")
# google.rpc.Code of a failed operation → "HTTP status:canonical name", as Google pairs them.
_RPC_CODES: Final = size_table(
    "1=499:CANCELLED 2=500:UNKNOWN 3=400:INVALID_ARGUMENT 4=504:DEADLINE_EXCEEDED "
    "5=404:NOT_FOUND 7=403:PERMISSION_DENIED 8=429:RESOURCE_EXHAUSTED 9=400:FAILED_PRECONDITION "
    "10=409:ABORTED 13=500:INTERNAL 14=503:UNAVAILABLE 16=401:UNAUTHENTICATED"
)
# An operation name is a path below the API version, e.g. "models/veo-2/operations/abc".
_OPERATION_NAME = re.compile(r"^models/[\w.-]+/operations/[\w.-]+$")
_MAX_REDIRECTS = 5
#: The gateway's own cap on a downloaded output.
MAX_VIDEO_BYTES: Final = 512 * 1024 * 1024


# ---------------------------------------------------------------------------- mapping


def person_generation(model: str, has_image: bool) -> str:
    """Veo 2/3.0/3.1 allow only adults from an image and need `allow_all` from text."""
    if any(family in model for family in ("veo-3.1", "veo-3.0", "veo-2")):
        return "allow_adult" if has_image else "allow_all"
    return "allow_adult"


def video_request(job: Job, target: Target) -> dict[str, Any]:
    """The `predictLongRunning` body; only the first input image is used (§9.16)."""
    model = target.upstream
    size = size_key(job)
    ratio = "16:9" if size is None else VIDEO_ASPECT_RATIOS.get(size)
    if ratio is None:
        raise UpstreamRejectedError(
            f"Unsupported size '{job.size}' for model '{model}'",
            provider=PROVIDER_ID,
            code="unsupported_size",
        )
    instance: dict[str, Any] = {"prompt": job.prompt}
    if job.images:
        first = job.images[0]
        instance["image"] = {"bytesBase64Encoded": first.b64(), "mimeType": first.content_type}
    parameters: dict[str, Any] = {
        "aspectRatio": ratio,
        "personGeneration": person_generation(model, bool(job.images)),
        "sampleCount": 1,
    }
    if job.seconds is not None:
        seconds = float(job.seconds)
        parameters["durationSeconds"] = int(seconds) if seconds.is_integer() else seconds
    if not model.startswith("veo-2"):
        dims = job.dimensions
        parameters["resolution"] = "720p" if dims is None else f"{min(dims)}p"
    return {"instances": [instance], "parameters": parameters}


def operation_name(body: Mapping[str, Any]) -> str:
    name = body.get("name")
    if not isinstance(name, str) or not _OPERATION_NAME.match(name):
        raise UpstreamProtocolError(
            "Gemini returned no operation name for the video job", provider=PROVIDER_ID, body=body
        )
    return name


def operation_ref(operation: Mapping[str, Any]) -> dict[str, Any] | None:
    """The reference of an operation still running (None: it was done at once)."""
    if operation.get("done") is True:
        return None
    return make_ref(PROVIDER_ID, operation=operation_name(operation))


def operation_from_ref(ref: Mapping[str, Any]) -> Mapping[str, Any]:
    """The running operation an `operation_ref` names (its name is checked again)."""
    operation = {"name": ref_text(ref, "operation", PROVIDER_ID)}
    operation_name(operation)
    return operation


def video_from_operation(operation: Mapping[str, Any]) -> Result:
    """A finished operation as a `Result` whose artifacts are file URIs (or bytes)."""
    error = operation.get("error")
    if isinstance(error, Mapping):
        status_text, _, state = _RPC_CODES.get(str(error.get("code")), "500:UNKNOWN").partition(":")
        status = int(status_text)
        message = f"Gemini video generation failed: {error.get('message') or state}"
        raise classify(PROVIDER_ID, status, state, message, error_reasons(error), operation)
    response = operation.get("response")
    answer = response.get("generateVideoResponse") if isinstance(response, Mapping) else None
    answer = answer if isinstance(answer, Mapping) else {}
    samples = answer.get("generatedSamples")
    if not isinstance(samples, list) or not samples:
        filtered = answer.get("raiMediaFilteredCount")
        if isinstance(filtered, int) and filtered > 0:
            reasons = answer.get("raiMediaFilteredReasons")
            why = ", ".join(map(str, reasons)) if isinstance(reasons, list) else ""
            raise UpstreamRejectedError(
                f"Generated video rejected by Gemini content moderation: {why}",
                provider=PROVIDER_ID,
                body=operation,
                code="content_moderated",
            )
        raise UpstreamUnavailableError(
            "No video samples found in Gemini response", provider=PROVIDER_ID, body=operation
        )
    return Result(
        artifacts=tuple(_sample(sample, operation) for sample in samples),
        created=int(time.time()),
        raw=redact(operation),
    )


def _sample(sample: Any, operation: Mapping[str, Any]) -> Artifact:
    video = sample.get("video") if isinstance(sample, Mapping) else None
    if isinstance(video, Mapping):
        mime = (
            text_or_none(video.get("mimeType"))
            or text_or_none(sample.get("encoding"))
            or "video/mp4"
        )
        if uri := text_or_none(video.get("uri")):
            return Artifact(url=uri, content_type=mime)
        if encoded := text_or_none(video.get("encodedVideo")):
            return Artifact(data=decode_b64(encoded, PROVIDER_ID, operation), content_type=mime)
    raise UpstreamProtocolError(
        "Gemini video sample has neither a uri nor bytes", provider=PROVIDER_ID, body=operation
    )


# ---------------------------------------------------------------------------- HTTP


async def generate_video(
    http: httpx.AsyncClient,
    base_url: str,
    job: Job,
    target: Target,
    key: str,
    *,
    poll_interval: float,
) -> Result:
    """Submit (or resume, see `providers.resume`), poll until done, and download every
    sample as bytes."""
    root = f"{base_url}/{API_VERSION}"
    url = f"{root}/models/{target.upstream}:predictLongRunning"
    operation = await submit_or_resume(
        job,
        lambda: post_json(http, url, video_request(job, target), key, PROVIDER_ID),
        vendor="Gemini",
        to_ref=operation_ref,
        from_ref=operation_from_ref,
    )
    name = operation_name(operation)
    while operation.get("done") is not True:
        # Also yields to the loop when poll_interval is 0, so a cancel gets through.
        await asyncio.sleep(poll_interval)
        operation = await poll_once(
            partial(_fetch_operation, http, f"{root}/{name}", key),
            provider=PROVIDER_ID,
            interval=poll_interval,
        )
    result = video_from_operation(operation)
    artifacts = [await _download(http, base_url, item, key) for item in result.artifacts]
    return replace(result, artifacts=tuple(artifacts))


async def _fetch_operation(http: httpx.AsyncClient, url: str, key: str) -> Mapping[str, Any]:
    response = await http.get(url, headers={KEY_HEADER: key})
    raise_for_google(response, key, PROVIDER_ID)
    return expect_object(
        response_json(PROVIDER_ID, response), vendor="Google", provider=PROVIDER_ID
    )


async def _download(
    http: httpx.AsyncClient, base_url: str, artifact: Artifact, key: str
) -> Artifact:
    """Fetch a file URI; redirects are followed by hand so the key stays on Google's API."""
    url = artifact.url
    for _ in range(_MAX_REDIRECTS):
        if url is None:
            return artifact
        headers = {KEY_HEADER: key} if is_api_host(url, base_url) else {}
        async with http.stream("GET", url, headers=headers, follow_redirects=False) as response:
            if response.next_request is not None:
                url = str(response.next_request.url)
                continue
            if response.is_error:
                await response.aread()
                raise_for_google(response, key, PROVIDER_ID)
            data = await _read_capped(response)
            media = response.headers.get("content-type", "").split(";")[0].strip()
            return Artifact(data=data, content_type=media or artifact.content_type)
    raise UpstreamProtocolError("Gemini video download redirected too often", provider=PROVIDER_ID)


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_VIDEO_BYTES:
            raise UpstreamProtocolError("the Gemini video is too large", provider=PROVIDER_ID)
        chunks.append(chunk)
    return b"".join(chunks)


def is_api_host(url: str, base_url: str) -> bool:
    """Whether `url` is on the configured API host or Google's own: only those get the key."""
    target = httpx.URL(url)
    return any(
        (target.scheme, target.host, target.port) == (api.scheme, api.host, api.port)
        for api in (httpx.URL(base_url), httpx.URL(DEFAULT_BASE_URL))
    )
