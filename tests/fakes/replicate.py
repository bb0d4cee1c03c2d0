"""A fake Replicate HTTP API: predictions with their real life-cycle.

Routes (give the provider `base_url=<fake root>/v1`):

- `POST /v1/models/{owner}/{name}/predictions` and `POST /v1/predictions` (`version` as
  `owner/name:hash` or the bare hash) → 201 with a prediction object;
- `GET /v1/predictions/{id}` → the prediction, one step further each time;
- `POST /v1/predictions/{id}/cancel` → the prediction, `canceled` when it was running;
- `GET /delivery/{id}/{file}` → the output files the predictions point at.

Like Replicate it checks `Authorization: Bearer` (401 problem document otherwise), answers
unknown models 404 and unknown versions 422 "Invalid version", and validates inputs per
model (required inputs, URI inputs, integers, enums such as `output_format` = webp/jpg/png)
with a 422 "Input validation failed". Unknown inputs are ignored, as Cog does.

Life-cycle: a prediction needs `polls_to_finish` GETs before it ends; with 0 it ends within
the `Prefer: wait` window (created already `succeeded`). It then fails when its prompt
contains `refusal_trigger` (Replicate's E005 "flagged as sensitive" error) or when a message
was queued with `fail_predictions`, and succeeds otherwise with `metrics.predict_time`.
`fail_polls` (of `FakeVendor`) scripts HTTP failures of the next polls only.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.replicate import ReplicateProvider
from tests.fakes.contract import ContractCase
from tests.fakes.openai import image_bytes
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "r8_FakeReplicateKey0123456789abcdefABCD"
SENSITIVE_ERROR = (
    "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
)
Z_IMAGE_VERSION = "7ea16386290ff5977c7812e66e462d7ec3954d8e007a8cd18ded3e7d41f5d7cf"
# Enough of an MP4 header for content sniffing; the fake never renders real video.
VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)

IMAGE_FORMATS = ("webp", "jpg", "png")
_URI = re.compile(r"^(data:[\w/+.-]+;base64,|https?://)")


@dataclass(frozen=True)
class FakeModel:
    """What one Replicate model accepts and answers."""

    output: str = "image"  # "image" (one URL), "images" (list of URLs) or "video"
    required: tuple[str, ...] = ("prompt",)
    uris: tuple[str, ...] = ()  # single file inputs
    uri_lists: tuple[str, ...] = ()
    integers: tuple[str, ...] = ("width", "height", "num_inference_steps", "duration")
    enums: dict[str, tuple[Any, ...]] = field(
        default_factory=lambda: {"output_format": IMAGE_FORMATS}
    )


def _kling(*, required: tuple[str, ...] = ("prompt",), mode: bool = False) -> FakeModel:
    enums: dict[str, tuple[Any, ...]] = {
        "duration": (5, 10),
        "aspect_ratio": ("16:9", "9:16", "1:1"),
    }
    if mode:
        enums["mode"] = ("standard", "pro")
    return FakeModel("video", required=required, uris=("start_image",), enums=enums)


MODELS: dict[str, FakeModel] = {
    "black-forest-labs/flux-1.1-pro-ultra": FakeModel(),
    "stability-ai/stable-diffusion-3.5-large": FakeModel(),
    "recraft-ai/recraft-v3-svg": FakeModel(enums={}),
    "reve/create": FakeModel(),
    "reve/edit": FakeModel(required=("prompt", "image"), uris=("image",)),
    "reve/edit-fast": FakeModel(required=("prompt", "image"), uris=("image",)),
    "reve/remix": FakeModel(
        required=("prompt", "reference_images"), uri_lists=("reference_images",)
    ),
    "ideogram-ai/ideogram-v2a": FakeModel(enums={}),
    "ideogram-ai/ideogram-v2a-turbo": FakeModel(enums={}),
    "ideogram-ai/ideogram-v3-balanced": FakeModel(enums={}),
    "ideogram-ai/ideogram-v3-turbo": FakeModel(enums={}),
    "ideogram-ai/ideogram-v3-quality": FakeModel(enums={}),
    "ideogram-ai/ideogram-v3": FakeModel(enums={}),
    "leonardoai/lucid-origin": FakeModel(),
    "luma/photon": FakeModel(enums={}),
    "luma/photon-flash": FakeModel(enums={}),
    "minimax/image-01": FakeModel("images", enums={}),
    "prunaai/z-image-turbo": FakeModel(enums={"output_format": ("png", "jpg", "webp")}),
    "tencent/hunyuan-image-3": FakeModel(),
    "kwaivgi/kling-v1.6-standard": _kling(),
    "kwaivgi/kling-v2.1": _kling(required=("prompt", "start_image"), mode=True),
    "kwaivgi/kling-v2.1-master": _kling(),
}
#: Models only reachable by version, as community models are.
VERSIONS: dict[str, str] = {Z_IMAGE_VERSION: "prunaai/z-image-turbo"}


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """Replicate's error body (an RFC 7807 problem document)."""
    return {"title": title, "detail": detail, "status": status, **extra}


UNAUTHENTICATED = problem(401, "Unauthenticated", "You did not pass a valid authentication token")
THROTTLED = problem(
    429, "Request was throttled", "Request was throttled. Your rate limit resets in ~1s."
)
INSUFFICIENT_CREDIT = problem(
    402,
    "Insufficient credit",
    "You have insufficient credit to run this model. Go to "
    "https://replicate.com/account/billing#billing to purchase credit. Once you purchase "
    "credit, please wait a few minutes before trying again.",
)
NOT_FOUND = problem(404, "Not found", "The requested resource could not be found.")
INVALID_VERSION = problem(
    422,
    "Invalid version",
    "The specified version does not exist (or perhaps you don't have permission to use it?)",
)


class _Invalid(Exception):
    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["detail"])
        self.body = body


def _invalid_input(field: str, description: str, kind: str) -> _Invalid:
    return _Invalid(
        problem(
            422,
            "Input validation failed",
            f"- {field}: {description}\n",
            invalid_fields=[{"type": kind, "field": field, "description": description}],
        )
    )


@dataclass
class _Prediction:
    id: str
    model: str
    version: str
    input: dict[str, Any]
    base_url: str
    polls_left: int
    status: str = "starting"
    output: Any = None
    error: str | None = None
    created_at: str = field(default_factory=lambda: _now())
    completed_at: str | None = None
    predict_time: float | None = None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


class FakeReplicate(FakeVendor):
    """The Replicate predictions API. Give the provider `base_url=<fake root>/v1`."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        polls_to_finish: int = 1,
        refusal_trigger: str = "forbidden-content",
        predict_time: float = 1.234567,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.polls_to_finish = polls_to_finish
        self.refusal_trigger = refusal_trigger
        self.predict_time = predict_time
        self.models = dict(MODELS)
        self.versions = dict(VERSIONS)
        self.predictions: dict[str, _Prediction] = {}
        self.canceled: list[str] = []
        #: Set by every poll (in-process use only: it belongs to the test's event loop).
        self.polled = asyncio.Event()
        self._prediction_failures: deque[str] = deque()
        self.add_route("/v1/models/{owner}/{name}/predictions", self._create_official, ["POST"])
        self.add_route("/v1/predictions", self._create_versioned, ["POST"])
        self.add_route("/v1/predictions/{id}", self._get, ["GET"], poll=True)
        self.add_route("/v1/predictions/{id}/cancel", self._cancel, ["POST"], scripted=False)
        self.add_route("/delivery/{id}/{file}", self._file, ["GET"], scripted=False)

    # ------------------------------------------------------------------ test controls

    def fail_predictions(self, error: str, times: int = 1) -> None:
        """The next `times` predictions end `failed` with `error`."""
        self._prediction_failures.extend([error] * times)

    def cancelled_jobs(self) -> list[str]:
        return list(self.canceled)

    def error_body(self, status: int) -> object:
        if status == 401:
            return UNAUTHENTICATED
        if status == 429:
            return THROTTLED
        if status == 402:
            return INSUFFICIENT_CREDIT
        if status == 503:
            return problem(503, "Service Unavailable", "Replicate is temporarily unavailable.")
        if status >= 500:
            return problem(status, "Internal Server Error", "Internal server error")
        return problem(status, "Error", f"fake Replicate error {status}")

    # ------------------------------------------------------------------ routes

    async def _create_official(self, request: Request, rec: Recorded) -> Response:
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        try:
            self._authorise(rec)
            if model not in self.models or model in self.versions.values():
                return JSONResponse(NOT_FOUND, status_code=404)
            return self._start(rec, model, version="official")
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.body["status"])

    async def _create_versioned(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
            version = rec.json.get("version") if isinstance(rec.json, dict) else None
            if not isinstance(version, str):
                raise _invalid_input("version", "version is required", "required")
            name, _, digest = version.rpartition(":")
            model = self.versions.get(digest)
            if model is None or (name and name != model):
                return JSONResponse(INVALID_VERSION, status_code=422)
            return self._start(rec, model, version=digest)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.body["status"])

    async def _get(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.body["status"])
        self.polled.set()
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return JSONResponse(NOT_FOUND, status_code=404)
        if prediction.status in ("starting", "processing"):
            prediction.polls_left -= 1
            if prediction.polls_left <= 0:
                self._finish(prediction)
            else:
                prediction.status = "processing"
        return JSONResponse(self._body(prediction))

    async def _cancel(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.body["status"])
        prediction = self.predictions.get(request.path_params["id"])
        if prediction is None:
            return JSONResponse(NOT_FOUND, status_code=404)
        if prediction.status in ("starting", "processing"):
            prediction.status = "canceled"
            prediction.completed_at = _now()
            self.canceled.append(prediction.id)
        return JSONResponse(self._body(prediction))

    async def _file(self, request: Request, rec: Recorded) -> Response:
        name = str(request.path_params["file"])
        extension = name.rpartition(".")[2]
        if extension == "mp4":
            return Response(VIDEO_BYTES, media_type="video/mp4")
        fmt = {"jpg": "jpeg"}.get(extension, extension)
        return Response(image_bytes(fmt), media_type=f"image/{fmt}")

    # ------------------------------------------------------------------ behaviour

    def _authorise(self, rec: Recorded) -> None:
        header = rec.headers.get("authorization", "")
        if header != f"Bearer {self.api_key}":
            raise _Invalid(UNAUTHENTICATED)

    def _start(self, rec: Recorded, model: str, *, version: str) -> Response:
        body = rec.json
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            raise _invalid_input("input", "Invalid type. Expected: object, given: null", "invalid")
        inputs: dict[str, Any] = body["input"]
        self._validate(self.models[model], inputs)
        prediction = _Prediction(
            id=uuid.uuid4().hex[:26],
            model=model,
            version=version,
            input=inputs,
            base_url=rec.base_url,
            polls_left=self.polls_to_finish,
        )
        self.predictions[prediction.id] = prediction
        waits = rec.headers.get("prefer", "").startswith("wait")
        if waits and prediction.polls_left <= 0:
            self._finish(prediction)
        return JSONResponse(self._body(prediction), status_code=201)

    def _validate(self, spec: FakeModel, inputs: dict[str, Any]) -> None:
        for name in spec.required:
            if inputs.get(name) in (None, "", []):
                raise _invalid_input("input", f"{name} is required", "required")
        for name in spec.uris:
            if name in inputs and not _is_uri(inputs[name]):
                raise _invalid_input(f"input.{name}", "Does not match format 'uri'", "format")
        for name in spec.uri_lists:
            value = inputs.get(name)
            if name in inputs and not (isinstance(value, list) and all(map(_is_uri, value))):
                raise _invalid_input(f"input.{name}", "Does not match format 'uri'", "format")
        for name in spec.integers:
            value = inputs.get(name)
            if name in inputs and (not isinstance(value, int) or isinstance(value, bool)):
                kind = type(value).__name__
                raise _invalid_input(
                    f"input.{name}", f"Invalid type. Expected: integer, given: {kind}", "type"
                )
        for name, allowed in spec.enums.items():
            if name in inputs and inputs[name] not in allowed:
                listed = ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in allowed)
                raise _invalid_input(
                    f"input.{name}", f"{name} must be one of the following: {listed}", "enum"
                )

    def _finish(self, prediction: _Prediction) -> None:
        prediction.completed_at = _now()
        prompt = str(prediction.input.get("prompt") or "")
        if self.refusal_trigger.lower() in prompt.lower():
            prediction.status, prediction.error = "failed", SENSITIVE_ERROR
            return
        if self._prediction_failures:
            prediction.status, prediction.error = "failed", self._prediction_failures.popleft()
            return
        spec = self.models[prediction.model]
        root = f"{prediction.base_url}delivery/{prediction.id}"
        if spec.output == "video":
            extension = "mp4"
        else:
            extension = str(prediction.input.get("output_format") or "webp")
        urls = [f"{root}/out-{index}.{extension}" for index in range(2)]
        prediction.status = "succeeded"
        prediction.predict_time = self.predict_time
        prediction.output = urls if spec.output == "images" else urls[0]

    def _body(self, prediction: _Prediction) -> dict[str, Any]:
        root = f"{prediction.base_url}v1/predictions/{prediction.id}"
        body: dict[str, Any] = {
            "id": prediction.id,
            "model": prediction.model,
            "version": prediction.version,
            "input": prediction.input,
            "logs": "",
            "output": prediction.output,
            "data_removed": False,
            "error": prediction.error,
            "status": prediction.status,
            "created_at": prediction.created_at,
            "urls": {
                "cancel": f"{root}/cancel",
                "get": root,
                "stream": f"https://stream.replicate.com/v1/files/{prediction.id}",
                "web": f"https://replicate.com/p/{prediction.id}",
            },
        }
        if prediction.completed_at is not None:
            body["started_at"] = prediction.created_at
            body["completed_at"] = prediction.completed_at
        if prediction.predict_time is not None:
            body["metrics"] = {
                "predict_time": prediction.predict_time,
                "total_time": prediction.predict_time + 0.5,
            }
        return body


def _is_uri(value: Any) -> bool:
    return isinstance(value, str) and _URI.match(value) is not None


_CONTRACT_JOB = Job(modality="image", model="stabilityai/sd3.5", prompt="a red kite")
_VIDEO_JOB = Job(
    modality="video", model="kling/kling-1.6-standard", prompt="a red kite", seconds=5.0
)

CONTRACT_CASES = [
    ContractCase(
        id="replicate",
        provider=ReplicateProvider,
        make_fake=FakeReplicate,
        credential=DEFAULT_API_KEY,
        base_path="/v1",
        job=_CONTRACT_JOB,
        target=Target("stability-ai/stable-diffusion-3.5-large"),
        refused_job=Job(
            modality="image", model="stabilityai/sd3.5", prompt="a forbidden-content scene"
        ),
        polls=True,
        cancels=True,
    ),
    ContractCase(
        id="replicate",
        provider=ReplicateProvider,
        make_fake=FakeReplicate,
        credential=DEFAULT_API_KEY,
        base_path="/v1",
        job=_VIDEO_JOB,
        target=Target("kwaivgi/kling-v1.6-standard"),
        refused_job=replace(_VIDEO_JOB, prompt="a forbidden-content scene"),
        polls=True,
        cancels=True,
    ),
]
