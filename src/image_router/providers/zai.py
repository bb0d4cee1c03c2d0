"""Z.ai GLM-Image: `POST /paas/v4/images/generations`, synchronous (spec §9.18).

Body `{model, prompt, size, quality, user_id}`; the answer is OpenAI-like
`{created, data: [{url}], content_filter}`. Errors carry Z.ai's business code:
`{"error": {"code": "1301", "message": …}}`; the code, not the HTTP status, says whose
fault it is (content filter, our balance, our key, a concurrency limit).

`to_request`, `from_response` and `error_from_response` are pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from image_router.providers.contract import (
    Artifact,
    Job,
    Provider,
    Result,
    Target,
    refuse_image_inputs,
)
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
    error_for_status,
    redact,
)
from image_router.providers.upstream_text import expect_object

PROVIDER_ID = "zai"
#: What the reference sends when the size is "auto" (GLM-Image's own default).
DEFAULT_SIZE = "1280x1280"
#: Z.ai refuses a `user_id` outside this length; it is optional, so it is left out then.
USER_ID_LENGTH = range(6, 129)
#: Fields of the answer handed through to the client (spec §2.8: the whole zAI body).
PASS_THROUGH = ("content_filter", "id", "request_id")

# Business codes (docs.z.ai "Errors"), grouped by what the gateway should do.
_REJECTED = frozenset({"1210", "1213", "1214", "1215", "1261", "1300", "1301"})
_OUR_KEY = frozenset({"401", "1000", "1001", "1002", "1003", "1004", "1220", "1221", "1222"})
_OUR_MODEL = frozenset({"1211", "1212"})
_OUR_ACCOUNT = frozenset({"1110", "1111", "1112", "1113", "1120", "1121", "1304", "1308", "1310"})
_BUSY = frozenset({"1302", "1303", "1305", "1312"})
_THEIR_FAULT = frozenset({"500", "1230", "1234"})


def to_request(job: Job, target: Target) -> dict[str, Any]:
    """The JSON body of one generation (the reference's `generateZAI`)."""
    refuse_image_inputs(job, PROVIDER_ID, code="image_not_supported")
    body: dict[str, Any] = {
        "model": target.upstream,
        "prompt": job.prompt,
        "size": DEFAULT_SIZE if job.size == "auto" else job.size,
    }
    # The catalog maps low → standard and the rest → hd; None means "do not send".
    quality = target.options.get("quality")
    if quality is not None:
        body["quality"] = quality
    if len(job.user_ref) in USER_ID_LENGTH:
        body["user_id"] = job.user_ref
    return body


def from_response(body: Any) -> Result:
    body = expect_object(body, vendor="Z.ai", provider=PROVIDER_ID)
    data = body.get("data")
    items = data if isinstance(data, list) else []
    urls = [i["url"] for i in items if isinstance(i, Mapping) and isinstance(i.get("url"), str)]
    if not urls or not all(urls):
        raise UpstreamProtocolError(
            "Z.ai answered without any image", provider=PROVIDER_ID, body=body
        )
    created = body.get("created")
    return Result(
        artifacts=tuple(Artifact(url=url) for url in urls),
        created=created if isinstance(created, int) else None,
        extra={key: body[key] for key in PASS_THROUGH if body.get(key) is not None},
        raw=redact(body),
    )


def error_from_response(status: int, body: Any) -> UpstreamError:
    """Classify `{"error": {"code", "message"}}` by its business code, else by status."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        text = body if isinstance(body, str) and body else f"Z.ai answered HTTP {status}"
        return error_for_status(PROVIDER_ID, status, text, body)
    message = str(error.get("message") or f"Z.ai answered HTTP {status}")
    code = str(error.get("code")) if error.get("code") is not None else None
    cls: type[UpstreamError] | None = None
    if code in _REJECTED:
        cls = UpstreamRejectedError
    elif code in _OUR_KEY or code in _OUR_MODEL:
        cls = UpstreamMisconfiguredError
    elif code in _OUR_ACCOUNT or code in _BUSY:
        cls = UpstreamRateLimitedError
    elif code in _THEIR_FAULT:
        cls = UpstreamUnavailableError
    if cls is None:
        return error_for_status(PROVIDER_ID, status, message, body, code)
    return cls(message, provider=PROVIDER_ID, status=status, body=body, code=code)


class ZaiProvider(Provider):
    id = PROVIDER_ID
    key_env = "ZAI_API_KEY"
    base_url_env = ("ZAI_BASE_URL",)
    default_base_url = "https://api.z.ai/api/paas/v4"
    api_prefix = "/api/paas/v4"
    modalities = frozenset({"image"})
    image_inputs = frozenset()

    async def generate(self, job: Job, target: Target) -> Result:
        key = self.require_credential("Z.ai API key")
        return await self.post_json(
            f"{self.base_url}/images/generations",
            to_request(job, target),
            key=key,
            errors=error_from_response,
            read=from_response,
        )
