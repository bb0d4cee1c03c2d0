"""A fake Google AI Studio (Gemini API): Gemini images, Imagen and Veo on one host.

Routes, as Google serves them below `/v1beta`:

- `POST /models/{model}:generateContent` (Gemini image models), `:predict` (Imagen),
  `:predictLongRunning` (Veo, answers `{"name": "models/{model}/operations/{id}"}`);
- `GET /models/{model}/operations/{id}`: not done for `polls_before_done` polls, then
  done with `response.generateVideoResponse.generatedSamples[].video.uri`;
- `GET /files/{id}:download?alt=media`: needs the key, answers 302 to a signed storage
  URL `/storage/{token}` on another host (`storage.<host>`) that needs no key.

Auth is Google's: the key in `x-goog-api-key` (or `?key=`); none → 403
`PERMISSION_DENIED`, a wrong one → 400 `INVALID_ARGUMENT` with reason `API_KEY_INVALID`.
Unknown models → 404 `NOT_FOUND`; unknown fields, bad enums, undecodable images → 400
`INVALID_ARGUMENT`, in Google's `{"error": {code, message, status, details}}` envelope.

A prompt containing `forbidden-content` is refused the way each API refuses: Gemini answers
200 with `promptFeedback.blockReason = PROHIBITED_CONTENT`, Imagen 400 with its
Responsible-AI message, Veo a done operation with `raiMediaFilteredCount`. Test knobs
(attributes): `images_per_answer`, `thought_images`, `text_only`, `blocked_finish`,
`imagen_filtered`, `polls_before_done`, `operation_error`.
"""

from __future__ import annotations

import base64
import binascii
import io
import ipaddress
import uuid
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import httpx
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.gemini import GeminiProvider
from image_router.providers.gemini_imagen import GeminiImagenProvider
from image_router.providers.test import VIDEO_ASSET
from tests.fakes.contract import ContractCase
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "AIzaSyFake-gemini-0123456789abcdefghijk"
REFUSAL_TRIGGER = "forbidden-content"

GEMINI_IMAGE_MODELS = frozenset(
    {"gemini-2.5-flash-image", "gemini-2.5-flash-image-preview", "gemini-3-pro-image-preview"}
)
IMAGEN_MODELS = frozenset(
    {"imagen-3.0-generate-002", "imagen-4.0-generate-001", "imagen-4.0-fast-generate-001"}
)
VEO_MODELS = frozenset(
    {
        "veo-2.0-generate-001",
        "veo-3.0-generate-001",
        "veo-3.0-fast-generate-001",
        "veo-3.1-generate-preview",
        "veo-3.1-fast-generate-preview",
    }
)
INPUT_MIME_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
GEMINI_ASPECT_RATIOS = frozenset(
    {"1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9"}
)
IMAGEN_ASPECT_RATIOS = frozenset({"1:1", "3:4", "4:3", "9:16", "16:9"})
PERSON_GENERATION = frozenset({"dont_allow", "allow_adult", "allow_all"})
IMAGEN_PARAMETERS = frozenset(
    {"sampleCount", "aspectRatio", "personGeneration", "includeRaiReason"}
    | {"includeSafetyAttributes", "safetySetting", "outputOptions", "sampleImageSize"}
)
VEO_PARAMETERS = frozenset(
    {"aspectRatio", "personGeneration", "sampleCount", "durationSeconds", "resolution"}
    | {"negativePrompt", "enhancePrompt", "numberOfVideos"}
)

API_KEY_INVALID_MESSAGE = "API key not valid. Please pass a valid API key."
NO_KEY_MESSAGE = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
QUOTA_MESSAGE = (
    "You exceeded your current quota, please check your plan and billing details. For "
    "more information on this error, head to: https://ai.google.dev/gemini-api/docs/"
    "rate-limits."
)
IMAGEN_REFUSAL_MESSAGE = (
    "Image generation failed with the following error: The prompt could not be submitted. "
    "This prompt contains sensitive words that violate Google's Responsible AI practices. "
    "Try rephrasing the prompt. If you think this was an error, send feedback. Support "
    "codes: 42876398"
)
IMAGEN_FILTERED_MESSAGE = (
    "Unable to show generated images. All images were filtered out because they violated "
    "Google's Responsible AI practices. You will not be charged for blocked images. "
    "Support codes: 58061214"
)
VEO_FILTERED_REASON = (
    "Sorry, we can't create videos from prompts that violate our policies. You will not "
    "be charged for this request. Support codes: 17301594"
)
TOKENS_PER_IMAGE = 1290


def google_error(code: int, status: str, message: str, reason: str | None = None) -> Any:
    """Google's error envelope; `reason` adds the ErrorInfo detail (e.g. API_KEY_INVALID)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if reason is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            },
            {
                "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                "locale": "en-US",
                "message": message,
            },
        ]
    return {"error": error}


API_KEY_INVALID_BODY = google_error(
    400, "INVALID_ARGUMENT", API_KEY_INVALID_MESSAGE, "API_KEY_INVALID"
)
QUOTA_BODY = google_error(429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE)
OVERLOADED_BODY = google_error(
    503, "UNAVAILABLE", "The model is overloaded. Please try again later."
)
INTERNAL_BODY = google_error(
    500,
    "INTERNAL",
    "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
)


@lru_cache(maxsize=4)
def image_bytes(fmt: str = "png") -> bytes:
    """A real 64x64 patterned image (a flat one would encode shorter than `redact` cuts)."""
    pixels = bytes(
        (x * 5 + y * 11 + c * 97) % 256 for y in range(64) for x in range(64) for c in range(3)
    )
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), pixels).save(buffer, format=fmt.upper())
    return buffer.getvalue()


def video_bytes() -> bytes:
    return VIDEO_ASSET.read_bytes()


class _Invalid(Exception):
    def __init__(self, body: Any) -> None:
        super().__init__(body["error"]["message"])
        self.body = body
        self.status = int(body["error"]["code"])


def _bad(message: str) -> _Invalid:
    return _Invalid(google_error(400, "INVALID_ARGUMENT", message))


def _unknown_field(name: str, where: str = "") -> _Invalid:
    at = f" at '{where}'" if where else ""
    return _bad(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def _storage_root(base_url: str) -> str:
    """Google redirects downloads to another host; in process, `storage.<host>` stands in.

    Over loopback (an IP literal, no DNS) the fake's own root is the only reachable host.
    """
    url = httpx.URL(base_url)
    try:
        ipaddress.ip_address(url.host)
    except ValueError:
        return str(url.copy_with(host=f"storage.{url.host}"))
    return base_url


@dataclass
class _Operation:
    model: str
    polls_left: int
    outcome: str  # "ok" | "filtered" | "error"
    samples: int = 1


class FakeGemini(FakeVendor):
    """Google AI Studio. Give the providers `base_url=<fake root>` (no version suffix)."""

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.images_per_answer = 1
        self.thought_images = 0
        self.text_only = False
        self.blocked_finish: str | None = None
        self.imagen_filtered = False
        self.polls_before_done = 1
        self.operation_error: dict[str, Any] | None = None
        self.operations: dict[str, _Operation] = {}
        self.files: dict[str, bytes] = {}
        self.signed: dict[str, str] = {}
        self.add_route("/v1beta/models/{call}", self._call, ["POST"])
        self.add_route(
            "/v1beta/models/{model}/operations/{op}", self._operation, ["GET"], poll=True
        )
        self.add_route("/v1beta/files/{call}", self._file, ["GET"], scripted=False)
        self.add_route("/storage/{token}", self._storage, ["GET"], scripted=False)

    def error_body(self, status: int) -> object:
        known = {
            400: google_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
            403: google_error(403, "PERMISSION_DENIED", NO_KEY_MESSAGE),
            404: google_error(404, "NOT_FOUND", "Requested entity was not found."),
            429: QUOTA_BODY,
            500: INTERNAL_BODY,
            503: OVERLOADED_BODY,
            504: google_error(
                504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
            ),
        }
        return known.get(status, google_error(status, "UNKNOWN", f"Fake Google error {status}."))

    # ------------------------------------------------------------------ routes

    async def _call(self, request: Request, rec: Recorded) -> Response:
        model, _, action = request.path_params["call"].partition(":")
        handlers = {
            "generateContent": (GEMINI_IMAGE_MODELS, self._generate_content),
            "predict": (IMAGEN_MODELS, self._predict),
            "predictLongRunning": (VEO_MODELS, self._predict_long_running),
        }
        try:
            self._authorise(rec)
            if action not in handlers:
                raise _Invalid(google_error(404, "NOT_FOUND", "Method not found."))
            models, handler = handlers[action]
            if model not in models:
                raise _Invalid(
                    google_error(
                        404,
                        "NOT_FOUND",
                        f"models/{model} is not found for API version v1beta, or is not "
                        f"supported for {action}. Call ListModels to see the list of "
                        "available models and their supported methods.",
                    )
                )
            if not isinstance(rec.json, dict):
                raise _bad("Invalid JSON payload received. Unexpected token.")
            return handler(rec, model, rec.json)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)

    async def _operation(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        name = f"models/{request.path_params['model']}/operations/{request.path_params['op']}"
        operation = self.operations.get(request.path_params["op"])
        if operation is None or operation.model != request.path_params["model"]:
            body = google_error(404, "NOT_FOUND", f"Operation {name} not found.")
            return JSONResponse(body, status_code=404)
        if operation.polls_left > 0:
            operation.polls_left -= 1
            return JSONResponse({"name": name})
        if operation.outcome == "error":
            return JSONResponse({"name": name, "done": True, "error": self.operation_error})
        answer: dict[str, Any]
        if operation.outcome == "filtered":
            answer = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": [VEO_FILTERED_REASON]}
        else:
            answer = {"generatedSamples": [self._sample(rec) for _ in range(operation.samples)]}
        response = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
            "PredictLongRunningResponse",
            "generateVideoResponse": answer,
        }
        return JSONResponse({"name": name, "done": True, "response": response})

    async def _file(self, request: Request, rec: Recorded) -> Response:
        file_id, _, action = request.path_params["call"].partition(":")
        try:
            self._authorise(rec)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        if action != "download" or file_id not in self.files:
            body = google_error(404, "NOT_FOUND", "Requested entity was not found.")
            return JSONResponse(body, status_code=404)
        token = uuid.uuid4().hex
        self.signed[token] = file_id
        return RedirectResponse(f"{_storage_root(rec.base_url)}storage/{token}", status_code=302)

    async def _storage(self, request: Request, rec: Recorded) -> Response:
        file_id = self.signed.get(request.path_params["token"])
        if file_id is None:
            return Response(b"<Error><Code>AccessDenied</Code></Error>", status_code=403)
        return Response(self.files[file_id], media_type="video/mp4")

    # ------------------------------------------------------------------ checks

    def _authorise(self, rec: Recorded) -> None:
        key = rec.headers.get("x-goog-api-key") or rec.query.get("key")
        if not key:
            raise _Invalid(google_error(403, "PERMISSION_DENIED", NO_KEY_MESSAGE))
        if key != self.api_key:
            raise _Invalid(API_KEY_INVALID_BODY)

    def _image(self, blob: Any, mime_field: str, data_field: str) -> None:
        if not isinstance(blob, dict) or not isinstance(blob.get(data_field), str):
            raise _bad(f"* {data_field}: required field is not set")
        mime = blob.get(mime_field)
        if mime not in INPUT_MIME_TYPES:
            raise _bad(f"Unsupported MIME type: {mime}")
        try:
            raw = base64.b64decode(blob[data_field], validate=True)
            with Image.open(io.BytesIO(raw)) as img:
                img.verify()
        except (binascii.Error, OSError, SyntaxError):
            raise _bad(
                "Unable to process input image. Please retry or report in "
                "https://developers.generativeai.google/guide/troubleshooting"
            ) from None

    # ------------------------------------------------------------------ Gemini

    def _generate_content(self, rec: Recorded, model: str, body: dict[str, Any]) -> Response:
        allowed = {"contents", "generationConfig", "generation_config", "safetySettings"}
        for name in body:
            if name not in allowed | {"safety_settings", "systemInstruction", "tools"}:
                raise _unknown_field(name)
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _bad("* GenerateContentRequest.contents: contents is not specified")
        texts: list[str] = []
        for content in contents:
            parts = content.get("parts") if isinstance(content, dict) else None
            if not isinstance(parts, list) or not parts:
                raise _bad(
                    "* GenerateContentRequest.contents.parts: contents.parts must not be empty."
                )
            for part in parts:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif isinstance(part, dict) and "inline_data" in part:
                    self._image(part["inline_data"], "mime_type", "data")
                elif isinstance(part, dict) and "inlineData" in part:
                    self._image(part["inlineData"], "mimeType", "data")
                else:
                    raise _bad(
                        "* GenerateContentRequest.contents.parts.data: required oneof field "
                        "'data' must have one initialized field"
                    )
        modalities = self._generation_config(
            body.get("generationConfig", body.get("generation_config", {}))
        )
        envelope = {"modelVersion": model, "responseId": uuid.uuid4().hex[:22]}
        prompt_tokens = sum(len(t) // 4 + 1 for t in texts)
        if any(REFUSAL_TRIGGER in t.lower() for t in texts):
            usage = {"promptTokenCount": prompt_tokens, "totalTokenCount": prompt_tokens}
            return JSONResponse(
                {
                    "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                    "usageMetadata": usage,
                    **envelope,
                }
            )
        candidate: dict[str, Any] = {"finishReason": "STOP", "index": 0}
        if self.blocked_finish:
            candidate["finishReason"] = self.blocked_finish
            images = 0
        else:
            parts_out: list[dict[str, Any]] = [{"text": "Here is the image you asked for."}]
            png = base64.b64encode(image_bytes()).decode("ascii")
            blob = {"inlineData": {"mimeType": "image/png", "data": png}}
            parts_out += [{**blob, "thought": True} for _ in range(self.thought_images)]
            images = 0 if self.text_only or "IMAGE" not in modalities else self.images_per_answer
            parts_out += [blob] * images
            candidate["content"] = {"parts": parts_out, "role": "model"}
        usage = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": TOKENS_PER_IMAGE * images,
            "totalTokenCount": prompt_tokens + TOKENS_PER_IMAGE * images,
        }
        return JSONResponse({"candidates": [candidate], "usageMetadata": usage, **envelope})

    def _generation_config(self, config: Any) -> set[str]:
        if not isinstance(config, dict):
            raise _bad(
                "Invalid value at 'generation_config' "
                "(type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig)"
            )
        modalities: set[str] = {"TEXT"}
        for name, value in config.items():
            if name in ("responseModalities", "response_modalities"):
                # Google takes these enum names in any case (the reference sends "Image").
                if not isinstance(value, list):
                    raise _bad("Invalid value at 'generation_config.response_modalities'.")
                modalities = {str(v).upper() for v in value}
                if not modalities <= {"TEXT", "IMAGE"}:
                    raise _bad(f"Invalid value at 'generation_config.response_modalities': {value}")
            elif name in ("imageConfig", "image_config"):
                self._image_config(value)
            elif name not in ("candidateCount", "temperature", "topP", "seed"):
                raise _unknown_field(name, "generation_config")
        return modalities

    def _image_config(self, config: Any) -> None:
        if not isinstance(config, dict):
            raise _bad("Invalid value at 'generation_config.image_config'.")
        for name, value in config.items():
            if name in ("aspectRatio", "aspect_ratio"):
                if value not in GEMINI_ASPECT_RATIOS:
                    raise _bad(f"Unsupported aspect ratio: {value}")
            elif name in ("imageSize", "image_size"):
                if value not in ("1K", "2K", "4K"):
                    raise _bad(f"Unsupported image size: {value}")
            else:
                raise _unknown_field(name, "generation_config.image_config")

    # ------------------------------------------------------------------ Imagen

    def _predict(self, rec: Recorded, model: str, body: dict[str, Any]) -> Response:
        prompt, parameters = self._instance(body, IMAGEN_PARAMETERS)
        count = parameters.get("sampleCount", 4)
        if not isinstance(count, int) or not 1 <= count <= 4:
            raise _bad("Number of images must be between 1 and 4.")
        if parameters.get("aspectRatio", "1:1") not in IMAGEN_ASPECT_RATIOS:
            raise _bad(f"Unsupported aspect ratio: {parameters['aspectRatio']}")
        if parameters.get("personGeneration", "allow_adult") not in PERSON_GENERATION:
            raise _bad(f"Unsupported person generation: {parameters['personGeneration']}")
        if REFUSAL_TRIGGER in prompt.lower():
            raise _bad(IMAGEN_REFUSAL_MESSAGE)
        if self.imagen_filtered:
            if parameters.get("includeRaiReason"):
                return JSONResponse(
                    {"predictions": [{"raiFilteredReason": IMAGEN_FILTERED_MESSAGE}]}
                )
            return JSONResponse({})
        png = base64.b64encode(image_bytes()).decode("ascii")
        item = {"mimeType": "image/png", "bytesBase64Encoded": png}
        return JSONResponse({"predictions": [item] * count})

    def _instance(self, body: dict[str, Any], known: frozenset[str]) -> tuple[str, dict[str, Any]]:
        for name in body:
            if name not in ("instances", "parameters"):
                raise _unknown_field(name)
        instances = body.get("instances")
        if (
            not isinstance(instances, list)
            or len(instances) != 1
            or not isinstance(instances[0], dict)
        ):
            raise _bad("Exactly one instance is supported.")
        prompt = instances[0].get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _bad("Prompt is required.")
        parameters = body.get("parameters", {})
        if not isinstance(parameters, dict):
            raise _bad("Invalid value at 'parameters'.")
        for name in parameters:
            if name not in known:
                raise _unknown_field(name, "parameters")
        return prompt, parameters

    # ------------------------------------------------------------------ Veo

    def _predict_long_running(self, rec: Recorded, model: str, body: dict[str, Any]) -> Response:
        prompt, parameters = self._instance(body, VEO_PARAMETERS)
        instance = body["instances"][0]
        for name in instance:
            if name not in ("prompt", "image"):
                raise _unknown_field(name, "instances[0]")
        has_image = "image" in instance
        if has_image:
            self._image(instance["image"], "mimeType", "bytesBase64Encoded")
        if parameters.get("aspectRatio", "16:9") not in ("16:9", "9:16"):
            raise _bad(f"Aspect ratio {parameters['aspectRatio']} is not supported.")
        self._check_person_generation(model, has_image, parameters.get("personGeneration"))
        self._check_duration(model, parameters.get("durationSeconds", 8))
        resolution = parameters.get("resolution", "720p")
        if not model.startswith("veo-2") and resolution not in ("720p", "1080p"):
            raise _bad(f"Resolution {resolution} is not supported.")
        count = parameters.get("sampleCount", 1)
        if not isinstance(count, int) or not 1 <= count <= 4:
            raise _bad("sampleCount must be between 1 and 4.")
        op_id = uuid.uuid4().hex[:12]
        outcome = "ok"
        if REFUSAL_TRIGGER in prompt.lower():
            outcome = "filtered"
        elif self.operation_error is not None:
            outcome = "error"
        self.operations[op_id] = _Operation(model, self.polls_before_done, outcome, count)
        return JSONResponse({"name": f"models/{model}/operations/{op_id}"})

    def _check_person_generation(self, model: str, has_image: bool, value: Any) -> None:
        if model.startswith("veo-2"):
            allowed = {"allow_adult", "dont_allow"} if has_image else set(PERSON_GENERATION)
        else:
            allowed = {"allow_adult"} if has_image else {"allow_all"}
        if value is not None and value not in allowed:
            raise _bad(f"{value} for personGeneration is currently not supported.")

    def _check_duration(self, model: str, value: Any) -> None:
        allowed = range(5, 9) if model.startswith("veo-2") else (4, 6, 8)
        if not isinstance(value, int) or value not in allowed:
            raise _bad(f"The duration {value!r} is not supported by {model}.")

    def _sample(self, rec: Recorded) -> dict[str, Any]:
        file_id = uuid.uuid4().hex[:12]
        self.files[file_id] = video_bytes()
        return {"video": {"uri": f"{rec.base_url}v1beta/files/{file_id}:download?alt=media"}}


_IMAGE_JOB = Job(modality="image", model="google/gemini-2.5-flash", prompt="a red kite")
_IMAGEN_JOB = Job(modality="image", model="google/imagen-3", prompt="a red kite", size="1024x1024")
_VIDEO_JOB = Job(
    modality="video", model="google/veo-3-fast", prompt="a red kite", size="1280x720", seconds=4
)


def _case(
    provider: type[GeminiProvider] | type[GeminiImagenProvider], job: Job, upstream: str
) -> ContractCase:
    return ContractCase(
        id=provider.id,
        provider=provider,
        make_fake=FakeGemini,
        credential=DEFAULT_API_KEY,
        base_path="",
        job=job,
        target=Target(upstream),
        refused_job=replace(job, prompt=f"a {REFUSAL_TRIGGER} scene"),
        polls=job.modality == "video",  # Veo: a long-running operation, not cancellable
    )


CONTRACT_CASES = [
    _case(GeminiProvider, _IMAGE_JOB, "gemini-2.5-flash-image"),
    _case(GeminiProvider, _VIDEO_JOB, "veo-3.0-fast-generate-001"),
    _case(GeminiImagenProvider, _IMAGEN_JOB, "imagen-3.0-generate-002"),
]
