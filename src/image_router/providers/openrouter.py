"""OpenRouter: image output from chat completions (`POST /api/v1/chat/completions`).

The prompt and the input images (data URIs) are the content parts of one user message;
`modalities` asks for image output, and the images come back as data URIs in
`choices[0].message.images[].image_url.url`. See spec §9.19. The setting holds a comma
list of keys; the first is used.
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import pybase64

from image_router.providers.contract import Artifact, Job, Provider, Result, Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    error_for_status,
    redact,
)
from image_router.providers.upstream_text import (
    expect_object,
    scrub,
    usd_amount,
    without_data_uris,
)

PROVIDER_ID = "openrouter"
COMPLETIONS_PATH = "/api/v1/chat/completions"
#: Image-and-text models (Gemini) need both; image-only models (FLUX) take `["image"]`
#: through the route option `modalities`.
DEFAULT_MODALITIES = ("image", "text")
APP_TITLE = "Image Router"

#: OpenRouter's documented sizes per aspect ratio (Gemini image models).
SIZE_TO_ASPECT_RATIO = {
    "1024x1024": "1:1",
    "832x1248": "2:3",
    "1248x832": "3:2",
    "864x1184": "3:4",
    "1184x864": "4:3",
    "896x1152": "4:5",
    "1152x896": "5:4",
    "768x1344": "9:16",
    "1344x768": "16:9",
    "1536x672": "21:9",
}
ASPECT_RATIOS = frozenset(SIZE_TO_ASPECT_RATIO.values())

# Gemini's finish reasons when it withheld an image on safety grounds.
_SAFETY_FINISH = frozenset(
    {"SAFETY", "IMAGE_SAFETY", "PROHIBITED_CONTENT", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST"}
)
_DATA_URI = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),(.*)$", re.DOTALL)


def aspect_ratio(size: str) -> str | None:
    """`image_config.aspect_ratio` for a size: a documented size, or one whose reduced
    ratio OpenRouter offers; None (send nothing) otherwise."""
    if size in SIZE_TO_ASPECT_RATIO:
        return SIZE_TO_ASPECT_RATIO[size]
    width, _, height = size.partition("x")
    if not (width.isdigit() and height.isdigit()) or int(width) == 0 or int(height) == 0:
        return None
    divisor = math.gcd(int(width), int(height))
    ratio = f"{int(width) // divisor}:{int(height) // divisor}"
    return ratio if ratio in ASPECT_RATIOS else None


def to_request(job: Job, target: Target) -> dict[str, Any]:
    """The chat-completions body for one image job."""
    if job.mask is not None:
        # Chat completions have no mask; a route that accepts one is a catalog mistake.
        raise UpstreamMisconfiguredError(
            "OpenRouter takes no mask; this route must not accept one", provider=PROVIDER_ID
        )
    content: list[dict[str, Any]] = [{"type": "text", "text": job.prompt}]
    content.extend(
        {"type": "image_url", "image_url": {"url": image.data_uri()}} for image in job.images
    )
    modalities = target.options.get("modalities") or DEFAULT_MODALITIES
    body: dict[str, Any] = {
        "model": target.upstream,
        "messages": [{"role": "user", "content": content}],
        "modalities": list(modalities),
    }
    ratio = aspect_ratio(job.size)
    if ratio is not None:
        body["image_config"] = {"aspect_ratio": ratio}
    if job.user_ref:
        body["user"] = job.user_ref
    return body


# ---------------------------------------------------------------------------- answers


def from_response(body: Any) -> Result:
    """Map a 200 body to a `Result`; errors reported inside a 200 are raised."""
    body = expect_object(body, vendor="OpenRouter", provider=PROVIDER_ID)
    if isinstance(body.get("error"), Mapping):
        raise error_from_response(_error_status(body["error"], 502), body)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise UpstreamProtocolError(
            "OpenRouter answered without a choice", provider=PROVIDER_ID, body=body
        )
    choice = choices[0]
    if isinstance(choice.get("error"), Mapping):
        # The model failed after OpenRouter had already answered 200.
        raise error_from_response(_error_status(choice["error"], 502), {"error": choice["error"]})
    message = choice.get("message")
    images = message.get("images") if isinstance(message, Mapping) else None
    if not isinstance(images, list) or not images:
        raise _no_image(choice, body)
    created = body.get("created")
    usage = body.get("usage")
    return Result(
        artifacts=tuple(_artifact(item, body) for item in images),
        created=created if isinstance(created, int) and not isinstance(created, bool) else None,
        # `usage.cost`: the USD credits OpenRouter charged.
        reported_cost=usd_amount(usage.get("cost") if isinstance(usage, Mapping) else None),
        # The images are data URIs under keys `redact` does not know.
        raw=redact(without_data_uris(body, placeholder="[removed - base64 data]", longer_than=256)),
    )


def _no_image(choice: Mapping[str, Any], body: Mapping[str, Any]) -> UpstreamError:
    message = choice.get("message")
    message = message if isinstance(message, Mapping) else {}
    refusal = message.get("refusal")
    text = message.get("content")
    filtered = (
        choice.get("finish_reason") == "content_filter"
        or choice.get("native_finish_reason") in _SAFETY_FINISH
        or (isinstance(refusal, str) and bool(refusal))
    )
    if filtered:
        reason = refusal or text or "The model refused to generate this image"
        return UpstreamRejectedError(
            str(reason), provider=PROVIDER_ID, body=body, code="content_filter"
        )
    return UpstreamProtocolError(
        "No image data found in OpenRouter response", provider=PROVIDER_ID, body=body
    )


def _artifact(item: Any, body: Mapping[str, Any]) -> Artifact:
    image_url = item.get("image_url") if isinstance(item, Mapping) else None
    url = image_url.get("url") if isinstance(image_url, Mapping) else None
    if not isinstance(url, str) or not url:
        raise UpstreamProtocolError(
            "OpenRouter image entry has no image_url.url", provider=PROVIDER_ID, body=body
        )
    if url.startswith(("https://", "http://")):
        return Artifact(url=url)
    match = _DATA_URI.match(url)
    if match is None or ";base64" not in match.group(2):
        raise UpstreamProtocolError(
            "OpenRouter sent an image that is neither a base64 data URI nor a URL",
            provider=PROVIDER_ID,
            body=body,
        )
    try:
        data = pybase64.b64decode(match.group(3), validate=True)
    except binascii.Error as exc:
        raise UpstreamProtocolError(
            "OpenRouter sent an image that is not valid base64", provider=PROVIDER_ID, body=body
        ) from exc
    return Artifact(data=data, content_type=match.group(1) or None)


# ---------------------------------------------------------------------------- errors


def error_from_response(status: int, body: Any) -> UpstreamError:
    """Classify OpenRouter's `{"error": {code, message, metadata}}`."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return error_for_status(PROVIDER_ID, status, f"OpenRouter answered HTTP {status}", body)
    message = str(error.get("message") or f"OpenRouter answered HTTP {status}")
    metadata = error.get("metadata")
    metadata = metadata if isinstance(metadata, Mapping) else {}
    args: dict[str, Any] = {"provider": PROVIDER_ID, "status": status, "body": body}
    lowered = message.lower()
    if "reasons" in metadata or "flagged_input" in metadata:
        # Moderation flagged the user's prompt or image.
        return UpstreamRejectedError(message, code="moderation", **args)
    if status == 403:
        # Not a moderation flag: our key's limit, permissions or guardrails.
        cls: type[UpstreamError] = (
            UpstreamRateLimitedError if "limit" in lowered else UpstreamMisconfiguredError
        )
        return cls(message, **args)
    if "not a valid model id" in lowered or "no endpoints found" in lowered:
        # Our catalog names a model (or an output modality) OpenRouter does not serve.
        return UpstreamMisconfiguredError(message, code="model_not_found", **args)
    return error_for_status(PROVIDER_ID, status, message, body)


def _error_status(error: Mapping[str, Any], default: int) -> int:
    code = error.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return default


# ---------------------------------------------------------------------------- provider


class OpenRouterProvider(Provider):
    id = PROVIDER_ID
    key_env = "OPENROUTER_API_KEY"
    base_url_env = ("OPENROUTER_BASE_URL",)
    env_notes: ClassVar[Mapping[str, str]] = {"OPENROUTER_API_KEY": "comma list: the first is used"}
    default_base_url = "https://openrouter.ai"
    api_prefix = "/api/v1"
    modalities = frozenset({"image"})
    image_inputs = frozenset({"image_url_parts"})

    async def generate(self, job: Job, target: Target) -> Result:
        key = self.require_credential("OpenRouter API key", first=True)
        result = await self.post_json(
            self.base_url + COMPLETIONS_PATH,
            to_request(job, target),
            key=key,
            errors=error_from_response,
            read=from_response,
            headers={"X-Title": APP_TITLE},
        )
        return replace(result, raw=scrub(result.raw, key))
