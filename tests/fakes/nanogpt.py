"""A fake NanoGPT: `POST /v1/images/generations` and the Midjourney status check.

It speaks NanoGPT's wire format and validates like it, so an adapter that sends what
NanoGPT would refuse fails here too:

- auth: `Authorization: Bearer <key>` on generations (OpenAI-shaped 401 body), `x-api-key`
  on `POST /api/check-midjourney-status` (NanoGPT's legacy `{"error": "...", "status"}`);
- missing prompt, unknown model or field, bad `n`/`quality`, images for a text-only model,
  several images for a single-image model, input that is not an image data URL → 400;
- a prompt containing `refusal_trigger` → OpenAI's 400 `moderation_blocked` body for the
  synchronous models; for Midjourney the task FAILS with a moderation `failReason`;
- success: `{created, data: [{b64_json}|{url}], cost, paymentSource, remainingBalance}`;
  Midjourney answers `{task_id, status: "submitted", cost, ...}` and its status check goes
  IN_PROGRESS for `midjourney_polls` checks, then SUCCESS with an `imageUrl` the fake
  serves at `GET /files/<id>.png` (or FAILED with `midjourney_fail_reason` when set);
  `fail_polls` (of `FakeVendor`) makes only the status checks fail.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.nanogpt import NanoGPTProvider
from tests.fakes.contract import ContractCase
from tests.fakes.openai import MODERATION_BODY, image_bytes
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "ngpt_fake_5f0c2d7e9a1b43c8b6d4e2f1a0c9b8d7"

# Models taking several input images, one input image, or none.
MULTI_IMAGE_MODELS = frozenset(
    {"gpt-image-1", "gpt-image-1-mini", "seedream-v3", "seedream-v4", "hunyuan-image-3"}
)
SINGLE_IMAGE_MODELS = frozenset({"midjourney"})
TEXT_ONLY_MODELS = frozenset({"lucid-origin", "hidream"})
QUALITY_MODELS = frozenset({"gpt-image-1", "gpt-image-1-mini"})
MASK_MODELS = frozenset({"gpt-image-1", "gpt-image-1-mini"})
ASYNC_MODELS = frozenset({"midjourney"})
MODELS = MULTI_IMAGE_MODELS | SINGLE_IMAGE_MODELS | TEXT_ONLY_MODELS

QUALITIES = ("auto", "low", "medium", "high")
KNOWN_FIELDS = frozenset(
    {
        "prompt",
        "model",
        "n",
        "size",
        "response_format",
        "user",
        "quality",
        "imageDataUrl",
        "imageDataUrls",
        "maskDataUrl",
        "strength",
        "guidance_scale",
        "num_inference_steps",
        "seed",
        "kontext_max_mode",
    }
)
MAX_DATA_URL_CHARS = 4 * 1024 * 1024

# What NanoGPT charges (USD) per image; gpt-image by quality ("auto" renders as medium).
QUALITY_COSTS = {"low": 0.011, "medium": 0.042, "high": 0.167}
MODEL_COSTS = {
    "gpt-image-1-mini": 0.011,
    "lucid-origin": 0.028,
    "seedream-v3": 0.03,
    "seedream-v4": 0.03,
    "hunyuan-image-3": 0.045,
    "hidream": 0.01,
    "midjourney": 0.0808,
}
MIDJOURNEY_REFUSAL = "Content moderation filter triggered."

_DATA_URL = re.compile(r"^data:image/(png|jpeg|jpg|webp|gif);base64,(.+)$", re.DOTALL)


def openai_style_error(
    message: str, type_: str = "invalid_request_error", code: str | None = None
) -> dict[str, Any]:
    """The OpenAI-compatible error envelope NanoGPT's `/v1` routes answer with."""
    return {"error": {"message": message, "type": type_, "code": code, "param": None}}


def legacy_error(message: str, status: int) -> dict[str, Any]:
    """The simple envelope of NanoGPT's older `/api/*` routes."""
    return {"error": message, "status": status}


def cost_for(model: str, quality: str | None) -> float:
    if model == "gpt-image-1":
        return QUALITY_COSTS.get(quality or "medium", QUALITY_COSTS["medium"])
    return MODEL_COSTS[model]


class _Invalid(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def _bad(message: str) -> _Invalid:
    return _Invalid(400, openai_style_error(message))


@dataclass
class MidjourneyTask:
    prompt: str
    polls_left: int
    fail_reason: str | None
    image_id: str
    checks: int = 0


class FakeNanoGPT(FakeVendor):
    """NanoGPT. Give the provider `base_url=<fake root>` (the host, no path)."""

    def __init__(
        self, api_key: str = DEFAULT_API_KEY, *, refusal_trigger: str = "forbidden-content"
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.refusal_trigger = refusal_trigger
        self.balance = 25.0
        #: IN_PROGRESS answers a Midjourney task gives before it ends.
        self.midjourney_polls = 2
        #: When set, the next Midjourney tasks FAIL with this reason.
        self.midjourney_fail_reason: str | None = None
        self.tasks: dict[str, MidjourneyTask] = {}
        self.files: dict[str, bytes] = {}
        self.add_route("/v1/images/generations", self._generations, ["POST"])
        self.add_route("/api/check-midjourney-status", self._midjourney_status, ["POST"], poll=True)
        self.add_route("/files/{name}", self._file, ["GET"], scripted=False)

    def error_body(self, status: int) -> object:
        if status == 401:
            return openai_style_error("Invalid API key", "authentication_error", "invalid_api_key")
        if status == 402:
            return legacy_error("Insufficient balance", 402)
        if status == 429:
            return openai_style_error(
                "Rate limit exceeded. Please slow down.", "rate_limit_error", "rate_limit_exceeded"
            )
        if status == 503:
            return openai_style_error(
                "Service temporarily unavailable", "server_error", "service_unavailable"
            )
        if status >= 500:
            return openai_style_error("Internal server error", "server_error")
        return openai_style_error(f"Fake NanoGPT error {status}")

    @property
    def generation_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/v1/images/generations"]

    @property
    def status_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/api/check-midjourney-status"]

    # ------------------------------------------------------------------ routes

    async def _generations(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise_bearer(rec)
            if not isinstance(rec.json, dict):
                raise _bad("Invalid JSON body")
            params: dict[str, Any] = rec.json
            model = self._validate(params)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        prompt = str(params["prompt"])
        refused = self.refusal_trigger.lower() in prompt.lower()
        if refused and model not in ASYNC_MODELS:
            return JSONResponse(MODERATION_BODY, status_code=400)
        quality = params.get("quality")
        cost = cost_for(model, quality if isinstance(quality, str) else None)
        self.balance -= cost
        if model in ASYNC_MODELS:
            return JSONResponse(self._submit_midjourney(prompt, cost, refused=refused))
        png = image_bytes("png")
        if params.get("response_format") == "url":
            file_id = uuid.uuid4().hex
            self.files[file_id] = png
            item = {"url": f"{rec.base_url}files/{file_id}.png"}
        else:
            item = {"b64_json": base64.b64encode(png).decode("ascii")}
        return JSONResponse(
            {
                "created": int(time.time()),
                "data": [item for _ in range(int(params.get("n", 1)))],
                "cost": cost,
                "paymentSource": "USD",
                "remainingBalance": round(self.balance, 6),
            }
        )

    def _submit_midjourney(self, prompt: str, cost: float, *, refused: bool) -> dict[str, Any]:
        task_id = uuid.uuid4().hex[:16]
        self.tasks[task_id] = MidjourneyTask(
            prompt=prompt,
            polls_left=self.midjourney_polls,
            fail_reason=MIDJOURNEY_REFUSAL if refused else self.midjourney_fail_reason,
            image_id=uuid.uuid4().hex,
        )
        return {
            "task_id": task_id,
            "status": "submitted",
            "cost": cost,
            "paymentSource": "USD",
            "remainingBalance": round(self.balance, 6),
        }

    async def _midjourney_status(self, request: Request, rec: Recorded) -> Response:
        if rec.headers.get("x-api-key") != self.api_key:
            return JSONResponse(legacy_error("Invalid API key", 401), status_code=401)
        task_id = rec.json.get("task_id") if isinstance(rec.json, dict) else None
        if not isinstance(task_id, str) or not task_id:
            return JSONResponse(legacy_error("task_id is required", 400), status_code=400)
        task = self.tasks.get(task_id)
        if task is None:
            return JSONResponse(legacy_error("Task not found", 404), status_code=404)
        task.checks += 1
        answer: dict[str, Any] = {"task_id": task_id, "imageUrl": None, "failReason": None}
        if task.polls_left > 0:
            task.polls_left -= 1
            progress = 100 * task.checks // (task.checks + task.polls_left + 1)
            return JSONResponse({**answer, "status": "IN_PROGRESS", "progress": f"{progress}%"})
        if task.fail_reason is not None:
            return JSONResponse(
                {**answer, "status": "FAILED", "progress": "0%", "failReason": task.fail_reason}
            )
        self.files[task.image_id] = image_bytes("png")
        url = f"{rec.base_url}files/{task.image_id}.png"
        return JSONResponse({**answer, "status": "SUCCESS", "progress": "100%", "imageUrl": url})

    async def _file(self, request: Request, rec: Recorded) -> Response:
        name = request.path_params["name"].removesuffix(".png")
        if name not in self.files:
            return JSONResponse(legacy_error("File not found", 404), status_code=404)
        return Response(self.files[name], media_type="image/png")

    # ------------------------------------------------------------------ validation

    def _authorise_bearer(self, rec: Recorded) -> None:
        header = rec.headers.get("authorization", "")
        key = header[7:].strip() if header.startswith("Bearer ") else ""
        if key != self.api_key:
            raise _Invalid(
                401,
                openai_style_error("Invalid API key", "authentication_error", "invalid_api_key"),
            )

    def _validate(self, params: dict[str, Any]) -> str:
        unknown = sorted(set(params) - KNOWN_FIELDS)
        if unknown:
            raise _bad(f"Unrecognized request argument supplied: {unknown[0]}")
        if not isinstance(params.get("prompt"), str) or not params["prompt"].strip():
            raise _bad("Prompt is required")
        model = params.get("model", "hidream")
        if model not in MODELS:
            raise _Invalid(
                404, openai_style_error(f"Model {model} not found", code="model_not_found")
            )
        if params.get("n", 1) != 1 and model in ASYNC_MODELS | QUALITY_MODELS:
            raise _bad(f"n must be 1 for {model}")
        quality = params.get("quality")
        if quality is not None and (model not in QUALITY_MODELS or quality not in QUALITIES):
            raise _bad(f"Invalid quality '{quality}' for model {model}")
        if params.get("response_format", "b64_json") not in ("b64_json", "url"):
            raise _bad("response_format must be 'b64_json' or 'url'")
        images = self._images(params, model)
        if "maskDataUrl" in params:
            if model not in MASK_MODELS:
                raise _bad(f"Model {model} does not support inpainting masks")
            if not images:
                raise _bad("maskDataUrl requires an input image")
            _check_data_url("maskDataUrl", params["maskDataUrl"])
        return str(model)

    def _images(self, params: dict[str, Any], model: str) -> list[str]:
        single = params.get("imageDataUrl")
        several = params.get("imageDataUrls")
        if single is not None and several is not None:
            raise _bad("Provide either imageDataUrl or imageDataUrls, not both")
        if several is not None:
            if not isinstance(several, list) or not several:
                raise _bad("imageDataUrls must be a non-empty array of data URLs")
            if model not in MULTI_IMAGE_MODELS:
                raise _bad(f"Model {model} does not support multiple input images")
            images = several
        else:
            images = [] if single is None else [single]
        if images and model in TEXT_ONLY_MODELS:
            raise _bad(f"Model {model} does not support image input")
        for image in images:
            _check_data_url("imageDataUrl", image)
        return images


def _check_data_url(field: str, value: Any) -> None:
    if not isinstance(value, str):
        raise _bad(f"{field} must be a base64 data URL")
    if len(value) > MAX_DATA_URL_CHARS:
        raise _Invalid(413, openai_style_error(f"{field} is larger than 4 MB"))
    match = _DATA_URL.match(value)
    if match is None:
        raise _bad(f"{field} must be a data URL of the form data:image/<type>;base64,<data>")
    try:
        raw = base64.b64decode(match.group(2), validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
    except (binascii.Error, ValueError, OSError):
        raise _bad(f"{field} is not a readable image") from None


_SYNC_JOB = Job(modality="image", model="openai/gpt-image-1", prompt="a paper crane", quality="low")
_MIDJOURNEY_JOB = Job(modality="image", model="midjourney/midjourney", prompt="a koi pond")

CONTRACT_CASES = [
    ContractCase(
        id="nanogpt",
        provider=NanoGPTProvider,
        make_fake=FakeNanoGPT,
        credential=DEFAULT_API_KEY,
        base_path="",
        job=_SYNC_JOB,
        target=Target("gpt-image-1", {"quality": "low"}),
        refused_job=replace(_SYNC_JOB, prompt="a forbidden-content scene"),
    ),
    # The Midjourney queue: submit, then status checks until SUCCESS or FAILED.
    ContractCase(
        id="nanogpt",
        provider=NanoGPTProvider,
        make_fake=FakeNanoGPT,
        credential=DEFAULT_API_KEY,
        base_path="",
        job=_MIDJOURNEY_JOB,
        target=Target("midjourney"),
        refused_job=replace(_MIDJOURNEY_JOB, prompt="a forbidden-content scene"),
        polls=True,  # NanoGPT has no call that stops a Midjourney task
    ),
]
