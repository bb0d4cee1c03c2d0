"""A fake Runware task API: `POST /v1` with a JSON array of tasks.

Give the provider `base_url=<fake root>/v1`. Like Runware it:

- checks `Authorization: Bearer <key>` (401 `invalidApiKey`, Runware's body);
- takes an array of tasks, each with a known `taskType` and a UUID v4 `taskUUID`, and a
  `model` that is an AIR id (`provider:id@version`) and not in `unknown_models` (400 with
  Runware's "Invalid value for 'model' parameter…" message);
- validates each task like Runware (400 `{"data": [], "errors": [...]}` with `code`,
  `message`, `parameter`, `taskType`, `taskUUID`): the prompt, `numberResults`,
  `width`/`height` (both or neither), `steps`, `acceleration`, `outputType`,
  `outputFormat` (`JPG`/`PNG`/`WEBP`, `TIFF` for qwen-image-layered; `mp4` for video),
  images as data URIs that decode to real images, `maskImage`/`strength` only with a
  `seedImage`, `inputs` keys, and `deliveryMethod: "async"` for video. Stricter than
  Runware, it refuses parameters a task type does not document (`unsupportedParameter`),
  so a misspelt field fails here instead of being silently ignored;
- answers images at once (`imageURL` served by the fake itself, or `imageBase64Data` /
  `imageDataURI`), with `cost` when `includeCost` is set;
- runs videos asynchronously: the submit answers `{taskType, taskUUID}`; `getResponse`
  answers `status: "processing"` for `polls_to_finish` polls, then `success` with
  `videoURL` and `cost`, or an error queued with `fail_videos`;
- refuses prompts containing `refusal_trigger` with `invalidProviderContent` (images at
  once, videos when polled, as Runware does for provider moderation).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import InputFile, Job, Target
from image_router.providers.runware import RunwareProvider
from tests.fakes.contract import ContractCase
from tests.fakes.openai import image_bytes
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "rw-fake-0123456789abcdefghijklmnopqrstuv"
INVALID_KEY_MESSAGE = "Invalid API key. Get one at https://my.runware.ai/signup"
INVALID_MODEL_MESSAGE = (
    "Invalid value for 'model' parameter. Model must be an string value representing a "
    "valid AIR identifier."
)
REFUSAL_MESSAGE = (
    "Invalid content detected. The generated content was flagged and rejected by the "
    "provider's content moderation system."
)
INSUFFICIENT_CREDIT_MESSAGE = "Insufficient credit balance. Please top up your account."
READ_RESULTS_MESSAGE = (
    "Unknown error while reading results. Please try again later or contact support at "
    "support@runware.ai"
)
TASK_TIMEOUT_MESSAGE = (
    "Task processing timeout. Results were not received within the expected time window. "
    "Please try again later."
)
# Enough of an MP4 header for content sniffing; the fake never renders real video.
VIDEO_BYTES = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + bytes(64)

_AIR = re.compile(r"^[A-Za-z0-9_-]+:[A-Za-z0-9_.-]+@[A-Za-z0-9_.-]+$")
_DATA_URI = re.compile(r"^data:(image/[\w.+-]+);base64,(.+)$", re.DOTALL)
_COMMON = {"taskType", "taskUUID", "model", "outputType", "outputFormat", "includeCost"}
_COMMON |= {"outputQuality", "providerSettings", "webhookURL"}
PARAMS = {
    "imageInference": _COMMON
    | {"positivePrompt", "negativePrompt", "numberResults", "width", "height", "steps"}
    | {"acceleration", "seedImage", "maskImage", "strength", "referenceImages", "inputs"}
    | {"CFGScale", "seed", "scheduler", "checkNSFW", "inputImage"},
    "imageUpscale": _COMMON | {"inputImage", "upscaleFactor", "settings"},
    "imageBackgroundRemoval": _COMMON | {"inputImage", "settings"},
    "videoInference": _COMMON
    | {"positivePrompt", "negativePrompt", "deliveryMethod", "duration", "width", "height"}
    | {"numberResults", "frameImages", "inputs", "steps", "fps", "seed"},
    "getResponse": {"taskType", "taskUUID"},
}
IMAGE_FORMATS = ("JPG", "PNG", "WEBP")
_PILLOW_FORMATS = {"JPG": "jpeg", "PNG": "png", "WEBP": "webp", "TIFF": "tiff"}
_CONTENT_TYPES = {"JPG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_CONTENT_TYPES["TIFF"] = "image/tiff"


def runware_error(
    code: str, message: str, *, parameter: str | None = None, task: Any = None, **extra: Any
) -> dict[str, Any]:
    """One entry of Runware's `errors` array."""
    entry: dict[str, Any] = {"code": code, "message": message}
    if parameter is not None:
        entry["parameter"] = parameter
    if isinstance(task, dict):
        entry["taskType"] = task.get("taskType")
        entry["taskUUID"] = task.get("taskUUID")
    return entry | extra


class _Invalid(Exception):
    """A task Runware refuses with 400 and this `errors` entry."""

    def __init__(self, entry: dict[str, Any]) -> None:
        super().__init__(entry["message"])
        self.entry = entry


def _bad(task: Any, parameter: str, message: str, code: str | None = None) -> _Invalid:
    code = code or f"invalid{parameter[:1].upper()}{parameter[1:]}"
    return _Invalid(runware_error(code, message, parameter=parameter, task=task))


def _one_of(task: dict[str, Any], name: str, allowed: tuple[Any, ...], default: Any) -> None:
    value = task.get(name, default)
    if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
        listed = ", ".join(str(a) for a in allowed)
        raise _bad(task, name, f"Invalid value for '{name}' parameter. Valid values: {listed}.")


def _number(
    task: dict[str, Any], name: str, low: float, high: float, *, integer: bool = True
) -> None:
    value = task.get(name, low)
    kinds = int if integer else int | float
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        message = (
            f"Invalid value for '{name}' parameter. It must be {kind} between {low} and {high}."
        )
        raise _bad(task, name, message)


def _prompt(task: dict[str, Any]) -> None:
    prompt = task.get("positivePrompt")
    if not isinstance(prompt, str) or not 2 <= len(prompt) <= 3000:
        raise _bad(
            task,
            "positivePrompt",
            "Invalid value for 'positivePrompt' parameter. Positive prompt must be a string "
            "between 2 and 3000 characters.",
        )


def _size(task: dict[str, Any]) -> None:
    if ("width" in task) != ("height" in task):
        missing = "height" if "width" in task else "width"
        raise _bad(task, missing, f"Missing required parameter '{missing}'.", "missingParameter")
    if "width" in task:
        _number(task, "width", 64, 16383)
        _number(task, "height", 64, 16383)


@dataclass
class VideoJob:
    task: dict[str, Any]
    polls: int = 0
    failure: tuple[int, dict[str, Any], bool] | None = None
    result: dict[str, Any] | None = field(default=None)


class FakeRunware(FakeVendor):
    """The Runware REST API at `POST /v1`, plus the files its answers point at."""

    def __init__(
        self, api_key: str = DEFAULT_API_KEY, *, refusal_trigger: str = "forbidden-content"
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.refusal_trigger = refusal_trigger
        self.unknown_models: set[str] = set()
        self.polls_to_finish = 1
        self.image_cost = 0.0013
        self.video_cost = 0.25
        self.videos: dict[str, VideoJob] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self._video_failures: deque[tuple[int, dict[str, Any], bool]] = deque()
        self.add_route("/v1", self._tasks, ["POST"])
        self.add_route("/image/ws/2/ii/{name}", self._file, ["GET"], scripted=False)
        self.add_route("/video/ws/{name}", self._file, ["GET"], scripted=False)

    def error_body(self, status: int) -> object:
        if status == 401:
            return {
                "errors": [runware_error("invalidApiKey", INVALID_KEY_MESSAGE, parameter="apiKey")]
            }
        if status == 402:
            return {"errors": [runware_error("insufficientCredits", INSUFFICIENT_CREDIT_MESSAGE)]}
        if status == 429:
            return {"errors": [runware_error("rateLimitExceeded", "Too many requests.")]}
        if status >= 500:
            return {"errors": [runware_error("internalServerError", READ_RESULTS_MESSAGE)]}
        return {"errors": [runware_error("unknownError", f"Fake Runware error {status}.")]}

    def fail_videos(
        self,
        code: str,
        message: str,
        *,
        http_status: int = 400,
        in_data: bool = False,
        **extra: Any,
    ) -> None:
        """The next finished video fails: in `errors` (with `http_status`) or as a data item."""
        entry = runware_error(code, message, **extra) | {"status": "error"}
        self._video_failures.append((http_status, entry, in_data))

    @property
    def tasks(self) -> list[dict[str, Any]]:
        """Every task received, in order."""
        return [task for rec in self.requests if isinstance(rec.json, list) for task in rec.json]

    # ------------------------------------------------------------------ routes

    async def _tasks(self, request: Request, rec: Recorded) -> Response:
        header = rec.headers.get("authorization", "")
        if not header.startswith("Bearer ") or header[7:].strip() != self.api_key:
            return JSONResponse(self.error_body(401), status_code=401)
        if not isinstance(rec.json, list) or not rec.json:
            entry = runware_error(
                "invalidRequestBody", "The request body must be a JSON array of task objects."
            )
            return JSONResponse({"errors": [entry]}, status_code=400)
        if any(isinstance(t, dict) and t.get("taskType") == "getResponse" for t in rec.json):
            # Status checks share this route with every other task.
            misbehaved = await self.poll_misbehaviour()
            if misbehaved is not None:
                return misbehaved
        data: list[dict[str, Any]] = []
        for task in rec.json:
            try:
                answer = self._run(task, rec.base_url)
            except _Invalid as exc:
                return JSONResponse({"data": [], "errors": [exc.entry]}, status_code=400)
            if isinstance(answer, Response):
                return answer
            data.extend(answer)
        return JSONResponse({"data": data})

    async def _file(self, request: Request, rec: Recorded) -> Response:
        name = request.path_params["name"].rsplit(".", 1)[0]
        if name not in self.files:
            return Response("Not Found", status_code=404)
        payload, content_type = self.files[name]
        return Response(payload, media_type=content_type)

    # ------------------------------------------------------------------ tasks

    def _run(self, task: Any, base_url: str) -> list[dict[str, Any]] | Response:
        self._check_common(task)
        kind = task["taskType"]
        if kind == "getResponse":
            return self._poll(task, base_url)
        model = task.get("model")
        if not isinstance(model, str) or not _AIR.match(model) or model in self.unknown_models:
            raise _bad(task, "model", INVALID_MODEL_MESSAGE, "invalidModel")
        if kind == "videoInference":
            self._check_video(task)
            self.videos[task["taskUUID"]] = VideoJob(dict(task))
            return [{"taskType": kind, "taskUUID": task["taskUUID"]}]
        self._check_image(task)
        if self.refusal_trigger in str(task.get("positivePrompt", "")).lower():
            raise _Invalid(runware_error("invalidProviderContent", REFUSAL_MESSAGE, task=task))
        return [self._image_item(task, base_url)]

    def _check_common(self, task: Any) -> None:
        if not isinstance(task, dict) or task.get("taskType") not in PARAMS:
            kind = task.get("taskType") if isinstance(task, dict) else None
            raise _bad(task, "taskType", f"Invalid value for 'taskType' parameter: {kind!r}.")
        try:
            valid = uuid.UUID(str(task.get("taskUUID"))).version == 4
        except ValueError:
            valid = False
        if not valid:
            message = "Invalid value for 'taskUUID' parameter. It must be a UUID v4 string."
            raise _bad(task, "taskUUID", message)
        for name in task:
            if name not in PARAMS[task["taskType"]]:
                message = f"Unsupported parameter '{name}' for task type '{task['taskType']}'."
                raise _bad(task, name, message, "unsupportedParameter")
        _one_of(task, "includeCost", (True, False), False)
        _one_of(task, "outputType", ("URL", "base64Data", "dataURI"), "URL")

    def _check_image(self, task: dict[str, Any]) -> None:
        layered = task["model"] == "alibaba:qwen-image@layered"
        _one_of(task, "outputFormat", IMAGE_FORMATS + (("TIFF",) if layered else ()), "JPG")
        if task["taskType"] != "imageInference":
            self._image(task, "inputImage", required=True)
            return
        _prompt(task)
        _number(task, "numberResults", 1, 20)
        _size(task)
        _number(task, "steps", 1, 100)
        _one_of(task, "acceleration", ("none", "low", "medium", "high"), "none")
        for name in ("seedImage", "maskImage", "inputImage"):
            self._image(task, name)
        if ("maskImage" in task or "strength" in task) and "seedImage" not in task:
            message = "Missing required parameter 'seedImage'."
            raise _bad(task, "seedImage", message, "missingParameter")
        _number(task, "strength", 0, 1, integer=False)
        self._image_list(task, "referenceImages", task.get("referenceImages"))
        inputs = task.get("inputs", {})
        if not isinstance(inputs, dict) or set(inputs) - {"referenceImages", "references", "image"}:
            raise _bad(task, "inputs", "Invalid value for 'inputs' parameter.")
        for name in ("referenceImages", "references"):
            self._image_list(task, f"[inputs][{name}]", inputs.get(name))
        if "image" in inputs:
            self._image(task, "[inputs][image]", value=inputs["image"])

    def _check_video(self, task: dict[str, Any]) -> None:
        _one_of(task, "deliveryMethod", ("async",), None)
        _prompt(task)
        _size(task)
        _number(task, "steps", 1, 100)
        _number(task, "duration", 0.1, 60, integer=False)
        _one_of(task, "outputFormat", ("mp4", "webm", "MP4", "WEBM"), "mp4")
        frames = task.get("frameImages", [])
        if not isinstance(frames, list) or any(
            not isinstance(f, dict) or set(f) - {"inputImage", "frame"} for f in frames
        ):
            raise _bad(task, "frameImages", "Invalid value for 'frameImages' parameter.")
        for frame in frames:
            self._image(task, "frameImages", value=frame.get("inputImage"), required=True)
        inputs = task.get("inputs", {})
        if not isinstance(inputs, dict) or set(inputs) - {"frameImages"}:
            raise _bad(task, "inputs", "Invalid value for 'inputs' parameter.")
        for frame in inputs.get("frameImages", []):
            value = frame.get("image") if isinstance(frame, dict) else None
            self._image(task, "[inputs][frameImages]", value=value, required=True)

    def _image(
        self, task: dict[str, Any], name: str, *, value: Any = None, required: bool = False
    ) -> None:
        value = task.get(name) if value is None else value
        if value is None:
            if required:
                raise _bad(task, name, f"Missing required parameter '{name}'.", "missingParameter")
            return
        match = _DATA_URI.match(value) if isinstance(value, str) else None
        try:
            if match is None:
                raise ValueError(name)
            payload = base64.b64decode(match.group(2), validate=True)
            with Image.open(io.BytesIO(payload)) as image:
                image.verify()
        except (ValueError, binascii.Error, OSError):
            raise _bad(
                task, name, f"Invalid value for '{name}' parameter. It must be a valid image."
            ) from None

    def _image_list(self, task: dict[str, Any], name: str, value: Any) -> None:
        if value is None:
            return
        if not isinstance(value, list) or not value:
            raise _bad(task, name, f"Invalid value for '{name}' parameter.")
        for item in value:
            self._image(task, name, value=item, required=True)

    # ------------------------------------------------------------------ answers

    def _image_item(self, task: dict[str, Any], base_url: str) -> dict[str, Any]:
        fmt = task.get("outputFormat", "JPG")
        payload = image_bytes(_PILLOW_FORMATS[fmt])
        image_uuid = str(uuid.uuid4())
        item: dict[str, Any] = {
            "taskType": task["taskType"],
            "imageUUID": image_uuid,
            "taskUUID": task["taskUUID"],
        }
        output_type = task.get("outputType", "URL")
        if output_type == "base64Data":
            item["imageBase64Data"] = base64.b64encode(payload).decode("ascii")
        elif output_type == "dataURI":
            encoded = base64.b64encode(payload).decode("ascii")
            item["imageDataURI"] = f"data:{_CONTENT_TYPES[fmt]};base64,{encoded}"
        else:
            self.files[image_uuid] = (payload, _CONTENT_TYPES[fmt])
            item["imageURL"] = f"{base_url}image/ws/2/ii/{image_uuid}.{fmt.lower()}"
        if task.get("includeCost"):
            item["cost"] = self.image_cost
        return item

    def _poll(self, task: dict[str, Any], base_url: str) -> list[dict[str, Any]] | Response:
        job = self.videos.get(task["taskUUID"])
        if job is None:
            return []
        job.polls += 1
        if job.polls < self.polls_to_finish:
            return [
                {
                    "taskType": "videoInference",
                    "taskUUID": job.task["taskUUID"],
                    "status": "processing",
                }
            ]
        if job.failure is None and job.result is None:
            self._finish(job, base_url)
        if job.failure is not None:
            http_status, entry, in_data = job.failure
            entry = entry | {"taskType": "videoInference", "taskUUID": job.task["taskUUID"]}
            if in_data:
                return [entry]
            return JSONResponse({"data": [], "errors": [entry]}, status_code=http_status)
        assert job.result is not None
        return [job.result]

    def _finish(self, job: VideoJob, base_url: str) -> None:
        if self.refusal_trigger in str(job.task.get("positivePrompt", "")).lower():
            entry = runware_error(
                "invalidProviderContent",
                REFUSAL_MESSAGE,
                responseContent="The prompt was filtered by the provider's safety settings.",
                status="error",
            )
            job.failure = (400, entry, False)
            return
        if self._video_failures:
            job.failure = self._video_failures.popleft()
            return
        video_uuid = str(uuid.uuid4())
        self.files[video_uuid] = (VIDEO_BYTES, "video/mp4")
        job.result = {
            "taskType": "videoInference",
            "taskUUID": job.task["taskUUID"],
            "status": "success",
            "videoUUID": video_uuid,
            "videoURL": f"{base_url}video/ws/{video_uuid}.mp4",
        }
        if job.task.get("includeCost"):
            job.result["cost"] = self.video_cost


def png_input(width: int = 32, height: int = 24, name: str = "in.png") -> InputFile:
    """A real PNG upload of the given size."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buffer, format="PNG")
    return InputFile(buffer.getvalue(), "image/png", name)


def encoded(image: InputFile) -> str:
    """The data URI Runware should receive for an upload."""
    return f"data:{image.content_type};base64,{base64.b64encode(image.data).decode()}"


_IMAGE_JOB = Job(
    modality="image",
    model="black-forest-labs/FLUX-1-schnell",
    prompt="a red kite",
    job_id="0b6f0a8e-3f5e-4d37-9a55-2f0c8d0f4c11",
)
_VIDEO_JOB = Job(
    modality="video",
    model="kling/kling-2.1-standard",
    prompt="a red kite over the sea",
    seconds=5,
    job_id="6f1c2b7a-2d5b-4a8e-8c3f-9b1e7d2a5c40",
)
_VIDEO_TARGET = Target("klingai:5@1", {"image_input": "frame_image", "default_size": "1280x720"})

CONTRACT_CASES = [
    ContractCase(
        id="runware",
        provider=RunwareProvider,
        make_fake=FakeRunware,
        credential=DEFAULT_API_KEY,
        base_path="/v1",
        job=_IMAGE_JOB,
        target=Target("runware:100@1", {"image_input": "seed_image", "steps": 4}),
        refused_job=Job(modality="image", model="x", prompt="a forbidden-content scene"),
    ),
    ContractCase(
        id="runware",
        provider=RunwareProvider,
        make_fake=FakeRunware,
        credential=DEFAULT_API_KEY,
        base_path="/v1",
        job=_VIDEO_JOB,
        target=_VIDEO_TARGET,
        refused_job=Job(modality="video", model="x", prompt="a forbidden-content scene", seconds=5),
        polls=True,  # Runware has no call that stops a task
    ),
]
