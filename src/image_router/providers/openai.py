"""OpenAI Images API: `POST /images/generations` (JSON) and `/images/edits` (multipart).

`to_request` and `from_response` are pure mappings; `OpenAIProvider.generate` only moves
them over HTTP. See spec §9.11.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pybase64

from image_router.providers.contract import Artifact, InputFile, Job, Provider, Result, Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    error_for_status,
    redact,
)
from image_router.providers.upstream_text import expect_object, scrub
from image_router.storage.images import sniff_content_type

PROVIDER_ID = "openai"

#: Response fields handed through to the client untouched (§2.8).
PASS_THROUGH = ("usage", "output_format", "quality", "size", "background")

# The user's prompt or image was refused: another route would refuse it too.
_REFUSAL_CODES = frozenset({"moderation_blocked", "content_policy_violation"})
# Our OpenAI account is out of requests or money; another route may still work.
_ACCOUNT_LIMIT_CODES = frozenset(
    {"insufficient_quota", "billing_hard_limit_reached", "rate_limit_exceeded"}
)
# Our key, our catalog's model name or this adapter's parameters are wrong: not the
# user's fault, so the user must not be refused for it, and another route may work.
_OUR_FAULT_CODES = frozenset({"invalid_api_key", "model_not_found", "unknown_parameter"})


def is_gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def is_dalle(model: str) -> bool:
    return model.startswith("dall-e")


@dataclass(frozen=True)
class OpenAIRequest:
    """One call: `path` below the base URL, text `fields`, and files for edits."""

    path: str
    fields: dict[str, Any]
    files: tuple[tuple[str, InputFile], ...] = field(default=())


def to_request(job: Job, target: Target) -> OpenAIRequest:
    """Map a job onto OpenAI's fields; images make it an edit (multipart, `image[]`)."""
    model = target.upstream
    fields: dict[str, Any] = {"prompt": job.prompt, "model": model, "n": job.n}
    # dall-e has no "auto" size.
    fields["size"] = "1024x1024" if is_dalle(model) and job.size == "auto" else job.size
    # The catalog's quality mapping arrives resolved in the options; None means "omit"
    # (dall-e-2 refuses every quality but "standard").
    quality = target.options.get("quality", job.quality)
    if quality is not None:
        fields["quality"] = quality
    if job.user_ref:
        fields["user"] = job.user_ref
    if is_gpt_image(model):
        fields["moderation"] = "low"
        if job.output_format:
            fields["output_format"] = job.output_format
    elif is_dalle(model):
        # dall-e answers a short-lived URL by default; bytes spare a second download.
        # gpt-image models always answer base64 and refuse this parameter.
        fields["response_format"] = "b64_json"
    if not job.images:
        if job.mask is not None:
            raise UpstreamRejectedError(
                "A mask needs an image to edit",
                provider=PROVIDER_ID,
                code="mask_without_image",
            )
        return OpenAIRequest("/images/generations", fields)
    files = [("image[]", image) for image in job.images]
    if job.mask is not None:
        files.append(("mask", job.mask))
    return OpenAIRequest("/images/edits", fields, tuple(files))


def from_response(body: Any) -> Result:
    """Map a 2xx body to a `Result`; anything without images is a protocol error."""
    body = expect_object(body, vendor="OpenAI", provider=PROVIDER_ID)
    data = body.get("data")
    if not isinstance(data, list) or not data:
        raise UpstreamProtocolError(
            "OpenAI answered without any image", provider=PROVIDER_ID, body=body
        )
    artifacts = tuple(_artifact(item, body) for item in data)
    usage = body.get("usage")
    created = body.get("created")
    return Result(
        artifacts=artifacts,
        created=created if isinstance(created, int) else None,
        usage=usage if isinstance(usage, Mapping) else None,
        extra={key: body[key] for key in PASS_THROUGH if body.get(key) is not None},
        raw=redact(body),
    )


def _artifact(item: Any, body: Mapping[str, Any]) -> Artifact:
    if not isinstance(item, Mapping):
        raise UpstreamProtocolError(
            "OpenAI image entry is not an object", provider=PROVIDER_ID, body=body
        )
    revised = item.get("revised_prompt")
    revised_prompt = revised if isinstance(revised, str) else None
    encoded = item.get("b64_json")
    if isinstance(encoded, str) and encoded:
        try:
            data = pybase64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise UpstreamProtocolError(
                "OpenAI sent an image that is not valid base64",
                provider=PROVIDER_ID,
                body=body,
            ) from exc
        return Artifact(
            data=data, content_type=sniff_content_type(data), revised_prompt=revised_prompt
        )
    url = item.get("url")
    if isinstance(url, str) and url:
        return Artifact(url=url, revised_prompt=revised_prompt)
    raise UpstreamProtocolError(
        "OpenAI image entry has neither b64_json nor url",
        provider=PROVIDER_ID,
        body=body,
    )


def error_from_response(status: int, body: Any) -> UpstreamError:
    """Classify an OpenAI error answer (`{"error": {message, type, param, code}}`)."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return error_for_status(PROVIDER_ID, status, f"OpenAI answered HTTP {status}", body)
    message = str(error.get("message") or f"OpenAI answered HTTP {status}")
    code = error.get("code") if isinstance(error.get("code"), str) else None
    kind = error.get("type")
    args = {"provider": PROVIDER_ID, "status": status, "body": body, "code": code}
    if code in _REFUSAL_CODES or kind == "image_generation_user_error":
        return UpstreamRejectedError(message, **args)
    if code in _ACCOUNT_LIMIT_CODES or kind == "insufficient_quota":
        return UpstreamRateLimitedError(message, **args)
    if code in _OUR_FAULT_CODES or (status in (400, 404) and error.get("param") == "model"):
        return UpstreamMisconfiguredError(message, **args)
    return error_for_status(PROVIDER_ID, status, message, body, code)


class OpenAIProvider(Provider):
    id = PROVIDER_ID
    key_env = "OPENAI_API_KEY"
    base_url_env = ("OPENAI_BASE_URL",)
    default_base_url = "https://api.openai.com/v1"
    api_prefix = "/v1"
    modalities = frozenset({"image"})
    image_inputs = frozenset({"multipart"})

    async def generate(self, job: Job, target: Target) -> Result:
        key = self.require_credential("OpenAI API key")
        request = to_request(job, target)
        # Images make it an edit: the same fields as a multipart form, with the files.
        form = {name: str(value) for name, value in request.fields.items()}
        files = [(name, (f.filename, f.data, f.content_type)) for name, f in request.files]
        result = await self.post_json(
            self.base_url + request.path,
            None if files else request.fields,
            key=key,
            errors=error_from_response,
            read=from_response,
            data=form if files else None,
            files=files or None,
        )
        return replace(result, raw=scrub(result.raw, key))
