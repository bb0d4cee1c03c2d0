"""A fake OpenRouter: image output from `POST /api/v1/chat/completions`.

It answers in OpenRouter's wire format and validates like it:

- auth: `Authorization: Bearer <key>`; none → 401 "No auth credentials found", a wrong
  one → 401 "User not found." (`{"error": {"code", "message"}}`);
- unknown model → 400 "<model> is not a valid model ID"; malformed messages or content
  parts, an `image_url` that is not a readable image data URI or https URL, an
  unsupported `image_config.aspect_ratio` → 400;
- image-only models (FLUX) asked for `["image", "text"]` → 404 "No endpoints found that
  support the requested output modalities"; a request without "image" in `modalities`
  gets a text-only answer, as a real model would give;
- a prompt containing `refusal_trigger`: moderated models (OpenAI) → 403 with moderation
  `metadata`; Gemini → 200 with `finish_reason: "content_filter"` and no image;
- success: `choices[0].message.images[].image_url.url` as PNG data URIs, `usage.cost`;
- `fail_midway`: an error body the next completion reports inside a 200 choice (the model
  failed after OpenRouter had answered).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
import uuid
from dataclasses import replace
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.openrouter import ASPECT_RATIOS, OpenRouterProvider
from tests.fakes.contract import ContractCase
from tests.fakes.openai import image_bytes
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "sk-or-v1-fake0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2"
SECOND_API_KEY = "sk-or-v1-fake-second-key-never-used-by-the-adapter"

TEXT_AND_IMAGE_MODELS = frozenset(
    {
        "google/gemini-2.5-flash-image-preview:free",
        "google/gemini-2.5-flash-image",
        "google/gemini-3-pro-image-preview",
        "openai/gpt-5-image-mini",
    }
)
IMAGE_ONLY_MODELS = frozenset({"black-forest-labs/flux.2-pro"})
MODERATED_MODELS = frozenset({"openai/gpt-5-image-mini"})
MODELS = TEXT_AND_IMAGE_MODELS | IMAGE_ONLY_MODELS
KNOWN_FIELDS = frozenset(
    {"model", "messages", "modalities", "image_config", "user", "stream", "max_tokens"}
)

# Gemini bills output images as tokens: 1290 per image at $30 per million.
IMAGE_TOKENS = 1290
USD_PER_OUTPUT_TOKEN = 0.00003
USD_PER_INPUT_TOKEN = 0.0000003

_DATA_URI = re.compile(r"^data:image/(png|jpeg|webp|gif);base64,(.+)$", re.DOTALL)


def openrouter_error(
    code: int, message: str, metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """OpenRouter's error envelope (the HTTP status mirrors `code`)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return {"error": error}


def moderation_error(model: str, prompt: str) -> dict[str, Any]:
    return openrouter_error(
        403,
        f"{model} requires moderation on OpenAI. Your input was flagged for "
        '"sexual/minors". No credits were charged.',
        {
            "reasons": ["sexual/minors"],
            "flagged_input": prompt[:100],
            "provider_name": "OpenAI",
            "model_slug": model,
        },
    )


class _Invalid(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def _bad(message: str) -> _Invalid:
    return _Invalid(400, openrouter_error(400, message))


class FakeOpenRouter(FakeVendor):
    """OpenRouter. Give the provider `base_url=<fake root>` (the host, no path)."""

    def __init__(
        self, api_key: str = DEFAULT_API_KEY, *, refusal_trigger: str = "forbidden-content"
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.refusal_trigger = refusal_trigger
        #: When set, the next completion fails inside a 200 with this error object.
        self.fail_midway: dict[str, Any] | None = None
        self.add_route("/api/v1/chat/completions", self._completions, ["POST"])

    def error_body(self, status: int) -> object:
        messages = {
            401: "User not found.",
            402: "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
            408: "Request timed out",
            429: "Rate limit exceeded: free-models-per-min.",
            502: "Provider returned error",
            503: "No allowed providers are available for the selected model.",
        }
        return openrouter_error(status, messages.get(status, "Internal Server Error"))

    # ------------------------------------------------------------------ route

    async def _completions(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
            if not isinstance(rec.json, dict):
                raise _bad("Invalid JSON body")
            params: dict[str, Any] = rec.json
            model, prompt, images = self._validate(params)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        if self.refusal_trigger.lower() in prompt.lower() and model in MODERATED_MODELS:
            return JSONResponse(moderation_error(model, prompt), status_code=403)
        choice: dict[str, Any] = {
            "logprobs": None,
            "finish_reason": "stop",
            "native_finish_reason": "STOP",
            "index": 0,
            "message": {"role": "assistant", "content": "", "refusal": None, "reasoning": None},
        }
        outputs = 0
        if self.fail_midway is not None:
            choice.update(finish_reason="error", native_finish_reason=None, error=self.fail_midway)
            self.fail_midway = None
        elif self.refusal_trigger.lower() in prompt.lower():
            choice.update(finish_reason="content_filter", native_finish_reason="IMAGE_SAFETY")
            choice["message"]["content"] = "I can't create that image."
        elif "image" in params.get("modalities", []):
            outputs = 1
            png = base64.b64encode(image_bytes("png")).decode("ascii")
            choice["message"]["content"] = "Here is your image."
            choice["message"]["images"] = [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}
            ]
        else:
            choice["message"]["content"] = f"I would draw {prompt}, but I can only describe it."
        prompt_tokens = max(1, len(prompt) // 4) + 258 * images
        completion_tokens = IMAGE_TOKENS * outputs + 10
        cost = prompt_tokens * USD_PER_INPUT_TOKEN + completion_tokens * USD_PER_OUTPUT_TOKEN
        return JSONResponse(
            {
                "id": f"gen-{uuid.uuid4().hex[:24]}",
                "provider": "OpenAI" if model.startswith("openai/") else "Google",
                "model": model,
                "object": "chat.completion",
                "created": int(time.time()),
                "choices": [choice],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "cost": 0 if model.endswith(":free") else round(cost, 8),
                    "is_byok": False,
                },
            }
        )

    # ------------------------------------------------------------------ validation

    def _authorise(self, rec: Recorded) -> None:
        header = rec.headers.get("authorization", "")
        key = header[7:].strip() if header.startswith("Bearer ") else ""
        if not key:
            raise _Invalid(401, openrouter_error(401, "No auth credentials found"))
        if key != self.api_key:
            raise _Invalid(401, openrouter_error(401, "User not found."))

    def _validate(self, params: dict[str, Any]) -> tuple[str, str, int]:
        unknown = sorted(set(params) - KNOWN_FIELDS)
        if unknown:
            raise _bad(f"Unrecognized key(s) in object: '{unknown[0]}'")
        model = params.get("model")
        if model not in MODELS:
            raise _bad(f"{model} is not a valid model ID")
        modalities = params.get("modalities", ["text"])
        if not isinstance(modalities, list) or not set(modalities) <= {"image", "text"}:
            raise _bad("modalities must be an array of 'image' and 'text'")
        if model in IMAGE_ONLY_MODELS and "text" in modalities:
            raise _Invalid(
                404,
                openrouter_error(
                    404,
                    "No endpoints found that support the requested output modalities: "
                    + ", ".join(modalities),
                ),
            )
        config = params.get("image_config")
        if config is not None:
            if not isinstance(config, dict) or set(config) - {"aspect_ratio", "image_size"}:
                raise _bad("image_config may only contain aspect_ratio and image_size")
            if "aspect_ratio" in config and config["aspect_ratio"] not in ASPECT_RATIOS:
                raise _bad(f"Unsupported aspect_ratio: {config['aspect_ratio']}")
        messages = params.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("messages must be a non-empty array")
        prompt, images = "", 0
        for message in messages:
            if not isinstance(message, dict) or message.get("role") not in ("user", "system"):
                raise _bad("each message needs a role of 'user' or 'system'")
            text, count = _read_content(message.get("content"))
            prompt, images = prompt + text, images + count
        if not prompt.strip():
            raise _bad("the request has no text prompt")
        return str(model), prompt, images


def _read_content(content: Any) -> tuple[str, int]:
    """The text and the number of images of one message's content."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise _bad("content must be a string or an array of content parts")
    text, images = "", 0
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            text += part["text"]
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            _check_image_url(part["image_url"].get("url"))
            images += 1
        else:
            raise _bad(f"Invalid content part: {str(part)[:80]}")
    return text, images


def _check_image_url(url: Any) -> None:
    if isinstance(url, str) and url.startswith("https://"):
        return
    match = _DATA_URI.match(url) if isinstance(url, str) else None
    if match is None:
        raise _bad("image_url.url must be an https URL or a base64 image data URI")
    try:
        with Image.open(io.BytesIO(base64.b64decode(match.group(2), validate=True))) as img:
            img.verify()
    except (binascii.Error, ValueError, OSError):
        raise _bad("image_url.url is not a readable image") from None


_CONTRACT_JOB = Job(modality="image", model="google/gemini-2.5-flash:free", prompt="a red fox")

CONTRACT_CASES = [
    ContractCase(
        id="openrouter",
        provider=OpenRouterProvider,
        make_fake=FakeOpenRouter,
        # The setting is a comma list; the adapter must use only the first key.
        credential=f"{DEFAULT_API_KEY}, {SECOND_API_KEY}",
        base_path="",
        job=_CONTRACT_JOB,
        target=Target("google/gemini-2.5-flash-image-preview:free"),
        refused_job=replace(_CONTRACT_JOB, prompt="a forbidden-content scene"),
    ),
]
