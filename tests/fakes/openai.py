"""A fake OpenAI Images API: `POST /v1/images/generations` (JSON) and `/edits`.

It speaks OpenAI's wire format and validates the way OpenAI does, so an adapter that
sends a field a model does not take (e.g. `response_format` to gpt-image-1) fails here
as it would in production:

- auth: `Authorization: Bearer <api_key>`; missing or wrong → 401 with OpenAI's body;
- missing prompt, unknown model or parameter, unsupported size/quality/output_format,
  bad `n`, unsupported file type or unreadable image → 400 `invalid_request_error`;
- a prompt containing `moderation_trigger` → 400 `moderation_blocked` (gpt-image) or
  `content_policy_violation` (dall-e);
- success: gpt-image bodies carry `usage` (tokens derived deterministically, see
  `usage_for`), `output_format`, `quality`, `size`, `background`; dall-e bodies carry
  `url` (served by the fake at `GET /files/<id>.png`) or `b64_json`, and dall-e-3 a
  `revised_prompt`.

To stay cheap the fake always draws a 64x64 image: it reports the requested `size` but
does not honour it in pixels. It honours `n` and, for gpt-image, `output_format`.
"""

from __future__ import annotations

import base64
import io
import math
import time
import uuid
from dataclasses import replace
from functools import lru_cache
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.openai import OpenAIProvider
from tests.fakes.contract import ContractCase
from tests.fakes.upstream import FakeVendor, Recorded, RecordedFile

DEFAULT_API_KEY = "sk-fake-openai-0123456789abcdef"

GPT_IMAGE_MODELS = frozenset({"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"})
DALLE_MODELS = frozenset({"dall-e-2", "dall-e-3"})
EDIT_MODELS = GPT_IMAGE_MODELS | {"dall-e-2"}

SIZES = {
    "gpt-image": ("auto", "1024x1024", "1536x1024", "1024x1536"),
    "dall-e-2": ("256x256", "512x512", "1024x1024"),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
}
QUALITIES = {
    "gpt-image": ("auto", "low", "medium", "high"),
    "dall-e-2": ("auto", "standard"),
    "dall-e-3": ("auto", "standard", "hd"),
}
OUTPUT_FORMATS = ("png", "jpeg", "webp")
IMAGE_MIME_TYPES = ("image/jpeg", "image/png", "image/webp")

# OpenAI's published output-token counts for gpt-image-1 (the fake uses them for every
# gpt-image model; "auto" renders as medium, size "auto" as 1024x1024).
OUTPUT_TOKENS = {
    ("low", "1024x1024"): 272,
    ("low", "1024x1536"): 408,
    ("low", "1536x1024"): 400,
    ("medium", "1024x1024"): 1056,
    ("medium", "1024x1536"): 1584,
    ("medium", "1536x1024"): 1568,
    ("high", "1024x1024"): 4160,
    ("high", "1024x1536"): 6240,
    ("high", "1536x1024"): 6208,
}
# OpenAI's real count depends on each input image's dimensions and `input_fidelity`.
INPUT_IMAGE_TOKENS = 388

# gpt-image knobs that dall-e models reject, and dall-e knobs gpt-image models reject.
GPT_IMAGE_ONLY = frozenset(
    {
        "background",
        "moderation",
        "output_format",
        "output_compression",
        "partial_images",
    }
)
DALLE_ONLY = frozenset({"response_format", "style"})
KNOWN_PARAMS = (
    frozenset(
        {
            "prompt",
            "model",
            "n",
            "size",
            "quality",
            "user",
            "safety_identifier",
            "stream",
        }
    )
    | GPT_IMAGE_ONLY
    | DALLE_ONLY
    | {"input_fidelity"}
)

MODERATION_MESSAGE = (
    "Request was rejected as a result of the safety system. Request may contain "
    "content that is not allowed by the safety system."
)
CONTENT_POLICY_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your prompt may "
    "contain text that is not allowed by our safety system."
)
NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an "
    "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or "
    "as the password field (with blank username) if you're accessing the API from your "
    "browser and are prompted for a username and password. You can obtain an API key "
    "from https://platform.openai.com/account/api-keys."
)


def openai_error(
    message: str,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


MODERATION_BODY = openai_error(
    MODERATION_MESSAGE, "image_generation_user_error", code="moderation_blocked"
)
QUOTA_BODY = openai_error(
    "You exceeded your current quota, please check your plan and billing details. For "
    "more information on this error, read the docs: "
    "https://platform.openai.com/docs/guides/error-codes/api-errors.",
    "insufficient_quota",
    code="insufficient_quota",
)


def mask_key(key: str) -> str:
    """How OpenAI echoes a wrong key: a few characters each side, the rest starred."""
    if len(key) <= 8:
        return "*" * len(key)
    return key[:3] + "*" * (len(key) - 7) + key[-4:]


def usage_for(prompt: str, quality: str, size: str, input_images: int = 0) -> dict[str, Any]:
    """Deterministic gpt-image token usage.

    About 4 characters per text token, a fixed count per input image, and OpenAI's
    published output-token table.
    """
    text = max(1, math.ceil(len(prompt) / 4))
    image = INPUT_IMAGE_TOKENS * input_images
    output = OUTPUT_TOKENS[(rendered_quality(quality), rendered_size(size))]
    return {
        "input_tokens": text + image,
        "input_tokens_details": {"text_tokens": text, "image_tokens": image},
        "output_tokens": output,
        "total_tokens": text + image + output,
    }


def rendered_quality(quality: str) -> str:
    return quality if quality in ("low", "medium", "high") else "medium"


def rendered_size(size: str) -> str:
    return "1024x1024" if size == "auto" else size


@lru_cache(maxsize=8)
def image_bytes(output_format: str = "png") -> bytes:
    """A real 64x64 image in `output_format` (png, jpeg or webp).

    A pattern, not a flat colour: a flat image encodes shorter than `redact`'s cut-off,
    which real images never do, and would slip through log redaction unlike them.
    """
    pixels = bytes(
        (x * 7 + y * 13 + c * 101) % 256 for y in range(64) for x in range(64) for c in range(3)
    )
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), pixels).save(buffer, format=output_format.upper())
    return buffer.getvalue()


class _Invalid(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


def _bad(message: str, param: str | None = None, code: str | None = None) -> _Invalid:
    return _Invalid(400, openai_error(message, param=param, code=code))


def _family(model: str) -> str:
    return "gpt-image" if model in GPT_IMAGE_MODELS else model


class FakeOpenAI(FakeVendor):
    """The OpenAI Images API. Give the provider `base_url=<fake base>/v1`."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        moderation_trigger: str = "forbidden-content",
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.moderation_trigger = moderation_trigger
        self.files: dict[str, bytes] = {}
        self.add_route("/v1/images/generations", self._generations, ["POST"])
        self.add_route("/v1/images/edits", self._edits, ["POST"])
        self.add_route("/files/{name}", self._file, ["GET"], scripted=False)

    def error_body(self, status: int) -> object:
        if status == 401:
            return openai_error(
                "Incorrect API key provided. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        if status == 429:
            return openai_error(
                "Rate limit reached for images per minute. Please try again in 12s.",
                "requests",
                code="rate_limit_exceeded",
            )
        if status == 503:
            return openai_error(
                "The engine is currently overloaded, please try again later.",
                "server_error",
            )
        if status >= 500:
            return openai_error(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
            )
        return openai_error(f"Fake OpenAI error {status}.")

    # ------------------------------------------------------------------ routes

    async def _generations(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
            if not isinstance(rec.json, dict):
                raise _bad(
                    "We could not parse the JSON body of your request. (HINT: This "
                    "likely means you aren't using your HTTP library correctly. The "
                    "OpenAI API expects a JSON payload, but what was sent was not "
                    "valid JSON.)"
                )
            params: dict[str, Any] = rec.json
            model = self._model(params, allowed=GPT_IMAGE_MODELS | DALLE_MODELS)
            return self._answer(rec, params, model, images=[])
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)

    async def _edits(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
            if rec.content_type != "multipart/form-data":
                raise _bad(
                    "Invalid content type. Image edit requests must use multipart/form-data."
                )
            params: dict[str, Any] = {name: values[0] for name, values in rec.form.items()}
            model = self._model(params, allowed=EDIT_MODELS)
            images = rec.files_named("image", "image[]")
            masks = rec.files_named("mask")
            self._check_images(model, images, masks)
            return self._answer(rec, params, model, images=images)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)

    async def _file(self, request: Request, rec: Recorded) -> Response:
        name = request.path_params["name"].removesuffix(".png")
        if name not in self.files:
            return JSONResponse(openai_error("File not found."), status_code=404)
        return Response(self.files[name], media_type="image/png")

    # ------------------------------------------------------------------ validation

    def _authorise(self, rec: Recorded) -> None:
        header = rec.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise _Invalid(401, openai_error(NO_KEY_MESSAGE))
        key = header[7:].strip()
        if key != self.api_key:
            raise _Invalid(
                401,
                openai_error(
                    f"Incorrect API key provided: {mask_key(key)}. You can find your "
                    "API key at https://platform.openai.com/account/api-keys.",
                    code="invalid_api_key",
                ),
            )

    def _model(self, params: dict[str, Any], *, allowed: frozenset[str]) -> str:
        if not params.get("prompt"):
            raise _bad(
                "Missing required parameter: 'prompt'.",
                "prompt",
                "missing_required_parameter",
            )
        # Historically OpenAI's default image model.
        model = params.get("model") or "dall-e-2"
        if model not in allowed:
            listed = ", ".join(f"'{m}'" for m in sorted(allowed))
            raise _bad(
                f"Invalid value: '{model}'. Supported values are: {listed}.",
                "model",
                "invalid_value",
            )
        return str(model)

    def _check_params(self, params: dict[str, Any], model: str) -> None:
        refused = DALLE_ONLY if model in GPT_IMAGE_MODELS else GPT_IMAGE_ONLY
        for name in params:
            if name not in KNOWN_PARAMS or name in refused:
                raise _bad(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        family = _family(model)
        checks = (
            ("size", SIZES[family]),
            ("quality", QUALITIES[family]),
            ("output_format", OUTPUT_FORMATS),
            ("response_format", ("url", "b64_json")),
        )
        for name, allowed in checks:
            value = params.get(name)
            if value is not None and value not in allowed:
                listed = ", ".join(f"'{v}'" for v in allowed)
                raise _bad(
                    f"Invalid value: '{value}'. Supported values are: {listed}.",
                    name,
                    "invalid_value",
                )
        n = params.get("n", 1)
        try:
            count = int(n)
        except (TypeError, ValueError):
            raise _bad(
                f"Invalid type for 'n': expected an integer, but got {n!r}.",
                "n",
                "invalid_type",
            ) from None
        if not 1 <= count <= 10 or (model == "dall-e-3" and count != 1):
            raise _bad(
                f"Invalid 'n': {count} is not supported for {model}.",
                "n",
                "invalid_value",
            )

    def _check_images(
        self, model: str, images: list[RecordedFile], masks: list[RecordedFile]
    ) -> None:
        if not images:
            raise _bad(
                "Missing required parameter: 'image'.",
                "image",
                "missing_required_parameter",
            )
        limit = 1 if model == "dall-e-2" else 16
        if len(images) > limit:
            raise _bad(
                f"Invalid 'image': {model} accepts at most {limit} image(s).",
                "image",
                "invalid_value",
            )
        if len(masks) > 1:
            raise _bad(
                "Invalid 'mask': only one mask may be provided.",
                "mask",
                "invalid_value",
            )
        for field, files, types in (
            ("image", images, IMAGE_MIME_TYPES),
            ("mask", masks, ("image/png",)),
        ):
            for index, file in enumerate(files, start=1):
                if file.content_type not in types:
                    listed = ", ".join(f"'{t}'" for t in types)
                    raise _bad(
                        f"Invalid file '{field}': unsupported mimetype "
                        f"('{file.content_type}'). Supported file formats are "
                        f"{listed}.",
                        field,
                        "unsupported_file_mimetype",
                    )
                try:
                    with Image.open(io.BytesIO(file.data)) as img:
                        img.verify()
                except Exception:
                    raise _bad(
                        f"Invalid image file or mode for {field} {index}, please "
                        "check your image file.",
                        field,
                        "invalid_image_file",
                    ) from None

    # ------------------------------------------------------------------ answers

    def _answer(
        self,
        rec: Recorded,
        params: dict[str, Any],
        model: str,
        images: list[RecordedFile],
    ) -> Response:
        self._check_params(params, model)
        prompt = str(params["prompt"])
        if self.moderation_trigger.lower() in prompt.lower():
            if model in GPT_IMAGE_MODELS:
                return JSONResponse(MODERATION_BODY, status_code=400)
            return JSONResponse(
                openai_error(CONTENT_POLICY_MESSAGE, code="content_policy_violation"),
                status_code=400,
            )
        count = int(params.get("n", 1))
        created = int(time.time())
        if model in GPT_IMAGE_MODELS:
            output_format = params.get("output_format") or "png"
            quality = str(params.get("quality") or "auto")
            size = str(params.get("size") or "auto")
            background = params.get("background")
            payload = base64.b64encode(image_bytes(output_format)).decode("ascii")
            return JSONResponse(
                {
                    "created": created,
                    "background": background
                    if background in ("transparent", "opaque")
                    else "opaque",
                    "data": [{"b64_json": payload} for _ in range(count)],
                    "output_format": output_format,
                    "quality": rendered_quality(quality),
                    "size": rendered_size(size),
                    "usage": usage_for(prompt, quality, size, input_images=len(images)),
                }
            )
        items = [self._dalle_item(rec, params, model, prompt) for _ in range(count)]
        return JSONResponse({"created": created, "data": items})

    def _dalle_item(
        self, rec: Recorded, params: dict[str, Any], model: str, prompt: str
    ) -> dict[str, Any]:
        png = image_bytes("png")
        item: dict[str, Any]
        if params.get("response_format") == "b64_json":
            item = {"b64_json": base64.b64encode(png).decode("ascii")}
        else:
            file_id = uuid.uuid4().hex
            self.files[file_id] = png
            item = {"url": f"{rec.base_url}files/{file_id}.png"}
        if model == "dall-e-3":
            item["revised_prompt"] = f"A detailed, vivid illustration of {prompt}"
        return item


_CONTRACT_JOB = Job(
    modality="image", model="openai/gpt-image-1", prompt="a red kite", quality="low"
)

CONTRACT_CASES = [
    ContractCase(
        id="openai",
        provider=OpenAIProvider,
        make_fake=FakeOpenAI,
        credential=DEFAULT_API_KEY,
        base_path="/v1",
        job=_CONTRACT_JOB,
        target=Target("gpt-image-1"),
        refused_job=replace(_CONTRACT_JOB, prompt="a forbidden-content scene"),
    ),
]
