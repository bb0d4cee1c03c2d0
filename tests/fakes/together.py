"""A fake Together AI images API (`POST /v1/images/generations`).

What it mirrors of the real service:
- `Authorization: Bearer <key>`; a wrong key is 401 with Together's OpenAI-style body
  (`code: "invalid_api_key"`).
- The request fields of Together's images API (`model`, `prompt`, `n`, `width`, `height`,
  `steps`, `seed`, `negative_prompt`, `response_format`, `output_format`,
  `disable_safety_checker`, `image_url`); unlike Together, unknown fields are refused, so
  a test notices a knob Together does not know. Sizes must be multiples of 16 in 64..1792;
  `steps` is bounded per model.
- An unknown model is 404 `model_not_available`.
- The answer `{id, model, object: "list", data: [{index, url}]}`; URLs point at the fake's
  own `/imgproxy/<id>` (`response_format: "base64"` gives `b64_json` instead).
- A prompt containing `moderation_trigger` is refused with 422, as a model whose own safety
  checker ignores `disable_safety_checker` would.
"""

from __future__ import annotations

import base64
import io
import uuid
from dataclasses import replace
from functools import lru_cache
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.together import TogetherProvider
from tests.fakes.contract import ContractCase
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "tgp_v1_8c1d5e9f2a7b4c6d0e3f1a2b5c8d"

#: model → most steps it accepts
MODELS: dict[str, int] = {
    "black-forest-labs/FLUX.1-schnell-Free": 4,
    "black-forest-labs/FLUX.1-schnell": 12,
    "black-forest-labs/FLUX.1-dev": 50,
    "black-forest-labs/FLUX.1.1-pro": 50,
}
KNOWN_FIELDS = frozenset(
    {
        "model",
        "prompt",
        "n",
        "width",
        "height",
        "steps",
        "seed",
        "negative_prompt",
        "response_format",
        "output_format",
        "disable_safety_checker",
        "image_url",
    }
)

INVALID_KEY_MESSAGE = (
    "Invalid API key provided. You can find your API key at "
    "https://api.together.xyz/settings/api-keys."
)
CREDIT_LIMIT_MESSAGE = (
    "Credit limit exceeded. Please navigate to https://api.together.xyz/settings/billing "
    "to add credit or upgrade your plan."
)
MODERATION_MESSAGE = "Your request was flagged by our content moderation system."


def together_error(
    message: str,
    kind: str = "invalid_request_error",
    *,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@lru_cache(maxsize=4)
def image_bytes(fmt: str = "jpeg") -> bytes:
    """A real 40x40 patterned image (long enough that log redaction must cut it)."""
    pixels = bytes(
        (x * 3 + y * 17 + c * 71) % 256 for y in range(40) for x in range(40) for c in range(3)
    )
    buffer = io.BytesIO()
    Image.frombytes("RGB", (40, 40), pixels).save(buffer, format=fmt.upper())
    return buffer.getvalue()


class _Invalid(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body["error"]["message"])
        self.status = status
        self.body = body


def _bad(message: str, param: str | None = None) -> _Invalid:
    return _Invalid(400, together_error(message, param=param))


class FakeTogether(FakeVendor):
    """Together's images API. Give the provider `base_url=<fake root>`."""

    def __init__(
        self, api_key: str = DEFAULT_API_KEY, *, moderation_trigger: str = "forbidden-content"
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.moderation_trigger = moderation_trigger
        self.files: dict[str, tuple[bytes, str]] = {}
        self.add_route("/v1/images/generations", self._generations, ["POST"])
        self.add_route("/imgproxy/{name}", self._file, ["GET"], scripted=False)

    def error_body(self, status: int) -> object:
        if status == 401:
            return together_error(INVALID_KEY_MESSAGE, code="invalid_api_key")
        if status == 402:
            return together_error(CREDIT_LIMIT_MESSAGE, "credit_limit")
        if status == 429:
            return together_error(
                "You have reached the rate limit specific to this model. The maximum rate "
                "limit for this model is 6.0 queries per minute.",
                "model_rate_limit",
            )
        if status == 503:
            return together_error("The server is overloaded or not ready yet.", "server_error")
        if status >= 500:
            return together_error("Internal server error", "server_error")
        return together_error(f"Fake Together error {status}")

    async def _generations(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
            params = self._params(rec)
        except _Invalid as exc:
            return JSONResponse(exc.body, status_code=exc.status)
        if self.moderation_trigger.lower() in str(params["prompt"]).lower():
            return JSONResponse(
                together_error(MODERATION_MESSAGE, param="prompt", code="content_policy_violation"),
                status_code=422,
            )
        fmt = params.get("output_format") or "jpeg"
        items = []
        for index in range(int(params.get("n", 1))):
            if params.get("response_format") == "base64":
                encoded = base64.b64encode(image_bytes(fmt)).decode("ascii")
                items.append({"index": index, "b64_json": encoded, "timings": {"inference": 0.7}})
            else:
                name = uuid.uuid4().hex
                self.files[name] = (image_bytes(fmt), f"image/{fmt}")
                url = f"{rec.base_url}imgproxy/{name}"
                items.append({"index": index, "url": url, "timings": {"inference": 0.7}})
        return JSONResponse(
            {"id": uuid.uuid4().hex, "model": params["model"], "object": "list", "data": items}
        )

    async def _file(self, request: Request, rec: Recorded) -> Response:
        found = self.files.get(request.path_params["name"])
        if found is None:
            return JSONResponse({"message": "not found"}, status_code=404)
        return Response(found[0], media_type=found[1])

    def _authorise(self, rec: Recorded) -> None:
        header = rec.headers.get("authorization", "")
        if not header.startswith("Bearer ") or header[7:].strip() != self.api_key:
            raise _Invalid(401, together_error(INVALID_KEY_MESSAGE, code="invalid_api_key"))

    def _params(self, rec: Recorded) -> dict[str, Any]:
        if not isinstance(rec.json, dict):
            raise _bad("Request body must be valid JSON")
        params: dict[str, Any] = rec.json
        for name in params:
            if name not in KNOWN_FIELDS:
                raise _bad(f"Unrecognized request argument supplied: {name}", name)
        model = params.get("model")
        if model not in MODELS:
            raise _Invalid(
                404,
                together_error(
                    f"Unable to access model {model}. Please visit https://api.together.ai/models "
                    "to view the list of supported models.",
                    code="model_not_available",
                ),
            )
        if not isinstance(params.get("prompt"), str) or not params["prompt"]:
            raise _bad("prompt is required", "prompt")
        for side in ("width", "height"):
            value = params.get(side, 1024)
            if not isinstance(value, int) or not 64 <= value <= 1792 or value % 16:
                raise _bad(f"{side} must be a multiple of 16 between 64 and 1792", side)
        steps = params.get("steps", 1)
        if not isinstance(steps, int) or not 1 <= steps <= MODELS[model]:
            raise _bad(f"steps must be between 1 and {MODELS[model]}", "steps")
        n = params.get("n", 1)
        if not isinstance(n, int) or not 1 <= n <= 4:
            raise _bad("n must be between 1 and 4", "n")
        if params.get("output_format", "jpeg") not in ("jpeg", "png"):
            raise _bad("output_format must be one of: jpeg, png", "output_format")
        if params.get("response_format", "url") not in ("url", "base64"):
            raise _bad("response_format must be one of: url, base64", "response_format")
        return params


_CONTRACT_JOB = Job(modality="image", model="together/flux-schnell", prompt="a red kite")

CONTRACT_CASES = [
    ContractCase(
        id="together",
        provider=TogetherProvider,
        make_fake=FakeTogether,
        credential=DEFAULT_API_KEY,
        base_path="",
        job=_CONTRACT_JOB,
        target=Target("black-forest-labs/FLUX.1-schnell", {"steps": 4}),
        refused_job=replace(_CONTRACT_JOB, prompt="a forbidden-content scene"),
    ),
]
