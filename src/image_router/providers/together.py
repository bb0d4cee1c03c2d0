"""Together AI images API: `POST /v1/images/generations` (spec §9.20).

No packaged model routes here (the reference keeps the handler for FLUX-1-schnell:free
load-spreading, now dead code), but an operator catalog may. The body is the reference's
`{model, prompt, disable_safety_checker: true, width?, height?, steps?}` plus `n: 1` and
`output_format` when the client asked for a format Together renders (png, jpeg). The
route's step knob may be called `steps` or `num_inference_steps`; Together knows only
`steps`. Together answers synchronously with `data[].url` (or `b64_json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from image_router.providers.contract import (
    Artifact,
    Job,
    Provider,
    Result,
    Target,
    refuse_image_inputs,
)
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamUnavailableError,
    error_for_status,
    redact,
)
from image_router.providers.upstream_text import (
    ACCOUNT_LIMIT_PHRASES,
    RETRYABLE_PHRASES,
    expect_object,
    mentions,
)
from image_router.storage.images import decode_base64, sniff_content_type

PROVIDER_ID = "together"
PATH = "/v1/images/generations"

#: Route options carrying the step count, first found wins (None = do not send).
STEP_OPTIONS = ("steps", "num_inference_steps")
#: Client output formats Together renders itself; others are converted by the gateway.
OUTPUT_FORMATS = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg"}

# Our key or our catalog's model name is wrong: another route may work.
_OUR_FAULT_CODES = frozenset({"invalid_api_key", "model_not_available", "model_not_found"})
# §7.2: our Together account is out of money or requests.
_ACCOUNT_LIMIT_PHRASES = (*ACCOUNT_LIMIT_PHRASES, "rate limit", "rate_limit")
# §7.2: Together itself is struggling; the same job may succeed elsewhere.
_TRANSIENT_PHRASES = (*RETRYABLE_PHRASES, "overloaded", "not ready yet", "internal error")


def to_request(job: Job, target: Target) -> dict[str, Any]:
    """The JSON body for one job."""
    refuse_image_inputs(job, PROVIDER_ID)
    body: dict[str, Any] = {
        "model": target.upstream,
        "prompt": job.prompt,
        "n": 1,
        # The gateway applies no NSFW policy of its own here (as the reference); a
        # model that checks anyway refuses with an error we map to a rejection.
        "disable_safety_checker": True,
    }
    dimensions = job.dimensions
    if dimensions is not None:
        body["width"], body["height"] = dimensions
    for name in STEP_OPTIONS:
        if name in target.options:
            steps = target.options[name]
            if steps is not None:
                body["steps"] = steps
            break
    output_format = OUTPUT_FORMATS.get(job.output_format or "")
    if output_format is not None:
        body["output_format"] = output_format
    return body


def from_response(body: Any) -> Result:
    """Map a 2xx body to a `Result`; anything without images is a protocol error."""
    body = expect_object(body, vendor="Together", provider=PROVIDER_ID)
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise UpstreamProtocolError(
            "Together answered without any image", provider=PROVIDER_ID, body=body
        )
    return Result(artifacts=tuple(_artifact(item, body) for item in data), raw=redact(body))


def _artifact(item: Any, body: Mapping[str, Any]) -> Artifact:
    if not isinstance(item, Mapping):
        raise UpstreamProtocolError(
            "Together image entry is not an object", provider=PROVIDER_ID, body=body
        )
    url = item.get("url")
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        return Artifact(url=url)
    encoded = item.get("b64_json")
    if isinstance(encoded, str) and encoded:
        try:
            data, declared = decode_base64(encoded)
        except ValueError as exc:
            raise UpstreamProtocolError(
                "Together sent an image that is not valid base64",
                provider=PROVIDER_ID,
                body=body,
            ) from exc
        return Artifact(data=data, content_type=sniff_content_type(data) or declared)
    raise UpstreamProtocolError(
        "Together image entry has neither url nor b64_json", provider=PROVIDER_ID, body=body
    )


def error_from_response(status: int, body: Any) -> UpstreamError:
    """Classify a Together error (`{"error": {message, type, param, code}}` or `{message}`)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    holder: Mapping[str, Any] = error if isinstance(error, Mapping) else {}
    raw_message = holder.get("message") or (
        body.get("message") if isinstance(body, Mapping) else None
    )
    if raw_message is None and isinstance(error, str):
        raw_message = error
    if raw_message is None and isinstance(body, str):
        raw_message = body.strip()[:500]
    message = str(raw_message) if raw_message else f"Together answered HTTP {status}"
    code = holder.get("code") if isinstance(holder.get("code"), str) else None
    kind = str(holder.get("type") or "")
    text = f"{message} {kind}"
    args: dict[str, Any] = {"provider": PROVIDER_ID, "status": status, "body": body, "code": code}
    if status in (401, 403) or code in _OUR_FAULT_CODES or status == 404:
        return UpstreamMisconfiguredError(message, **args)
    if status in (402, 429) or mentions(text, _ACCOUNT_LIMIT_PHRASES):
        return UpstreamRateLimitedError(message, **args)
    if mentions(text, _TRANSIENT_PHRASES):
        return UpstreamUnavailableError(message, **args)
    return error_for_status(PROVIDER_ID, status, message, body, code)


class TogetherProvider(Provider):
    id = PROVIDER_ID
    key_env = "TOGETHER_API_KEY"
    base_url_env = ("TOGETHER_BASE_URL",)
    default_base_url = "https://api.together.xyz"
    api_prefix = "/v1"
    modalities = frozenset({"image"})
    image_inputs = frozenset()

    async def generate(self, job: Job, target: Target) -> Result:
        key = self.require_credential("Together AI API key")
        return await self.post_json(
            self.base_url + PATH,
            to_request(job, target),
            key=key,
            errors=error_from_response,
            read=from_response,
        )
