"""A fake Chutes: the per-chute image hosts and the shared image host, on one app.

Real chutes live on their own hosts (`https://chutes-<chute>.chutes.ai/generate`); the fake
puts each under a path instead, so give the provider the base URL template
`<fake root>/{model}`: a chute is served at `/<chute>/generate`, and the shared image host
(`image.chutes.ai`, the provider's shared-host rule) at `/image/generate`.

What it mirrors of the real service:
- `Authorization: Bearer <key>` or `X-API-Key: <key>`; a wrong key is 401
  `{"detail": "Invalid token or user not found"}`, a missing one 401 "Missing or invalid
  authorization header(s)".
- An unknown chute is 404 `{"detail": "No matching chute found!"}`.
- A JSON body validated against the chute's inputs (400 `{"detail": …}` like the Chutes
  gateway relays a chute's bad request). Unlike Chutes, unknown fields are refused, so a
  test notices a field sent where it does not belong (e.g. `model` on a per-chute host).
  The shared host requires `model`.
- A 200 answer is the JPEG itself (`content-type: image/jpeg`).
- A prompt containing `refusal_trigger` is refused with 400 by the chute's safety filter.
- `capacity_next()`: the next request gets Chutes' free-model capacity answer (429).
"""

from __future__ import annotations

import io
from dataclasses import replace
from functools import lru_cache
from typing import Any

from PIL import Image
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.chutes import FREE_CAPACITY_MESSAGE, ChutesProvider
from image_router.providers.contract import Job, Target
from tests.fakes.contract import ContractCase
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = (
    "cpk_0f3a9c1e5b7d42a8b6c0d1e2f3a4b5c6.7d8e9f0a1b2c43d5e6f7a8b9c0d1e2f3."
    "Zq8xWm2Lp5Rt7Yv9Kb3Nc6Hd1Jf4Gs0A"
)

_COMMON = frozenset({"prompt", "seed", "width", "height", "num_inference_steps", "guidance_scale"})
#: chute → fields its /generate cord accepts
CHUTES: dict[str, frozenset[str]] = {
    "z-image-turbo": _COMMON | {"shift"},
    "hidream": frozenset({"prompt", "seed", "resolution", "guidance_scale", "num_inference_steps"}),
    "chroma": _COMMON | {"negative_prompt", "cfg"},
}
SHARED_HOST = "image"
#: models the shared image host serves
SHARED_MODELS = frozenset({"qwen-image"})
SHARED_FIELDS = _COMMON | {"model", "negative_prompt", "true_cfg_scale"}

INVALID_KEY_DETAIL = "Invalid token or user not found"
MISSING_KEY_DETAIL = "Missing or invalid authorization header(s)"
REFUSAL_DETAIL = "Prompt rejected by the safety filter, please modify your prompt"


@lru_cache(maxsize=2)
def image_bytes() -> bytes:
    """A real 56x56 patterned JPEG."""
    pixels = bytes(
        (x * 9 + y * 5 + c * 67) % 256 for y in range(56) for x in range(56) for c in range(3)
    )
    buffer = io.BytesIO()
    Image.frombytes("RGB", (56, 56), pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


class _Invalid(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class FakeChutes(FakeVendor):
    """Chutes image chutes. Give the provider `base_url=<fake root>/{model}`."""

    def __init__(
        self, api_key: str = DEFAULT_API_KEY, *, refusal_trigger: str = "forbidden-content"
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.refusal_trigger = refusal_trigger
        self.add_route("/{chute}/generate", self._generate, ["POST"])

    def error_body(self, status: int) -> object:
        if status == 401:
            return {"detail": INVALID_KEY_DETAIL}
        if status == 402:
            return {"detail": {"message": "Quota exceeded and account balance is $0.0"}}
        if status == 429:
            return {"detail": "Too many requests"}
        if status == 503:
            return {"detail": "No instances available (yet) for chute_id='3f1c9a2e'"}
        if status >= 500:
            return {"detail": "exhausted all available targets to no avail"}
        return {"detail": f"Fake Chutes error {status}"}

    def capacity_next(self, times: int = 1) -> None:
        """The next `times` requests find no free GPU for a free chute."""
        self.fail_next(429, FREE_CAPACITY_MESSAGE, times=times)

    async def _generate(self, request: Request, rec: Recorded) -> Response:
        try:
            self._authorise(rec)
            prompt = self._validate(request.path_params["chute"], rec)
        except _Invalid as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status)
        if self.refusal_trigger.lower() in prompt.lower():
            return JSONResponse({"detail": REFUSAL_DETAIL}, status_code=400)
        return Response(image_bytes(), media_type="image/jpeg")

    def _authorise(self, rec: Recorded) -> None:
        header = rec.headers.get("authorization", "")
        key = header[7:].strip() if header.startswith("Bearer ") else rec.headers.get("x-api-key")
        if not key:
            raise _Invalid(401, MISSING_KEY_DETAIL)
        if key != self.api_key:
            raise _Invalid(401, INVALID_KEY_DETAIL)

    def _validate(self, chute: str, rec: Recorded) -> str:
        if chute == SHARED_HOST:
            allowed = SHARED_FIELDS
        elif chute in CHUTES:
            allowed = CHUTES[chute]
        else:
            raise _Invalid(404, "No matching chute found!")
        if not isinstance(rec.json, dict):
            raise _Invalid(400, "Request body must be a JSON object")
        params: dict[str, Any] = rec.json
        for name in params:
            if name not in allowed:
                raise _Invalid(400, f"Unexpected input field: {name}")
        if chute == SHARED_HOST and params.get("model") not in SHARED_MODELS:
            raise _Invalid(400, f"Invalid model: {params.get('model')!r}")
        prompt = params.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _Invalid(400, "prompt: Field required")
        return prompt


_CONTRACT_JOB = Job(modality="image", model="Tongyi-MAI/Z-Image-Turbo:free", prompt="a red kite")

CONTRACT_CASES = [
    ContractCase(
        id="chutes",
        provider=ChutesProvider,
        make_fake=FakeChutes,
        credential=DEFAULT_API_KEY,
        base_path="/{model}",
        job=_CONTRACT_JOB,
        target=Target("z-image-turbo"),
        refused_job=replace(_CONTRACT_JOB, prompt="a forbidden-content scene"),
    ),
]
