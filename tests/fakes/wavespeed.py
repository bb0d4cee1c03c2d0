"""A fake WaveSpeedAI v3 API: tasks with their real life-cycle.

Routes (give the provider `base_url=<fake root>/api/v3`):

- `POST /api/v3/{model}` → `{"code": 200, "message": "success", "data": task}`; with
  `enable_sync_mode` the task comes back finished;
- `GET /api/v3/predictions/{id}/result` (what `data.urls.get` points at) and
  `GET /api/v3/predictions/{id}` → the task, one step further each time;
- `DELETE /api/v3/predictions/{id}` → deletes (cancels) the task; later polls get 404;
- `GET /media/{id}/{file}` → the output files.

Like WaveSpeed it checks `Authorization: Bearer` (401 envelope otherwise), answers unknown
models 404, and validates bodies per model (required `prompt`/`image`, `image` a data URI
or URL, `output_format` jpeg/png/webp, `duration` among the model's) with 400 envelopes.
Unknown fields are ignored. WaveSpeed documents the envelope and task error codes (1200
content moderation, 14xx input, 5xxx server) but not every message text; the texts here
are stand-ins of the same shape.

Life-cycle: an async task needs `polls_to_finish` GETs (created → processing → ...). It
then fails when its prompt contains `refusal_trigger` (code 1200, content moderation), or
with a message queued by `fail_tasks`, and completes otherwise. `fail_polls` scripts HTTP
failures of the next polls only.
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

from image_router.providers.contract import InputFile, Job, Target
from image_router.providers.wavespeed import WavespeedProvider
from tests.fakes.contract import ContractCase
from tests.fakes.openai import image_bytes
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "ws_fake_0123456789abcdef0123456789abcdef"
MODERATION_ERROR = "The content contains sensitive information."
OUTPUT_FORMATS = ("jpeg", "png", "webp")
# Enough of an MP4 header for content sniffing; the fake never renders real video.
VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)
_URI = re.compile(r"^(data:[\w/+.-]+;base64,|https?://)")


@dataclass(frozen=True)
class FakeModel:
    output: str = "image"  # "image" or "video"
    required: tuple[str, ...] = ("prompt",)
    durations: tuple[int, ...] = ()


MODELS: dict[str, FakeModel] = {
    "wavespeed-ai/ghibli": FakeModel(required=("image",)),
    "wavespeed-ai/hunyuan-video-1.5/text-to-video": FakeModel("video", durations=(5, 8, 10)),
    "wavespeed-ai/hunyuan-video-1.5/image-to-video": FakeModel(
        "video", required=("prompt", "image"), durations=(5, 8, 10)
    ),
    "minimax/hailuo-02/standard": FakeModel("video", durations=(6, 10)),
    "minimax/hailuo-02/pro": FakeModel("video", durations=(6,)),
}


def envelope(code: int, message: str, data: Any = None) -> dict[str, Any]:
    """WaveSpeed's answer envelope, for successes and errors alike."""
    return {"code": code, "message": message, "data": data}


UNAUTHORIZED = envelope(401, "Unauthorized: invalid or missing API key")
RATE_LIMITED = envelope(429, "Too many requests, please slow down")
INSUFFICIENT_BALANCE = envelope(403, "Insufficient balance, please top up your account")
NOT_FOUND = envelope(404, "Model not found")


class _Invalid(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = envelope(status, message)


@dataclass
class _Task:
    id: str
    model: str
    body: dict[str, Any]
    base_url: str
    polls_left: int
    status: str = "created"
    outputs: list[str] = field(default_factory=list)
    error: str = ""
    code: int = 0
    created_at: str = field(
        default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    )


class FakeWavespeed(FakeVendor):
    """The WaveSpeedAI v3 API. Give the provider `base_url=<fake root>/api/v3`."""

    def __init__(
        self,
        api_key: str = DEFAULT_API_KEY,
        *,
        polls_to_finish: int = 1,
        refusal_trigger: str = "forbidden-content",
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.polls_to_finish = polls_to_finish
        self.refusal_trigger = refusal_trigger
        #: When False, sync mode answers a still-running task (as under heavy load).
        self.sync_completes = True
        self.models = dict(MODELS)
        self.tasks: dict[str, _Task] = {}
        self.deleted: list[str] = []
        #: Set by every poll (in-process use only: it belongs to the test's event loop).
        self.polled = asyncio.Event()
        self._task_failures: deque[str] = deque()
        self.add_route("/api/v3/predictions/{id}/result", self._get, ["GET"], poll=True)
        self.add_route("/api/v3/predictions/{id}", self._get, ["GET"], poll=True)
        self.add_route("/api/v3/predictions/{id}", self._delete, ["DELETE"], scripted=False)
        self.add_route("/api/v3/{model:path}", self._submit, ["POST"])
        self.add_route("/media/{id}/{file}", self._file, ["GET"], scripted=False)

    # ------------------------------------------------------------------ test controls

    def fail_tasks(self, error: str, times: int = 1) -> None:
        """The next `times` tasks end `failed` with `error`."""
        self._task_failures.extend([error] * times)

    def cancelled_jobs(self) -> list[str]:
        return list(self.deleted)

    def error_body(self, status: int) -> object:
        if status == 401:
            return UNAUTHORIZED
        if status == 429:
            return RATE_LIMITED
        if status >= 500:
            return envelope(status, "Internal server error, please try again later")
        return envelope(status, f"fake WaveSpeed error {status}")

    # ------------------------------------------------------------------ routes

    async def _submit(self, request: Request, rec: Recorded) -> Response:
        model = str(request.path_params["model"])
        try:
            self._authorise(rec)
            spec = self.models.get(model)
            if spec is None:
                return JSONResponse(NOT_FOUND, status_code=404)
            body = rec.json
            if not isinstance(body, dict):
                raise _Invalid(400, "invalid request body: expected a JSON object")
            self._validate(spec, body)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        task = _Task(
            id=uuid.uuid4().hex,
            model=model,
            body=body,
            base_url=rec.base_url,
            polls_left=self.polls_to_finish,
        )
        self.tasks[task.id] = task
        if body.get("enable_sync_mode") is True and self.sync_completes:
            self._finish(task)
        return JSONResponse(envelope(200, "success", self._data(task)))

    async def _get(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        self.polled.set()
        task = self.tasks.get(request.path_params["id"])
        if task is None:
            return JSONResponse(envelope(404, "prediction not found"), status_code=404)
        if task.status in ("created", "processing"):
            task.polls_left -= 1
            if task.polls_left <= 0:
                self._finish(task)
            else:
                task.status = "processing"
        return JSONResponse(envelope(200, "success", self._data(task)))

    async def _delete(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        task = self.tasks.pop(request.path_params["id"], None)
        if task is None:
            return JSONResponse(envelope(404, "prediction not found"), status_code=404)
        self.deleted.append(task.id)
        return JSONResponse(envelope(200, "success", {"id": task.id, "status": "deleted"}))

    async def _file(self, request: Request, rec: Recorded) -> Response:
        extension = str(request.path_params["file"]).rpartition(".")[2]
        if extension == "mp4":
            return Response(VIDEO_BYTES, media_type="video/mp4")
        return Response(image_bytes(extension), media_type=f"image/{extension}")

    # ------------------------------------------------------------------ behaviour

    def _authorise(self, rec: Recorded) -> None:
        if rec.headers.get("authorization", "") != f"Bearer {self.api_key}":
            raise _Invalid(401, str(UNAUTHORIZED["message"]))

    def _validate(self, spec: FakeModel, body: dict[str, Any]) -> None:
        for name in spec.required:
            if not body.get(name):
                raise _Invalid(400, f"{name} is required")
        image = body.get("image")
        if "image" in body and not (isinstance(image, str) and _URI.match(image)):
            raise _Invalid(400, "image must be a valid URL or base64 data URI")
        output_format = body.get("output_format")
        if "output_format" in body and output_format not in OUTPUT_FORMATS:
            raise _Invalid(400, f"output_format must be one of {', '.join(OUTPUT_FORMATS)}")
        if "duration" in body and body["duration"] not in spec.durations:
            listed = ", ".join(str(d) for d in spec.durations)
            raise _Invalid(400, f"duration must be one of {listed}")

    def _finish(self, task: _Task) -> None:
        prompt = str(task.body.get("prompt") or "")
        if self.refusal_trigger.lower() in prompt.lower():
            task.status, task.error, task.code = "failed", MODERATION_ERROR, 1200
            return
        if self._task_failures:
            task.status, task.error, task.code = "failed", self._task_failures.popleft(), 1405
            return
        if self.models[task.model].output == "video":
            extension = "mp4"
        else:
            extension = str(task.body.get("output_format") or "png")
        task.status = "completed"
        task.outputs = [f"{task.base_url}media/{task.id}/output.{extension}"]

    def _data(self, task: _Task) -> dict[str, Any]:
        return {
            "id": task.id,
            "model": task.model,
            "outputs": task.outputs,
            "urls": {"get": f"{task.base_url}api/v3/predictions/{task.id}/result"},
            "has_nsfw_contents": [False] * len(task.outputs),
            "status": task.status,
            "created_at": task.created_at,
            "error": task.error,
            "code": task.code,
            "timings": {"inference": 2500 if task.status == "completed" else 0},
        }


_CONTRACT_JOB = Job(
    modality="video",
    model="minimax/hailuo-02-standard",
    prompt="a red kite over the sea",
    seconds=6.0,
)

_IMAGE_JOB = Job(
    modality="image",
    model="wavespeed/ghibli",
    prompt="a red kite",
    images=(InputFile(image_bytes("png"), "image/png", "kite.png"),),
)

CONTRACT_CASES = [
    ContractCase(
        id="wavespeed",
        provider=WavespeedProvider,
        make_fake=FakeWavespeed,
        credential=DEFAULT_API_KEY,
        base_path="/api/v3",
        job=_CONTRACT_JOB,
        target=Target("minimax/hailuo-02/standard"),
        refused_job=Job(
            modality="video",
            model="minimax/hailuo-02-standard",
            prompt="a forbidden-content scene",
            seconds=6.0,
        ),
        polls=True,
        cancels=True,
    ),
    ContractCase(
        id="wavespeed",
        provider=WavespeedProvider,
        make_fake=FakeWavespeed,
        credential=DEFAULT_API_KEY,
        base_path="/api/v3",
        job=_IMAGE_JOB,
        target=Target("wavespeed-ai/ghibli"),
        refused_job=replace(_IMAGE_JOB, prompt="a forbidden-content scene"),
    ),
]
