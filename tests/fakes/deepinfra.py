"""A fake DeepInfra inference API (`POST /v1/inference/<model>`), for the catalog's models.

What it mirrors of the real service:
- `Authorization: bearer <key>` (any case of the scheme); a missing or wrong key is 401.
- JSON bodies for text-to-image models, validated FastAPI-style: a bad field is 422 with
  `detail: [{loc, msg, type}]`. Unlike DeepInfra, unknown fields are refused too, so a
  test notices a knob sent to a model that does not take it.
- Multipart bodies (`image` file, optional `prompt`) for the Bria editing models; the file
  must be a real image.
- Answers in the three shapes DeepInfra's families use (which family uses which here is
  illustrative): `images` as data URIs (FLUX schnell, SDXL turbo), `images` as URLs (FLUX
  pro), `image_urls` (Bria generators) and `image_url` (Bria editors). URLs point at the
  fake's own `/files/<id>.png`. `inference_status.cost` follows DeepInfra's price list.
- A prompt containing `moderation_trigger` gets the 200 `status: "request_moderated"` body.
- An unknown model is 404.
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.deepinfra import DeepInfraProvider
from tests.fakes.contract import ContractCase
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "di-test-4f1c2b7e9a0d6c3e8b5a1f2d"

UNAUTHORIZED_BODY = {"detail": {"error": "Unauthorized"}}
RATE_LIMIT_BODY = {"detail": {"error": "Rate limited: too many requests, please slow down"}}
OVERLOADED_BODY = {"detail": {"error": "Model is overloaded, please try again later"}}
NO_BALANCE_BODY = {"detail": {"error": "Insufficient balance, please add a payment method"}}

Cost = Callable[[int, int, int], Decimal]


def _per_megapixel_step(usd: str) -> Cost:
    return lambda w, h, steps: Decimal(usd) * w * h * steps / (1024 * 1024)


def _flat(usd: str) -> Cost:
    return lambda w, h, steps: Decimal(usd)


@dataclass(frozen=True)
class FakeModel:
    output: str  # "data_uri" | "url_images" | "image_urls" | "image_url"
    cost: Cost
    fields: frozenset[str] = frozenset({"prompt", "num_images", "width", "height", "seed"})
    step_field: str | None = None
    max_steps: int = 50
    default_steps: int = 1
    sizes: range = range(128, 2049, 16)  # allowed widths and heights
    takes_image: bool = False


MODELS: dict[str, FakeModel] = {
    "black-forest-labs/FLUX-1-schnell": FakeModel(
        "data_uri", _per_megapixel_step("0.0005"), step_field="num_inference_steps"
    ),
    "black-forest-labs/FLUX-pro": FakeModel(
        "url_images", _flat("0.05"), step_field="steps", default_steps=25
    ),
    "black-forest-labs/FLUX-1.1-pro": FakeModel("image_url", _flat("0.04")),
    "stabilityai/sdxl-turbo": FakeModel(
        "data_uri",
        _per_megapixel_step("0.00004"),
        step_field="num_inference_steps",
        max_steps=10,
        default_steps=5,
        sizes=range(128, 1025, 64),
    ),
    "Bria/Bria-3.2": FakeModel("image_urls", _flat("0.04")),
    "Bria/Bria-3.2-vector": FakeModel("image_urls", _flat("0.04")),
    "Bria/blur_background": FakeModel("image_url", _flat("0.04"), takes_image=True),
    "Bria/enhance": FakeModel("image_url", _flat("0.04"), takes_image=True),
    "Bria/erase_foreground": FakeModel("image_url", _flat("0.04"), takes_image=True),
    "Bria/remove_background": FakeModel("image_url", _flat("0.018"), takes_image=True),
}


@lru_cache(maxsize=4)
def image_bytes(fmt: str = "png") -> bytes:
    """A real 48x48 patterned image (long enough that log redaction must cut it)."""
    pixels = bytes(
        (x * 5 + y * 11 + c * 89) % 256 for y in range(48) for x in range(48) for c in range(3)
    )
    buffer = io.BytesIO()
    Image.frombytes("RGB", (48, 48), pixels).save(buffer, format=fmt.upper())
    return buffer.getvalue()


def data_uri() -> str:
    return "data:image/png;base64," + base64.b64encode(image_bytes()).decode("ascii")


def status_body(cost: Decimal, status: str = "succeeded") -> dict[str, Any]:
    return {
        "status": status,
        "runtime_ms": 812,
        "cost": float(cost),
        "tokens_generated": None,
        "tokens_input": None,
    }


class _Invalid(Exception):
    def __init__(self, status: int, body: object) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def _field_error(field: str, msg: str, kind: str) -> _Invalid:
    return _Invalid(422, {"detail": [{"loc": ["body", field], "msg": msg, "type": kind}]})


class FakeDeepInfra(FakeVendor):
    """DeepInfra's inference API. Give the provider `base_url=<fake root>`."""

    def __init__(
        self, api_key: str = DEFAULT_API_KEY, *, moderation_trigger: str = "forbidden-content"
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.moderation_trigger = moderation_trigger
        self.files: dict[str, bytes] = {}
        self.add_route("/v1/inference/{model:path}", self._inference, ["POST"])
        self.add_route("/files/{name}", self._file, ["GET"], scripted=False)

    def error_body(self, status: int) -> object:
        if status == 401:
            return UNAUTHORIZED_BODY
        if status == 402:
            return NO_BALANCE_BODY
        if status == 429:
            return RATE_LIMIT_BODY
        if status == 503:
            return OVERLOADED_BODY
        if status >= 500:
            return {"detail": {"error": "Internal server error"}}
        return {"detail": {"error": f"Fake DeepInfra error {status}"}}

    # ------------------------------------------------------------------ routes

    async def _inference(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
            name = request.path_params["model"]
            model = MODELS.get(name)
            if model is None:
                raise _Invalid(404, {"detail": {"error": f"Model {name} is not available"}})
            if model.takes_image:
                prompt, width, height, steps = self._image_input(rec)
            else:
                prompt, width, height, steps = self._text_input(rec, model)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        request_id = uuid.uuid4().hex
        if self.moderation_trigger.lower() in prompt.lower():
            return JSONResponse(
                {
                    "request_id": request_id,
                    "status": "request_moderated",
                    "inference_status": status_body(Decimal(0), "failed"),
                }
            )
        body: dict[str, Any] = {
            "request_id": request_id,
            "inference_status": status_body(model.cost(width, height, steps)),
        }
        if model.output == "data_uri":
            body |= {"images": [data_uri()], "nsfw_content_detected": [False], "seed": 42}
        elif model.output == "url_images":
            body |= {"images": [self._store(rec)], "seed": 42}
        elif model.output == "image_urls":
            body["image_urls"] = [self._store(rec)]
        else:
            body["image_url"] = self._store(rec)
        return JSONResponse(body)

    async def _file(self, request: Request, rec: Recorded) -> Response:
        data = self.files.get(request.path_params["name"].removesuffix(".png"))
        if data is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        return Response(data, media_type="image/png")

    # ------------------------------------------------------------------ validation

    def _authorise(self, rec: Recorded) -> None:
        scheme, _, key = rec.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or key.strip() != self.api_key:
            raise _Invalid(401, UNAUTHORIZED_BODY)

    def _text_input(self, rec: Recorded, model: FakeModel) -> tuple[str, int, int, int]:
        if rec.content_type != "application/json" or not isinstance(rec.json, dict):
            raise _Invalid(
                422, {"detail": [{"loc": ["body"], "msg": "Field required", "type": "missing"}]}
            )
        params: dict[str, Any] = rec.json
        allowed = model.fields | ({model.step_field} if model.step_field else set())
        for name in params:
            if name not in allowed:
                raise _field_error(name, "Extra inputs are not permitted", "extra_forbidden")
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _field_error("prompt", "Field required", "missing")
        count = params.get("num_images", 1)
        if not isinstance(count, int) or not 1 <= count <= 4:
            raise _field_error("num_images", "Input should be between 1 and 4", "range")
        width = self._dimension(params, "width", model)
        height = self._dimension(params, "height", model)
        steps = model.default_steps
        if model.step_field and model.step_field in params:
            steps = params[model.step_field]
            if not isinstance(steps, int) or not 1 <= steps <= model.max_steps:
                raise _field_error(
                    model.step_field,
                    f"Input should be less than or equal to {model.max_steps}",
                    "less_than_equal",
                )
        return prompt, width, height, steps

    def _dimension(self, params: dict[str, Any], name: str, model: FakeModel) -> int:
        value = params.get(name, 1024)
        if not isinstance(value, int):
            raise _field_error(name, "Input should be a valid integer", "int_type")
        if value not in model.sizes:
            raise _field_error(
                name,
                f"Input should be a multiple of {model.sizes.step} between "
                f"{model.sizes.start} and {model.sizes.stop - 1}",
                "value_error",
            )
        return value

    def _image_input(self, rec: Recorded) -> tuple[str, int, int, int]:
        if rec.content_type != "multipart/form-data":
            raise _field_error("image", "Field required", "missing")
        images = rec.files_named("image")
        if len(images) != 1:
            raise _field_error("image", "Field required", "missing")
        unknown = set(rec.form) - {"prompt"}
        if unknown:
            raise _field_error(min(unknown), "Extra inputs are not permitted", "extra_forbidden")
        try:
            with Image.open(io.BytesIO(images[0].data)) as picture:
                picture.verify()
                width, height = picture.size
        except Exception:
            raise _field_error("image", "Invalid image file", "value_error") from None
        return rec.field_value("prompt") or "", width, height, 1

    def _store(self, rec: Recorded) -> str:
        file_id = uuid.uuid4().hex
        self.files[file_id] = image_bytes()
        return f"{rec.base_url}files/{file_id}.png"


_CONTRACT_JOB = Job(
    modality="image",
    model="black-forest-labs/FLUX-1-schnell:free",
    prompt="a red kite",
    size="512x512",
)

CONTRACT_CASES = [
    ContractCase(
        id="deepinfra",
        provider=DeepInfraProvider,
        make_fake=FakeDeepInfra,
        credential=DEFAULT_API_KEY,
        base_path="",
        job=_CONTRACT_JOB,
        target=Target("black-forest-labs/FLUX-1-schnell", {"num_inference_steps": 1}),
        refused_job=replace(_CONTRACT_JOB, prompt="a forbidden-content scene"),
    ),
]
