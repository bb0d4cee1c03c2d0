"""A fake xAI API: image generation and edits, video jobs, in xAI's wire format.

- auth: `Authorization: Bearer <api_key>`; none → 401 `Missing bearer…`; a wrong key →
  400 `{"code": "Client specified an invalid argument", "error": "Incorrect API key
  provided: xa***ey. You can obtain an API key from https://console.x.ai."}` (xAI's
  real status for it); `out_of_credits = True` → 403 (our team has no credits);
- `POST /v1/images/generations` and `/v1/images/edits` (edits need `image.url`, a data
  URI or URL; only grok-imagine-image edits; `image` is refused on generations) →
  `{created, data: [{url, revised_prompt, respect_moderation: true}], usage}`;
- `POST /v1/videos/generations` (`duration` 1..15, xAI's aspect ratios, 480p/720p) →
  `{request_id}`; `GET /v1/videos/{id}` → `{status: pending}` `polls_before_done` times
  (202 with no body when `empty_pending`), then `{status: done, video: {url, duration,
  respect_moderation}, usage: {cost_in_usd_ticks}}`;
- unknown model → 404 `Some requested entity was not found`;
- triggers in the prompt: `forbidden-content` → an image item with `respect_moderation:
  false` and no URL, or a video poll answering 400 `Generated video rejected by content
  moderation.`; `guideline-breach` → 403 `Content violates usage guidelines…`;
  `high-demand` → 503 `We're experiencing high demand…`; `video-fails` → status
  `failed`; `video-expires` → status `expired`;
- outputs are served at `/files/<id>.<ext>` (unscripted);
- `fail_after_submit(status)` makes the request after the next video submit (a poll) fail.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.grok import GrokProvider
from tests.fakes.contract import ContractCase
from tests.fakes.openai import image_bytes
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "xai-fake0123456789abcdefghijklmnopqrstuvwxyz"
IMAGE_MODELS = frozenset({"grok-2-image", "grok-2-image-1212", "grok-imagine-image"})
EDIT_MODELS = frozenset({"grok-imagine-image"})
VIDEO_MODELS = frozenset({"grok-imagine-video"})
ASPECT_RATIOS = frozenset(
    {"1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "19.5:9", "9:19.5", "20:9", "9:20"}
    | {"2:1", "1:2", "auto"}
)
VIDEO_ASPECT_RATIOS = frozenset({"16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16"})
TICKS_PER_USD = 10**10
VIDEO_USD_PER_SECOND = {"480p": 0.05, "720p": 0.07}
INVALID = "Client specified an invalid argument"
HIGH_DEMAND = "We're experiencing high demand for this model. Please try again later."
MODERATED_VIDEO = "Generated video rejected by content moderation."
GUIDELINES = (
    "Content violates usage guidelines. Team: 00000000-fake, API key ID: fake, "
    "Model: grok-imagine-image, Failed check: SAFETY_CHECK_TYPE_CSAM"
)
NO_CREDITS = (
    "Your newly created team doesn't have any credits yet. You can purchase credits on "
    "https://console.x.ai/team/00000000-fake."
)
FAKE_VIDEO = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isomfake-grok-video"


def xai_error(message: str, code: str = INVALID) -> dict[str, Any]:
    return {"code": code, "error": message}


def masked(key: str) -> str:
    """How xAI echoes a wrong key."""
    return f"{key[:2]}***{key[-2:]}" if len(key) > 4 else "***"


@dataclass
class VideoJob:
    prompt: str
    duration: int
    resolution: str
    pending_polls: int
    polls: int = 0
    url: str | None = None  # once done: the same URL on every poll, as at xAI


class FakeGrok(FakeVendor):
    """xAI. Give the provider `base_url=<fake root>/v1`."""

    def __init__(self, api_key: str = DEFAULT_API_KEY, *, polls_before_done: int = 1) -> None:
        super().__init__()
        self.api_key = api_key
        self.polls_before_done = polls_before_done
        self.empty_pending = False
        self.out_of_credits = False
        self.videos: dict[str, VideoJob] = {}
        self._after_submit: list[tuple[int, object | None]] = []
        #: Set at the first video poll, so tests can act on a running job.
        self.polled = asyncio.Event()
        self.files: dict[str, tuple[bytes, str]] = {}
        self.add_route("/v1/images/generations", self._images, ["POST"])
        self.add_route("/v1/images/edits", self._images, ["POST"])
        self.add_route("/v1/videos/generations", self._submit_video, ["POST"])
        self.add_route("/v1/videos/{request_id}", self._poll_video, ["GET"], poll=True)
        self.add_route("/files/{name}", self._file, ["GET"], scripted=False)

    def error_body(self, status: int) -> object:
        if status == 400:
            return xai_error(f"Incorrect API key provided: {masked('wrong-key')}.")
        if status == 429:
            return xai_error(
                "Too many requests. Please slow down.", "Some resource has been exhausted"
            )
        if status == 503:
            return xai_error(HIGH_DEMAND, "The service is currently unavailable")
        if status >= 500:
            return xai_error("Internal error. Please retry.", "Internal error")
        return xai_error(f"Fake xAI error {status}")

    def fail_after_submit(self, status: int, body: object | None = None) -> None:
        """Let the next video submit succeed, then answer the request after it with `status`."""
        self._after_submit.append((status, body))

    # ------------------------------------------------------------------ routes

    async def _images(self, request: Request, rec: Recorded) -> Response:
        refused = self._refuse(rec)
        if refused is not None:
            return refused
        params = rec.json if isinstance(rec.json, dict) else {}
        editing = rec.path.endswith("/edits")
        model = params.get("model")
        if model not in IMAGE_MODELS:
            return _not_found(model)
        problem = self._image_problem(params, str(model), editing)
        if problem is not None:
            return JSONResponse(xai_error(problem), 400)
        prompt = str(params["prompt"])
        trigger = self._trigger(prompt)
        if trigger is not None:
            return trigger
        count = int(params.get("n", 1))
        if "forbidden-content" in prompt:
            item: dict[str, Any] = {"url": "", "revised_prompt": "", "respect_moderation": False}
            return JSONResponse({"created": int(time.time()), "data": [item] * count})
        items = [
            {
                "url": self._store(request, image_bytes("jpeg"), "image/jpeg", "jpeg"),
                "revised_prompt": f"A vivid rendering of {prompt}",
                "respect_moderation": True,
            }
            for _ in range(count)
        ]
        ticks = (0.02 + (0.002 if editing else 0)) * TICKS_PER_USD * count
        return JSONResponse(
            {
                "created": int(time.time()),
                "data": items,
                "usage": {"cost_in_usd_ticks": int(ticks)},
            }
        )

    async def _submit_video(self, request: Request, rec: Recorded) -> Response:
        refused = self._refuse(rec)
        if refused is not None:
            return refused
        params = rec.json if isinstance(rec.json, dict) else {}
        model = params.get("model")
        if model not in VIDEO_MODELS:
            return _not_found(model)
        problem = _video_problem(params)
        if problem is not None:
            return JSONResponse(xai_error(problem), 400)
        trigger = self._trigger(str(params["prompt"]))
        if trigger is not None:
            return trigger
        request_id = str(uuid.uuid4())
        self.videos[request_id] = VideoJob(
            prompt=str(params["prompt"]),
            duration=int(params.get("duration", 8)),
            resolution=str(params.get("resolution", "720p")),
            pending_polls=self.polls_before_done,
        )
        while self._after_submit:
            self.fail_next(*self._after_submit.pop(0))
        return JSONResponse({"request_id": request_id})

    async def _poll_video(self, request: Request, rec: Recorded) -> Response:
        refused = self._refuse(rec)
        if refused is not None:
            return refused
        job = self.videos.get(request.path_params["request_id"])
        if job is None:
            return JSONResponse(
                xai_error("Video request not found", "Some requested entity was not found"), 404
            )
        job.polls += 1
        self.polled.set()
        if job.polls <= job.pending_polls:
            if self.empty_pending:
                return Response(status_code=202)
            return JSONResponse({"status": "pending", "progress": 50}, 202)
        usage = {
            "cost_in_usd_ticks": int(
                VIDEO_USD_PER_SECOND[job.resolution] * job.duration * TICKS_PER_USD
            )
        }
        if "forbidden-content" in job.prompt:
            return JSONResponse({**xai_error(MODERATED_VIDEO), "usage": usage}, 400)
        if "video-fails" in job.prompt:
            return JSONResponse(
                {
                    "status": "failed",
                    "error": {"code": "internal", "message": "Video rendering failed"},
                }
            )
        if "video-expires" in job.prompt:
            return JSONResponse({"status": "expired"})
        if job.url is None:
            job.url = self._store(request, FAKE_VIDEO, "video/mp4", "mp4")
        return JSONResponse(
            {
                "status": "done",
                "video": {"url": job.url, "duration": job.duration, "respect_moderation": True},
                "model": "grok-imagine-video",
                "usage": usage,
                "progress": 100,
            }
        )

    async def _file(self, request: Request, rec: Recorded) -> Response:
        name = request.path_params["name"].rsplit(".", 1)[0]
        if name not in self.files:
            return JSONResponse(
                xai_error("File not found", "Some requested entity was not found"), 404
            )
        data, content_type = self.files[name]
        return Response(data, media_type=content_type)

    # ------------------------------------------------------------------ behaviour

    def _refuse(self, rec: Recorded) -> Response | None:
        header = rec.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return JSONResponse(
                xai_error("Missing bearer or basic authentication in header", "Unauthenticated"),
                401,
            )
        key = header[7:].strip()
        if key != self.api_key:
            return JSONResponse(
                xai_error(
                    f"Incorrect API key provided: {masked(key)}. You can obtain an API key "
                    "from https://console.x.ai."
                ),
                400,
            )
        if self.out_of_credits:
            return JSONResponse(
                xai_error(
                    NO_CREDITS,
                    "The caller does not have permission to execute the specified operation",
                ),
                403,
            )
        return None

    def _trigger(self, prompt: str) -> Response | None:
        if "guideline-breach" in prompt:
            return JSONResponse(
                xai_error(
                    GUIDELINES,
                    "The caller does not have permission to execute the specified operation",
                ),
                403,
            )
        if "high-demand" in prompt:
            return JSONResponse(xai_error(HIGH_DEMAND, "The service is currently unavailable"), 503)
        return None

    def _image_problem(self, params: dict[str, Any], model: str, editing: bool) -> str | None:
        if not params.get("prompt"):
            return "prompt: must not be empty"
        n = params.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 10:
            return "n: must be between 1 and 10"
        ratio = params.get("aspect_ratio")
        if ratio is not None and ratio not in ASPECT_RATIOS:
            return f"Invalid aspect ratio: {ratio}"
        image = params.get("image")
        if not editing:
            return "Argument not supported: image" if image is not None else None
        if model not in EDIT_MODELS:
            return f"Model {model} does not support image editing"
        if not isinstance(image, dict) or not _is_image_url(image.get("url")):
            return "image.url: must be a valid image URL or base64 data URI"
        return None

    def _store(self, request: Request, data: bytes, content_type: str, extension: str) -> str:
        file_id = uuid.uuid4().hex
        self.files[file_id] = (data, content_type)
        root = f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"
        return f"{root}/files/{file_id}.{extension}"


def _not_found(model: Any) -> Response:
    return JSONResponse(
        xai_error(
            f"The model {model} does not exist or your team 00000000-fake does not have "
            "access to it.",
            "Some requested entity was not found",
        ),
        404,
    )


def _video_problem(params: dict[str, Any]) -> str | None:
    if not params.get("prompt"):
        return "prompt: must not be empty"
    duration = params.get("duration", 8)
    if not isinstance(duration, int) or not 1 <= duration <= 15:
        return "duration: must be an integer between 1 and 15"
    if params.get("aspect_ratio", "16:9") not in VIDEO_ASPECT_RATIOS:
        return f"Invalid aspect ratio: {params.get('aspect_ratio')}"
    if params.get("resolution", "720p") not in VIDEO_USD_PER_SECOND:
        return f"Invalid resolution: {params.get('resolution')}"
    image = params.get("image")
    if image is not None and (not isinstance(image, dict) or not _is_image_url(image.get("url"))):
        return "image.url: must be a valid image URL or base64 data URI"
    return None


def _is_image_url(url: Any) -> bool:
    return isinstance(url, str) and (
        url.startswith(("https://", "http://"))
        or (url.startswith("data:image/") and ";base64," in url)
    )


_IMAGE_JOB = Job(modality="image", model="xAI/grok-imagine-image", prompt="a red kite")
_VIDEO_JOB = Job(modality="video", model="xAI/grok-imagine-video", prompt="a red kite", seconds=5.0)

CONTRACT_CASES = [
    ContractCase(
        id="grok",
        provider=GrokProvider,
        make_fake=FakeGrok,
        credential=DEFAULT_API_KEY,
        base_path="/v1",
        job=_IMAGE_JOB,
        target=Target("grok-imagine-image"),
        refused_job=replace(_IMAGE_JOB, prompt="a forbidden-content scene"),
    ),
    ContractCase(
        id="grok",
        provider=GrokProvider,
        make_fake=FakeGrok,
        credential=DEFAULT_API_KEY,
        base_path="/v1",
        job=_VIDEO_JOB,
        target=Target("grok-imagine-video"),
        refused_job=replace(_VIDEO_JOB, prompt="a forbidden-content scene"),
        polls=True,  # xAI has no cancel for video jobs
    ),
]
