"""A fake Google Cloud Vertex AI: OAuth token endpoint, Imagen, Gemini image and Veo.

It authenticates like Google does, so an adapter that signs badly fails here as it would
in production:

- `POST /token`: the jwt-bearer grant. The assertion must be an RS256 JWT signed with the
  private key of `SERVICE_ACCOUNT` (generated at import), for our `client_email`, with the
  cloud-platform scope, `aud` = this URL and a lifetime of at most an hour; otherwise 400
  with Google's OAuth error body. Issued tokens expire after `token_lifetime` seconds.
- Every API call needs `Authorization: Bearer <issued token>` (else 401 UNAUTHENTICATED)
  for project `test-project` (else 403 PERMISSION_DENIED) and a known publisher model of
  the right family (else 404 NOT_FOUND / 400 FAILED_PRECONDITION).
- `…/models/{imagen}:predict`, `…/models/{gemini}:generateContent`,
  `…/models/{veo}:predictLongRunning` + `:fetchPredictOperation` (done after
  `video_polls` polls) + `…/operations/{id}:cancel`, validated as Vertex validates.

Prompt triggers: `REFUSAL_TRIGGER` → the vendor's refusal (Imagen 400 "sensitive words",
Gemini `promptFeedback.blockReason`, Veo `raiMediaFilteredCount`); `FILTERED_TRIGGER` →
the output filtered (Imagen `raiFilteredReason`, Gemini `IMAGE_SAFETY`); `TEXT_TRIGGER` →
Gemini answers text only; `FAILED_JOB_TRIGGER` → the Veo operation ends with an error.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import InputFile, Job, Target
from image_router.providers.vertex import VertexProvider
from tests.fakes.contract import ContractCase
from tests.fakes.upstream import FakeVendor, Recorded

PROJECT = "test-project"
LOCATION = "us-central1"
CLIENT_EMAIL = f"image-router@{PROJECT}.iam.gserviceaccount.com"
PRIVATE_KEY_ID = "3f0c6c1e2d4b5a69788796a5b4c3d2e1f0a9b8c7"
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

REFUSAL_TRIGGER = "forbidden-content"
FILTERED_TRIGGER = "filtered-output"
TEXT_TRIGGER = "answer-in-words"
FAILED_JOB_TRIGGER = "job-explodes"

IMAGEN_MODELS = frozenset(
    {
        "imagen-3.0-generate-002",
        "imagen-3.0-fast-generate-001",
        "imagen-4.0-generate-preview-05-20",
        "imagen-4.0-ultra-generate-exp-05-20",
        "imagen-4.0-generate-preview-06-06",
        "imagen-4.0-fast-generate-preview-06-06",
        "imagen-4.0-ultra-generate-preview-06-06",
        "imagen-4.0-generate-001",
        "imagen-4.0-ultra-generate-001",
        "imagen-4.0-fast-generate-001",
    }
)
IMAGEN_2K_MODELS = frozenset({"imagen-4.0-generate-001", "imagen-4.0-ultra-generate-001"})
GEMINI_MODELS = frozenset({"gemini-2.5-flash-image", "gemini-3-pro-image-preview"})
VEO_MODELS = frozenset(
    {
        "veo-2.0-generate-001",
        "veo-3.0-generate-001",
        "veo-3.0-fast-generate-001",
        "veo-3.1-generate-preview",
        "veo-3.1-fast-generate-preview",
    }
)
IMAGEN_PARAMETERS = frozenset(
    {
        "sampleCount",
        "aspectRatio",
        "sampleImageSize",
        "safetySetting",
        "personGeneration",
        "outputOptions",
        "addWatermark",
        "enhancePrompt",
        "negativePrompt",
        "seed",
        "includeRaiReason",
        "includeSafetyAttributes",
        "language",
        "storageUri",
    }
)
GEMINI_FIELDS = frozenset({"contents", "generationConfig", "safetySettings", "systemInstruction"})
VEO_PARAMETERS = frozenset(
    {
        "aspectRatio",
        "durationSeconds",
        "enhancePrompt",
        "generateAudio",
        "negativePrompt",
        "personGeneration",
        "resolution",
        "sampleCount",
        "seed",
        "storageUri",
    }
)
INPUT_IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")

SENSITIVE_WORDS_MESSAGE = (
    "Image generation failed with the following error: The prompt could not be submitted. "
    "This prompt contains sensitive words that violate Google's Responsible AI practices. "
    "Try rephrasing the prompt. If you think this was an error, send feedback. "
    "Support codes: 42876398"
)
IMAGEN_FILTERED_MESSAGE = (
    "Your current safety filter threshold filtered out the generated image. You will not be "
    "charged for blocked images. Try rephrasing the prompt. If you think this was an error, "
    "send feedback. Support codes: 58061214"
)
VEO_FILTERED_MESSAGE = (
    "Unable to generate videos because the prompt contains content that violates Vertex "
    "AI's usage guidelines. Support codes: 29310472"
)
UNAUTHENTICATED_MESSAGE = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
QUOTA_MESSAGE = (
    "Quota exceeded for aiplatform.googleapis.com/online_prediction_requests_per_base_model "
    "with base model: imagen-3.0-generate. Please submit a quota increase request. "
    "https://cloud.google.com/vertex-ai/docs/generative-ai/quotas-genai."
)
_STATUS_NAMES = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE),
    403: ("PERMISSION_DENIED", "The caller does not have permission"),
    404: ("NOT_FOUND", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", QUOTA_MESSAGE),
    500: ("INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "The service is currently unavailable."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


# ------------------------------------------------------------------ the service account


def _new_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


PRIVATE_KEY = _new_private_key()
PUBLIC_KEY = PRIVATE_KEY.public_key()


def service_account(**overrides: Any) -> dict[str, Any]:
    """A service-account key file as the Cloud console downloads it."""
    info: dict[str, Any] = {
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": PRIVATE_KEY_ID,
        "private_key": _pem(PRIVATE_KEY),
        "client_email": CLIENT_EMAIL,
        "client_id": "104729384756102938475",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": "https://oauth2.googleapis.com/token",
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    }
    info.update(overrides)
    return info


def encode_key(info: Any) -> str:
    """GOOGLE_SERVICE_ACCOUNT_KEY: the base64 of the key file's JSON."""
    return base64.b64encode(json.dumps(info).encode()).decode("ascii")


DEFAULT_CREDENTIAL = encode_key(service_account())


@cache
def foreign_credential() -> str:
    """A well-formed key for our account but signed by a key Google does not know."""
    return encode_key(service_account(private_key=_pem(_new_private_key())))


@cache
def png_bytes() -> bytes:
    """A small PNG whose base64 is long enough to be cut out of logged bodies."""
    buffer = io.BytesIO()
    Image.radial_gradient("L").resize((16, 16)).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@cache
def video_bytes() -> bytes:
    return (resources.files("image_router.providers") / "assets" / "test-video.mp4").read_bytes()


def google_error(status: int, message: str | None = None, name: str | None = None) -> Any:
    default_name, default_message = _STATUS_NAMES.get(status, ("UNKNOWN", "Unknown error."))
    return {
        "error": {
            "code": status,
            "message": message or default_message,
            "status": name or default_name,
        }
    }


class _Refusal(Exception):
    def __init__(self, status: int, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.response = JSONResponse(google_error(status, message, name), status_code=status)


@dataclass
class Operation:
    """One Veo job: finished after `polls_left` more polls; its prompt decides how."""

    name: str
    model: str
    prompt: str
    sample_count: int
    polls_left: int
    cancelled: bool = False


class FakeVertex(FakeVendor):
    def __init__(self, *, token_lifetime: int = 3599, video_polls: int = 2) -> None:
        super().__init__()
        self.token_lifetime = token_lifetime
        self.video_polls = video_polls
        self.tokens: dict[str, float] = {}  # access token → expiry (epoch seconds)
        self.assertions: list[dict[str, Any]] = []  # verified JWT claims, in order
        self.operations: dict[str, Operation] = {}
        self._token_script: deque[tuple[int, Any]] = deque()
        model = "/v1/projects/{project}/locations/{location}/publishers/google/models/{model}"
        self.add_route("/token", self._token, ["POST"], scripted=False)
        self.add_route(f"{model}:predict", self._predict, ["POST"])
        self.add_route(f"{model}:generateContent", self._generate_content, ["POST"])
        self.add_route(f"{model}:predictLongRunning", self._submit_video, ["POST"])
        self.add_route(f"{model}:fetchPredictOperation", self._fetch_operation, ["POST"], poll=True)
        self.add_route(f"{model}/operations/{{operation}}:cancel", self._cancel, ["POST"])

    # ------------------------------------------------------------------ test controls

    def fail_token_next(self, status: int, body: Any = None) -> None:
        """Answer the next token request with `status` (default body: OAuth `server_error`)."""
        self._token_script.append((status, body))

    def revoke_tokens(self) -> None:
        self.tokens.clear()

    def api_requests(self, method: str | None = None) -> list[Recorded]:
        """Requests to the Vertex API (not the token endpoint), optionally by method."""
        calls = [r for r in self.requests if r.path.startswith("/v1/")]
        return [r for r in calls if method is None or r.path.endswith(f":{method}")]

    def error_body(self, status: int) -> object:
        return google_error(status)

    # ------------------------------------------------------------------ OAuth

    async def _token(self, request: Request, rec: Recorded) -> Response:
        if self._token_script:
            status, body = self._token_script.popleft()
            body = body if body is not None else _oauth_error("server_error", "Backend Error")
            return JSONResponse(body, status_code=status)
        if rec.content_type != "application/x-www-form-urlencoded":
            return _oauth(400, "invalid_request", "Invalid Content-Type")
        form = {key: values[0] for key, values in parse_qs(rec.body.decode()).items()}
        if form.get("grant_type") != JWT_BEARER:
            return _oauth(
                400, "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}"
            )
        assertion = form.get("assertion")
        if not assertion:
            return _oauth(400, "invalid_request", "Missing required parameter: assertion")
        audience = f"{rec.base_url}token"
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                PUBLIC_KEY,
                algorithms=["RS256"],
                audience=audience,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.InvalidAudienceError:
            return _oauth(400, "invalid_grant", f"Invalid JWT: Failed audience check: {audience}")
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError):
            return _oauth(400, "invalid_grant", _SHORT_LIVED)
        except jwt.PyJWTError:
            return _oauth(400, "invalid_grant", "Invalid JWT Signature.")
        if header.get("kid") not in (None, PRIVATE_KEY_ID):
            return _oauth(400, "invalid_grant", "Invalid JWT Signature.")
        if claims["iss"] != CLIENT_EMAIL:
            return _oauth(400, "invalid_grant", "Invalid grant: account not found")
        if not 0 < claims["exp"] - claims["iat"] <= 3600:
            return _oauth(400, "invalid_grant", _SHORT_LIVED)
        if SCOPE not in str(claims.get("scope", "")).split():
            return _oauth(400, "invalid_scope", _BAD_SCOPE)
        self.assertions.append({"header": header, "claims": claims})
        token = f"ya29.fake-{uuid.uuid4().hex}"
        self.tokens[token] = time.time() + self.token_lifetime
        return JSONResponse(
            {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}
        )

    # ------------------------------------------------------------------ the API

    def _check(self, request: Request, rec: Recorded, family: frozenset[str]) -> str:
        """Authorise the call and return the model, or raise `_Refusal`."""
        header = rec.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise _Refusal(401, UNAUTHENTICATED_MESSAGE.replace("had invalid", "is missing"))
        expiry = self.tokens.get(header.removeprefix("Bearer "))
        if expiry is None or expiry < time.time():
            raise _Refusal(401, UNAUTHENTICATED_MESSAGE)
        params = request.path_params
        model = str(params["model"])
        resource = f"projects/{params['project']}/locations/{params['location']}"
        resource += f"/publishers/google/models/{model}"
        if params["project"] != PROJECT:
            raise _Refusal(
                403,
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/{resource}' (or it may not exist).",
            )
        known = IMAGEN_MODELS | GEMINI_MODELS | VEO_MODELS
        if model not in known:
            raise _Refusal(404, f"Publisher Model `{resource}` not found.")
        if model not in family:
            raise _Refusal(
                400,
                f"The model {model} does not support this method.",
                "FAILED_PRECONDITION",
            )
        if not isinstance(rec.json, dict):
            raise _Refusal(400, "Invalid JSON payload received. Expected an object.")
        return model

    async def _predict(self, request: Request, rec: Recorded) -> Response:
        try:
            model = self._check(request, rec, IMAGEN_MODELS)
            prompt, parameters = _imagen_input(rec.json, model)
        except _Refusal as refusal:
            return refusal.response
        if REFUSAL_TRIGGER in prompt:
            return JSONResponse(google_error(400, SENSITIVE_WORDS_MESSAGE), status_code=400)
        if FILTERED_TRIGGER in prompt:
            if parameters.get("includeRaiReason"):
                return JSONResponse({"predictions": [{"raiFilteredReason": _FILTER_REASON}]})
            return JSONResponse({})  # Vertex drops filtered images without a word
        mime = parameters.get("outputOptions", {}).get("mimeType", "image/png")
        count = int(parameters.get("sampleCount", 4))
        encoded = base64.b64encode(png_bytes()).decode("ascii")
        predictions = [{"mimeType": mime, "bytesBase64Encoded": encoded} for _ in range(count)]
        return JSONResponse({"predictions": predictions})

    async def _generate_content(self, request: Request, rec: Recorded) -> Response:
        try:
            model = self._check(request, rec, GEMINI_MODELS)
            prompt = _gemini_input(rec.json, model)
        except _Refusal as refusal:
            return refusal.response
        usage = {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302}
        answer: dict[str, Any] = {"modelVersion": model, "usageMetadata": usage}
        if REFUSAL_TRIGGER in prompt:
            feedback = {"blockReason": "PROHIBITED_CONTENT", "blockReasonMessage": _BLOCKED}
            return JSONResponse({**answer, "promptFeedback": feedback})
        if FILTERED_TRIGGER in prompt:
            candidate: dict[str, Any] = {"finishReason": "IMAGE_SAFETY", "finishMessage": _UNSAFE}
        elif TEXT_TRIGGER in prompt:
            parts = [{"text": "I can describe it, but here is no picture."}]
            candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}
        else:
            encoded = base64.b64encode(png_bytes()).decode("ascii")
            parts = [{"inlineData": {"mimeType": "image/png", "data": encoded}}]
            candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}
        return JSONResponse({**answer, "candidates": [candidate]})

    async def _submit_video(self, request: Request, rec: Recorded) -> Response:
        try:
            model = self._check(request, rec, VEO_MODELS)
            prompt, count = _veo_input(rec.json, model)
        except _Refusal as refusal:
            return refusal.response
        params = request.path_params
        name = (
            f"projects/{params['project']}/locations/{params['location']}/publishers/google/"
            f"models/{model}/operations/{uuid.uuid4()}"
        )
        self.operations[name] = Operation(name, model, prompt, count, self.video_polls)
        return JSONResponse({"name": name})

    async def _fetch_operation(self, request: Request, rec: Recorded) -> Response:
        try:
            model = self._check(request, rec, VEO_MODELS)
        except _Refusal as refusal:
            return refusal.response
        name = rec.json.get("operationName")
        operation = self.operations.get(name) if isinstance(name, str) else None
        if operation is None or operation.model != model:
            return JSONResponse(google_error(404, f"Operation {name} not found."), 404)
        if operation.cancelled:
            error = {"code": 1, "message": "Operation was cancelled."}
            return JSONResponse({"name": name, "done": True, "error": error})
        if operation.polls_left > 0:
            operation.polls_left -= 1
            return JSONResponse({"name": name})  # proto3 JSON omits `done: false`
        if FAILED_JOB_TRIGGER in operation.prompt:
            error = {"code": 13, "message": "Internal error encountered."}
            return JSONResponse({"name": name, "done": True, "error": error})
        response: dict[str, Any] = {
            "@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse",
            "raiMediaFilteredCount": 0,
        }
        if REFUSAL_TRIGGER in operation.prompt:
            response.update(raiMediaFilteredCount=1, raiMediaFilteredReasons=[VEO_FILTERED_MESSAGE])
        else:
            encoded = base64.b64encode(video_bytes()).decode("ascii")
            video = {"bytesBase64Encoded": encoded, "mimeType": "video/mp4"}
            response["videos"] = [video] * operation.sample_count
        return JSONResponse({"name": name, "done": True, "response": response})

    def cancelled_jobs(self) -> list[str]:
        return [name for name, operation in self.operations.items() if operation.cancelled]

    async def _cancel(self, request: Request, rec: Recorded) -> Response:
        try:
            model = self._check(request, rec, VEO_MODELS)
        except _Refusal as refusal:
            return refusal.response
        name = rec.path.removeprefix("/v1/").removesuffix(":cancel")
        operation = self.operations.get(name)
        if operation is None or operation.model != model:
            return JSONResponse(google_error(404, f"Operation {name} not found."), 404)
        operation.cancelled = True
        return JSONResponse({})


# ------------------------------------------------------------------ request validation

_SHORT_LIVED = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
    "timeframe. Check your iat and exp values in the JWT claim."
)
_BAD_SCOPE = "Invalid OAuth scope or ID token audience provided."
_FILTER_REASON = IMAGEN_FILTERED_MESSAGE
_THRESHOLDS = (
    "BLOCK_LOW_AND_ABOVE",
    "BLOCK_MEDIUM_AND_ABOVE",
    "BLOCK_ONLY_HIGH",
    "BLOCK_NONE",
    "OFF",
)
_BLOCKED = "The prompt was blocked because it may contain prohibited content."
_UNSAFE = "Unable to show the generated image: it may violate Google's safety policies."


def _camel(value: Any) -> Any:
    """Google's JSON parser takes proto field names too: `inline_data` = `inlineData`."""
    if isinstance(value, dict):
        return {re.sub(r"_([a-z])", lambda m: m[1].upper(), k): _camel(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_camel(item) for item in value]
    return value


def _oauth_error(error: str, description: str) -> dict[str, str]:
    return {"error": error, "error_description": description}


def _oauth(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse(_oauth_error(error, description), status_code=status)


def _unknown(name: str, where: str) -> _Refusal:
    return _Refusal(
        400,
        f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field.",
    )


def _one_of(value: Any, allowed: tuple[Any, ...] | frozenset[Any], name: str) -> None:
    if value is not None and value not in allowed:
        raise _Refusal(400, f"Unsupported {name}: {value}. Supported values: {sorted(allowed)}")


def _image(value: Any, where: str) -> None:
    """An inline image must be a supported type and decode as a picture."""
    mime = value.get("mimeType") if isinstance(value, dict) else None
    data = value.get("data", value.get("bytesBase64Encoded")) if isinstance(value, dict) else None
    if mime not in INPUT_IMAGE_TYPES:
        raise _Refusal(400, f"Unsupported MIME type for {where}: {mime}")
    try:
        with Image.open(io.BytesIO(base64.b64decode(str(data), validate=True))) as img:
            img.verify()
    except (binascii.Error, OSError, ValueError):
        raise _Refusal(400, f"Provided image is not valid ({where}).") from None


def _imagen_input(body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
    body = _camel(body)
    instances, parameters = body.get("instances"), body.get("parameters", {})
    if not isinstance(instances, list) or len(instances) != 1:
        raise _Refusal(400, "Imagen takes exactly one instance.")
    prompt = instances[0].get("prompt") if isinstance(instances[0], dict) else None
    if not isinstance(prompt, str) or not prompt:
        raise _Refusal(400, "The prompt is required.")
    for name in parameters:
        if name not in IMAGEN_PARAMETERS:
            raise _unknown(name, "parameters")
    _one_of(parameters.get("aspectRatio"), ("1:1", "3:4", "4:3", "9:16", "16:9"), "aspectRatio")
    _one_of(
        parameters.get("safetySetting"),
        ("block_low_and_above", "block_medium_and_above", "block_only_high", "block_none"),
        "safetySetting",
    )
    _one_of(parameters.get("sampleCount"), (1, 2, 3, 4), "sampleCount")
    size = parameters.get("sampleImageSize")
    if size is not None and (model not in IMAGEN_2K_MODELS or size not in ("1K", "2K")):
        raise _Refusal(400, f"sampleImageSize {size} is not supported by {model}.")
    output = parameters.get("outputOptions", {})
    _one_of(output.get("mimeType"), ("image/png", "image/jpeg"), "outputOptions.mimeType")
    return prompt, parameters


_GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


def _gemini_input(body: dict[str, Any], model: str) -> str:
    body = _camel(body)
    for name in body:
        if name not in GEMINI_FIELDS:
            raise _unknown(name, "")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _Refusal(400, "Unable to submit request because it has an empty contents field.")
    texts = []
    for content in contents:
        _one_of(content.get("role"), ("user", "model"), "role")
        for part in content.get("parts") or []:
            if "inlineData" in part:
                _image(part["inlineData"], "inlineData")
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise _Refusal(400, "A part must hold text or inlineData.")
    config = body.get("generationConfig", {})
    for name in config:
        if name not in ("responseModalities", "imageConfig", "temperature", "candidateCount"):
            raise _unknown(name, "generation_config")
    for modality in config.get("responseModalities", ["TEXT"]):
        _one_of(modality, ("TEXT", "IMAGE"), "responseModalities")
    image_config = config.get("imageConfig", {})
    _one_of(image_config.get("aspectRatio"), _GEMINI_RATIOS, "aspectRatio")
    if "imageSize" in image_config and not model.startswith("gemini-3"):
        raise _Refusal(400, f"imageSize is not supported for {model}.")
    _one_of(image_config.get("imageSize"), ("1K", "2K", "4K"), "imageSize")
    for setting in body.get("safetySettings", []):
        _one_of(setting.get("threshold"), _THRESHOLDS, "threshold")
    if not texts:
        raise _Refusal(400, "The request has no text prompt.")
    return " ".join(texts)


def _veo_input(body: dict[str, Any], model: str) -> tuple[str, int]:
    body = _camel(body)
    instances, parameters = body.get("instances"), body.get("parameters", {})
    if not isinstance(instances, list) or len(instances) != 1:
        raise _Refusal(400, "Veo takes exactly one instance.")
    instance = instances[0]
    prompt = instance.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise _Refusal(400, "The prompt is required.")
    if "image" in instance:
        image = instance["image"]
        if image.get("mimeType") not in ("image/png", "image/jpeg"):
            raise _Refusal(400, f"Unsupported image mime type: {image.get('mimeType')}")
        _image(image, "image")
    for name in parameters:
        if name not in VEO_PARAMETERS:
            raise _unknown(name, "parameters")
    veo2 = model.startswith("veo-2")
    if veo2 and "generateAudio" in parameters:
        raise _Refusal(400, "generateAudio is not supported by this model.")
    if not veo2 and not isinstance(parameters.get("generateAudio"), bool):
        raise _Refusal(400, "generateAudio is required for this model.")
    _one_of(parameters.get("aspectRatio"), ("16:9", "9:16"), "aspectRatio")
    _one_of(parameters.get("resolution"), ("720p", "1080p"), "resolution")
    durations = (5, 6, 7, 8) if veo2 else (4, 6, 8)
    _one_of(parameters.get("durationSeconds"), durations, "durationSeconds")
    _one_of(
        parameters.get("personGeneration"),
        ("allow_adult", "allow_all", "dont_allow"),
        "personGeneration",
    )
    if "image" in instance and parameters.get("personGeneration") == "allow_all":
        raise _Refusal(400, "allow_all is not supported for image-to-video.")
    _one_of(parameters.get("sampleCount"), (1, 2, 3, 4), "sampleCount")
    return prompt, int(parameters.get("sampleCount", 1))


# ------------------------------------------------------------------ contract

_IMAGEN_JOB = Job(modality="image", model="google/imagen-4", prompt="a red kite")
_GEMINI_JOB = Job(
    modality="image",
    model="google/gemini-2.5-flash",
    prompt="a red kite over the sea",
    size="1344x768",
    images=(InputFile(png_bytes(), "image/png", "kite.png"),),
)
_VEO_JOB = Job(modality="video", model="google/veo-3.1-fast", prompt="a kite", seconds=4)
_EXTRA = {"token_url": "{root}/token", "project_id": PROJECT, "location": LOCATION}


def _case(job: Job, upstream: str) -> ContractCase:
    return ContractCase(
        id="vertex",
        provider=VertexProvider,
        make_fake=FakeVertex,
        credential=DEFAULT_CREDENTIAL,
        base_path="",
        job=job,
        target=Target(upstream),
        refused_job=replace(job, prompt=f"a {REFUSAL_TRIGGER} scene"),
        extra=_EXTRA,
        polls=job.modality == "video",  # Veo: a long-running operation, cancellable
        cancels=job.modality == "video",
    )


CONTRACT_CASES = [
    _case(_IMAGEN_JOB, "imagen-4.0-generate-001"),
    _case(_GEMINI_JOB, "gemini-2.5-flash-image"),
    _case(_VEO_JOB, "veo-3.1-fast-generate-preview"),
]
