"""A fake Z.ai image API: `POST /api/paas/v4/images/generations`, in Z.ai's wire format.

- auth: `Authorization: Bearer <api_key>`; none → 401 code 1001, wrong → 401
  `{"error": {"code": "401", "message": "token expired or incorrect"}}`;
- validation like Z.ai's, with its business codes: unknown model → 400 code 1211; no
  prompt → 400 code 1213; a quality other than hd/standard, a size that is not WxH with
  sides 512..2048 in steps of 16, or a `user_id` outside 6..128 characters → 400 code 1214;
- a prompt containing `forbidden-content` → 400 code 1301 (Z.ai's content filter);
  `broke = True` → 429 code 1113 (our balance is exhausted);
- success: `{created, data: [{url}], content_filter: [{role, level}]}` with the image
  served by the fake at `/files/<id>.png` (unscripted).
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from image_router.providers.contract import Job, Target
from image_router.providers.zai import ZaiProvider
from tests.fakes.contract import ContractCase
from tests.fakes.openai import image_bytes
from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_API_KEY = "zai-fake-0123456789abcdef.fedcba"
MODELS = frozenset({"glm-image", "cogview-4-250304"})
QUALITIES = frozenset({"hd", "standard"})
CONTENT_FILTER_MESSAGE = (
    "System detected potentially unsafe or sensitive content in input or generation. Please "
    "avoid using prompts that may generate sensitive content. Thank you for your cooperation."
)
BALANCE_MESSAGE = "Insufficient balance or no resource package. Please recharge."
CONCURRENCY_MESSAGE = (
    "High concurrency usage of this API, please reduce concurrency or contact customer "
    "service to increase limits"
)
WRONG_KEY_MESSAGE = "token expired or incorrect"

_SIZE = re.compile(r"^(\d+)x(\d+)$")


def zai_error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class FakeZai(FakeVendor):
    """Z.ai. Give the provider `base_url=<fake root>/api/paas/v4`."""

    def __init__(self, api_key: str = DEFAULT_API_KEY) -> None:
        super().__init__()
        self.api_key = api_key
        self.broke = False
        self.files: dict[str, bytes] = {}
        self.add_route("/api/paas/v4/images/generations", self._generate, ["POST"])
        self.add_route("/files/{name}", self._file, ["GET"], scripted=False)

    def error_body(self, status: int) -> object:
        if status == 401:
            return zai_error("401", WRONG_KEY_MESSAGE)
        if status == 429:
            return zai_error("1302", CONCURRENCY_MESSAGE)
        if status == 503:
            return zai_error("1234", "Network error, error id: fake-503, please contact support")
        if status >= 500:
            return zai_error("500", "Internal Error")
        return zai_error("1210", "Incorrect API call parameters, please check the documentation")

    async def _generate(self, request: Request, rec: Recorded) -> Response:
        header = rec.headers.get("authorization", "")
        if not header.startswith("Bearer ") or not header[7:].strip():
            return JSONResponse(
                zai_error(
                    "1001",
                    "Authentication parameter not received in Header, unable to authenticate",
                ),
                401,
            )
        if header[7:].strip() != self.api_key:
            return JSONResponse(zai_error("401", WRONG_KEY_MESSAGE), 401)
        if self.broke:
            return JSONResponse(zai_error("1113", BALANCE_MESSAGE), 429)
        params = rec.json if isinstance(rec.json, dict) else {}
        problem = _problem(params)
        if problem is not None:
            return JSONResponse(problem, 400)
        if "forbidden-content" in str(params["prompt"]):
            return JSONResponse(zai_error("1301", CONTENT_FILTER_MESSAGE), 400)
        file_id = uuid.uuid4().hex
        self.files[file_id] = image_bytes("png")
        root = f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"
        return JSONResponse(
            {
                "created": int(time.time()),
                "data": [{"url": f"{root}/files/{file_id}.png"}],
                "content_filter": [{"role": "assistant", "level": 3}],
            }
        )

    async def _file(self, request: Request, rec: Recorded) -> Response:
        name = request.path_params["name"].removesuffix(".png")
        if name not in self.files:
            return JSONResponse(zai_error("1222", "File not found"), 404)
        return Response(self.files[name], media_type="image/png")


def _problem(params: dict[str, Any]) -> dict[str, Any] | None:
    model = params.get("model")
    if model not in MODELS:
        return zai_error("1211", "Unknown Model, please check the model code.")
    if not params.get("prompt"):
        return zai_error("1213", "The prompt parameter was not received normally.")
    quality = params.get("quality", "hd")
    if quality not in QUALITIES:
        return zai_error("1214", "Invalid quality parameter. Please check the documentation.")
    match = _SIZE.match(str(params.get("size", "1280x1280")))
    if match is None or not all(
        512 <= int(side) <= 2048 and int(side) % 16 == 0 for side in match.groups()
    ):
        return zai_error("1214", "Invalid size parameter. Please check the documentation.")
    user_id = params.get("user_id")
    if user_id is not None and not (isinstance(user_id, str) and 6 <= len(user_id) <= 128):
        return zai_error("1214", "Invalid user_id parameter. Please check the documentation.")
    return None


_CONTRACT_JOB = Job(modality="image", model="zai/glm-image", prompt="a paper lantern")

CONTRACT_CASES = [
    ContractCase(
        id="zai",
        provider=ZaiProvider,
        make_fake=FakeZai,
        credential=DEFAULT_API_KEY,
        base_path="/api/paas/v4",
        job=_CONTRACT_JOB,
        target=Target("glm-image", {"quality": "hd"}),
        refused_job=replace(_CONTRACT_JOB, prompt="a forbidden-content scene"),
    ),
]
