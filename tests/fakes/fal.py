"""A fake fal.ai queue API: submit, status, result and cancel, in fal's wire format.

- auth: `Authorization: Key <api_key>` on every queue call; none → 401 `Authentication is
  required…`, a wrong key → 401 `No user found for Key ID and Secret`; `locked = True`
  answers 403 `User is locked. Reason: Exhausted balance…` (our account out of money);
- `POST /{endpoint}` (an id of `ENDPOINTS`, else 404) queues a job and answers
  `{status: IN_QUEUE, request_id, response_url, status_url, cancel_url, queue_position}`,
  the URLs under `/{owner}/{app}/requests/{id}` as fal builds them (the endpoint path is
  dropped), rooted where the fake is mounted;
- `GET …/status` answers 202 IN_QUEUE, then 202 IN_PROGRESS (`polls_before_done` pending
  answers in all), then 200 COMPLETED; `PUT …/cancel` answers 202 CANCELLATION_REQUESTED
  (400 ALREADY_COMPLETED once done, 404 NOT_FOUND for unknown ids);
- `GET …/requests/{id}` answers the model's output, or — as fal does — the model's input
  validation errors (422 `detail` list) only now, after the job ran;
- content triggers in the prompt: `forbidden-content` → the job completes and its result
  is 422 `content_policy_violation`; `nsfw-failure` → the status is FAILED with
  `NSFW content detected` (what the reference observed); `runner-crash` → the result is
  500 `runner_server_error`;
- outputs are served by the fake at `/files/<id>.<ext>` (unscripted, never misbehaves);
- `fail_after_submit(status)` makes the request after the next submit (a poll) fail.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import random
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.fal import FalProvider
from tests.fakes.contract import ContractCase
from tests.fakes.openai import image_bytes
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "fal-key-0123:fedcba9876543210"
WRONG_KEY_MESSAGE = "No user found for Key ID and Secret"
NO_KEY_MESSAGE = "Authentication is required to access this application."
LOCKED_MESSAGE = (
    "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
)
CONTENT_POLICY_MESSAGE = (
    "The content could not be processed because it contained material flagged by a content checker."
)
NSFW_MESSAGE = "NSFW content detected"
FAKE_VIDEO = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isomfake-fal-video"


@dataclass(frozen=True)
class Endpoint:
    """What one fal endpoint takes and gives (enough to validate like fal does)."""

    required: tuple[str, ...] = ("prompt",)
    steps: tuple[int, int] | None = None  # num_inference_steps range, None = not a field
    output_formats: tuple[str, ...] = ("jpeg", "png")
    kind: str = "images"  # "images" list, "image" single object, or "video"
    output_type: str = "image/png"


ENDPOINTS: dict[str, Endpoint] = {
    "fal-ai/flux-2/turbo": Endpoint(output_formats=("jpeg", "png", "webp")),
    "fal-ai/flux-2/turbo/edit": Endpoint(
        required=("prompt", "image_urls"), output_formats=("jpeg", "png", "webp")
    ),
    "fal-ai/recraft/v3/text-to-image": Endpoint(output_formats=()),
    "fal-ai/recraft/v3/image-to-image": Endpoint(
        required=("prompt", "image_url"), output_formats=()
    ),
    "fal-ai/recraft/vectorize": Endpoint(
        required=("image_url",), output_formats=(), kind="image", output_type="image/svg+xml"
    ),
    "fal-ai/z-image/turbo": Endpoint(steps=(1, 8), output_formats=("jpeg", "png", "webp")),
    "fal-ai/hidream-e1-1": Endpoint(required=("prompt", "image_url"), output_formats=()),
    "fal-ai/bytedance/seedream/v3/text-to-image": Endpoint(output_formats=()),
    "fal-ai/bytedance/seededit/v3/edit-image": Endpoint(
        required=("prompt", "image_url"), output_formats=()
    ),
    "fal-ai/bytedance/dreamina/v3.1/text-to-image": Endpoint(output_formats=()),
    "fal-ai/qwen-image": Endpoint(steps=(2, 250)),
    "fal-ai/ovis-image": Endpoint(steps=(1, 50)),
    "fal-ai/fake-video/text-to-video": Endpoint(
        output_formats=(), kind="video", output_type="video/mp4"
    ),
}

SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8">'
    b'<rect width="8" height="8"/></svg>'
)


def fal_detail(loc: str, msg: str, type_: str, **extra: Any) -> dict[str, Any]:
    """fal's model-error envelope: a `detail` list of typed errors."""
    return {"detail": [{"loc": ["body", loc], "msg": msg, "type": type_, **extra}]}


CONTENT_POLICY_BODY = fal_detail(
    "prompt",
    CONTENT_POLICY_MESSAGE,
    "content_policy_violation",
    url="https://docs.fal.ai/errors#content_policy_violation",
)


@dataclass
class QueuedJob:
    endpoint: str
    input: dict[str, Any]
    pending_polls: int
    status: str = "IN_QUEUE"
    cancelled: bool = False
    result: tuple[int, dict[str, Any]] | None = None
    polls: int = field(default=0)


class FakeFal(FakeVendor):
    """The fal queue host. Give the provider `base_url=<fake root>`."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, polls_before_done: int = 2) -> None:
        super().__init__()
        self.api_key = api_key
        self.polls_before_done = polls_before_done
        self.locked = False
        self._after_submit: list[tuple[int, object | None]] = []
        #: Set at the first status poll, so tests can act on a running job.
        self.polled = asyncio.Event()
        self.jobs: dict[str, QueuedJob] = {}
        self.files: dict[str, tuple[bytes, str]] = {}
        self.add_route("/files/{name}", self._file, ["GET"], scripted=False)
        base = "/{owner}/{app}/requests/{request_id}"
        self.add_route(base + "/status", self._status, ["GET"], poll=True)
        self.add_route(base + "/cancel", self._cancel, ["PUT"])
        self.add_route(base, self._result, ["GET"])
        self.add_route("/{endpoint:path}", self._submit, ["POST"])

    def error_body(self, status: int) -> object:
        if status == 401:
            return {"detail": WRONG_KEY_MESSAGE}
        if status == 429:
            return {"detail": "Too many concurrent requests. Please try again later."}
        if status == 503:
            return {
                "detail": "No runner could be allocated to handle the request.",
                "error_type": "runner_scheduling_failure",
            }
        if status >= 500:
            return {"detail": "Internal server error", "error_type": "internal_error"}
        return {"detail": f"Fake fal error {status}"}

    def fail_after_submit(self, status: int, body: object | None = None) -> None:
        """Let the next submit succeed, then answer the request after it with `status`."""
        self._after_submit.append((status, body))

    @property
    def cancelled(self) -> list[str]:
        """Request ids a client asked to cancel."""
        return [request_id for request_id, job in self.jobs.items() if job.cancelled]

    def cancelled_jobs(self) -> list[str]:
        return self.cancelled

    # ------------------------------------------------------------------ routes

    async def _submit(self, request: Request, rec: Recorded) -> Response:
        refused = self._refuse_auth(rec)
        if refused is not None:
            return refused
        endpoint = request.path_params["endpoint"].strip("/")
        if endpoint not in ENDPOINTS:
            return JSONResponse({"detail": f"Application '{endpoint}' not found"}, 404)
        if not isinstance(rec.json, dict):
            return JSONResponse(
                fal_detail("", "Input should be a valid dictionary", "dict_type"), 422
            )
        request_id = str(uuid.uuid4())
        self.jobs[request_id] = QueuedJob(endpoint, rec.json, self.polls_before_done)
        while self._after_submit:
            self.fail_next(*self._after_submit.pop(0))
        owner, app = endpoint.split("/")[:2]
        root = f"{_mount_root(request)}/{owner}/{app}/requests/{request_id}"
        return JSONResponse(
            {
                "status": "IN_QUEUE",
                "request_id": request_id,
                "response_url": root,
                "status_url": f"{root}/status",
                "cancel_url": f"{root}/cancel",
                "queue_position": 0,
            }
        )

    async def _status(self, request: Request, rec: Recorded) -> Response:
        refused = self._refuse_auth(rec)
        if refused is not None:
            return refused
        job = self.jobs.get(request.path_params["request_id"])
        if job is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        job.polls += 1
        self.polled.set()
        if job.cancelled and job.result is None:
            job.status = "COMPLETED"
            job.result = (499, {"detail": "Request cancelled", "error_type": "client_cancelled"})
        elif job.status in ("IN_QUEUE", "IN_PROGRESS") and job.polls > job.pending_polls:
            self._run(request, job)
        elif job.status == "IN_QUEUE" and job.polls > 1:
            job.status = "IN_PROGRESS"
        body: dict[str, Any] = {
            "status": job.status,
            "request_id": request.path_params["request_id"],
        }
        if job.status == "IN_QUEUE":
            body["queue_position"] = 0
        if job.status == "FAILED":
            body["error"] = NSFW_MESSAGE
            return JSONResponse(body)
        body["response_url"] = str(request.url).split("/status")[0]
        return JSONResponse(body, 200 if job.status == "COMPLETED" else 202)

    async def _cancel(self, request: Request, rec: Recorded) -> Response:
        refused = self._refuse_auth(rec)
        if refused is not None:
            return refused
        job = self.jobs.get(request.path_params["request_id"])
        if job is None:
            return JSONResponse({"status": "NOT_FOUND"}, 404)
        if job.status in ("COMPLETED", "FAILED"):
            return JSONResponse({"status": "ALREADY_COMPLETED"}, 400)
        job.cancelled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, 202)

    async def _result(self, request: Request, rec: Recorded) -> Response:
        refused = self._refuse_auth(rec)
        if refused is not None:
            return refused
        job = self.jobs.get(request.path_params["request_id"])
        if job is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        if job.result is None:
            return JSONResponse({"detail": "Request is still in progress"}, 400)
        status, body = job.result
        return JSONResponse(body, status)

    async def _file(self, request: Request, rec: Recorded) -> Response:
        name = request.path_params["name"].rsplit(".", 1)[0]
        if name not in self.files:
            return JSONResponse({"detail": "File not found"}, 404)
        data, content_type = self.files[name]
        return Response(data, media_type=content_type)

    # ------------------------------------------------------------------ behaviour

    def _refuse_auth(self, rec: Recorded) -> Response | None:
        header = rec.headers.get("authorization", "")
        if not header.startswith("Key ") or not header[4:].strip():
            return JSONResponse({"detail": NO_KEY_MESSAGE}, 401)
        if header[4:].strip() != self.api_key:
            return JSONResponse({"detail": WRONG_KEY_MESSAGE}, 401)
        if self.locked:
            return JSONResponse({"detail": LOCKED_MESSAGE}, 403)
        return None

    def _run(self, request: Request, job: QueuedJob) -> None:
        """Finish the job: its output, or the error fal would report for its input."""
        prompt = str(job.input.get("prompt") or "")
        if "nsfw-failure" in prompt:
            job.status = "FAILED"
            return
        job.status = "COMPLETED"
        spec = ENDPOINTS[job.endpoint]
        problem = _validate(spec, job.input)
        if problem is not None:
            job.result = (422, problem)
        elif "forbidden-content" in prompt:
            job.result = (422, CONTENT_POLICY_BODY)
        elif "runner-crash" in prompt:
            job.result = (
                500,
                {
                    "detail": "The runner encountered an internal server error.",
                    "error_type": "runner_server_error",
                },
            )
        else:
            job.result = (200, self._output(request, spec, job.input))

    def _output(self, request: Request, spec: Endpoint, params: dict[str, Any]) -> dict[str, Any]:
        fmt = str(params.get("output_format") or "png")
        if spec.kind == "video":
            data, content_type = FAKE_VIDEO, "video/mp4"
        elif spec.output_type == "image/svg+xml":
            data, content_type = SVG, "image/svg+xml"
        else:
            data, content_type = image_bytes(fmt), f"image/{fmt}"
        file_id = uuid.uuid4().hex
        self.files[file_id] = (data, content_type)
        extension = {"image/svg+xml": "svg", "video/mp4": "mp4"}.get(content_type, fmt)
        item = {
            "url": f"{_mount_root(request)}/files/{file_id}.{extension}",
            "content_type": content_type,
            "file_name": f"{file_id}.{extension}",
            "file_size": len(data),
        }
        seed = random.randint(0, 2**31 - 1)
        if spec.kind == "video":
            return {"video": item, "seed": seed}
        if spec.kind == "image":
            return {"image": item}
        size = params.get("image_size") or {"width": 1024, "height": 1024}
        image = {**item, "width": size.get("width"), "height": size.get("height")}
        return {
            "images": [image],
            "timings": {"inference": 0.42},
            "seed": seed,
            "has_nsfw_concepts": [False],
            "prompt": params.get("prompt"),
        }


def _mount_root(request: Request) -> str:
    """The fake's own root URL, including the prefix it is mounted under."""
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"


def _validate(spec: Endpoint, params: dict[str, Any]) -> dict[str, Any] | None:
    """The first input error fal's model would report, as its 422 body; None if fine."""
    for name in spec.required:
        if not params.get(name):
            return fal_detail(name, "Field required", "missing")
    if "image_urls" in params and not isinstance(params["image_urls"], list):
        return fal_detail("image_urls", "Input should be a valid list", "list_type")
    urls = params.get("image_urls") or []
    if "image_url" in params:
        urls = [params["image_url"], *urls]
    for url in urls:
        if not _loads(url):
            return fal_detail("image_url", "Could not load image from url", "image_load_error")
    steps = params.get("num_inference_steps")
    if steps is not None:
        if spec.steps is None:
            return fal_detail(
                "num_inference_steps", "Extra inputs are not permitted", "extra_forbidden"
            )
        low, high = spec.steps
        if not isinstance(steps, int) or not low <= steps <= high:
            return fal_detail(
                "num_inference_steps",
                f"Input should be between {low} and {high}",
                "less_than_equal",
            )
    fmt = params.get("output_format")
    if fmt is not None and fmt not in spec.output_formats:
        listed = " or ".join(f"'{f}'" for f in spec.output_formats) or "nothing"
        return fal_detail("output_format", f"Input should be {listed}", "literal_error")
    size = params.get("image_size")
    if size is not None and not (
        isinstance(size, dict)
        and all(isinstance(size.get(k), int) and 0 < size[k] <= 14142 for k in ("width", "height"))
    ):
        return fal_detail("image_size", "Input should be a valid image size", "model_type")
    return None


def _loads(url: Any) -> bool:
    if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
        return False
    try:
        data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except (binascii.Error, OSError, ValueError):
        return False
    return True


_CONTRACT_JOB = Job(modality="image", model="Tongyi-MAI/Z-Image-Turbo", prompt="a red kite")

CONTRACT_CASES = [
    ContractCase(
        id="fal",
        provider=FalProvider,
        make_fake=FakeFal,
        credential=DEFAULT_API_KEY,
        base_path="",
        job=_CONTRACT_JOB,
        target=Target("fal-ai/z-image/turbo", {"num_inference_steps": 8}),
        refused_job=replace(_CONTRACT_JOB, prompt="a forbidden-content scene"),
        extra={"sync_base_url": "{root}/sync"},
        polls=True,
        cancels=True,
    ),
]
