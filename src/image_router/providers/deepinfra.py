"""DeepInfra inference API: `POST /v1/inference/<model>` (spec §9.3).

A text-to-image job is JSON (`prompt`, `num_images`, `width`/`height`, and the step knob
the route names: `num_inference_steps` or `steps`). A job with an input image (route
token `single_blob`, the Bria editing models) is multipart: the file as `image`, with its
filename and type, plus `prompt` when there is one; DeepInfra's image endpoints take
neither size nor steps, as in the reference.

DeepInfra answers synchronously. Depending on the model family the images come as
`images` (data URIs, bare base64 or URLs), `image_urls` or `image_url`, and the job's cost
as `inference_status.cost`, which the `upstream_cost` price rule settles on.
`status: "request_moderated"` in a 200 answer is a content refusal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from image_router.providers.contract import (
    Artifact,
    InputFile,
    Job,
    Provider,
    Result,
    Target,
    refuse_mask,
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
from image_router.providers.upstream_text import (
    ACCOUNT_LIMIT_PHRASES,
    OUR_KEY_PHRASES,
    RETRYABLE_PHRASES,
    expect_object,
    mentions,
    usd_amount,
)
from image_router.storage.images import decode_base64, sniff_content_type

PROVIDER_ID = "deepinfra"

#: Route options that DeepInfra receives under their own name (None = do not send).
STEP_OPTIONS = ("num_inference_steps", "steps")

MODERATED_MESSAGE = "Request was moderated"

# §7.2: our DeepInfra account is out of money or requests; another route may work.
_ACCOUNT_LIMIT_PHRASES = (*ACCOUNT_LIMIT_PHRASES, "payment")
# §7.2: DeepInfra itself is struggling; the same job may succeed elsewhere.
_TRANSIENT_PHRASES = (*RETRYABLE_PHRASES, "overloaded", "internal error", "gateway time-out")


@dataclass(frozen=True)
class DeepInfraRequest:
    """One call: `path` below the base URL, and either a JSON body or a multipart form."""

    path: str
    json: dict[str, Any] | None = None
    fields: dict[str, str] = field(default_factory=dict)
    image: InputFile | None = None


def to_request(job: Job, target: Target) -> DeepInfraRequest:
    """Map a job onto DeepInfra's inference fields."""
    refuse_mask(job, PROVIDER_ID)
    path = f"/v1/inference/{target.upstream}"
    if job.images:
        if len(job.images) > 1:
            raise UpstreamRejectedError(
                "This model supports only one image input",
                provider=PROVIDER_ID,
                code="too_many_images",
            )
        fields = {"prompt": job.prompt} if job.prompt else {}
        return DeepInfraRequest(path, fields=fields, image=job.images[0])
    body: dict[str, Any] = {"prompt": job.prompt, "num_images": 1}
    dimensions = job.dimensions
    if dimensions is not None:
        body["width"], body["height"] = dimensions
    for name in STEP_OPTIONS:
        value = target.options.get(name)
        if value is not None:
            body[name] = value
    return DeepInfraRequest(path, json=body)


def from_response(body: Any) -> Result:
    """Map a 2xx body to a `Result`; a moderated request is the user's refusal."""
    body = expect_object(body, vendor="DeepInfra", provider=PROVIDER_ID)
    if body.get("status") == "request_moderated":
        raise UpstreamRejectedError(
            MODERATED_MESSAGE,
            provider=PROVIDER_ID,
            status=406,
            body=_loggable(body),
            code="request_moderated",
        )
    artifacts = _artifacts(body)
    if not artifacts:
        raise UpstreamProtocolError(
            "DeepInfra answered without any image", provider=PROVIDER_ID, body=_loggable(body)
        )
    return Result(artifacts=artifacts, reported_cost=reported_cost(body), raw=_loggable(body))


def _artifacts(body: Mapping[str, Any]) -> tuple[Artifact, ...]:
    images = body.get("images")
    if isinstance(images, list):
        return tuple(_artifact(item, body) for item in images if item is not None)
    urls = body.get("image_urls")
    if isinstance(urls, list):
        return tuple(_url_artifact(url, body) for url in urls)
    url = body.get("image_url")
    if url is not None:
        return (_url_artifact(url, body),)
    return ()


def _artifact(item: Any, body: Mapping[str, Any]) -> Artifact:
    if isinstance(item, str) and item.startswith(("http://", "https://")):
        return Artifact(url=item)
    if not isinstance(item, str) or not item:
        raise UpstreamProtocolError(
            "DeepInfra image entry is not a string", provider=PROVIDER_ID, body=_loggable(body)
        )
    try:
        data, declared = decode_base64(item)
    except ValueError as exc:
        raise UpstreamProtocolError(
            "DeepInfra sent an image that is not valid base64",
            provider=PROVIDER_ID,
            body=_loggable(body),
        ) from exc
    return Artifact(data=data, content_type=sniff_content_type(data) or declared)


def _url_artifact(url: Any, body: Mapping[str, Any]) -> Artifact:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise UpstreamProtocolError(
            "DeepInfra image URL is not an http(s) URL", provider=PROVIDER_ID, body=_loggable(body)
        )
    return Artifact(url=url)


def reported_cost(body: Mapping[str, Any]) -> Decimal | None:
    """`inference_status.cost` in USD; None when DeepInfra did not report a usable one."""
    status = body.get("inference_status")
    return usd_amount(status.get("cost") if isinstance(status, Mapping) else None)


def _loggable(body: Mapping[str, Any]) -> Any:
    """`redact(body)` with the inline images replaced: a data URI is no log line."""
    images = body.get("images")
    if not isinstance(images, list):
        return redact(body)
    placeholders = [
        item
        if isinstance(item, str) and item.startswith(("http://", "https://"))
        else "[removed - base64 data]"
        for item in images
    ]
    return redact({**body, "images": placeholders})


def error_message(body: Any) -> str | None:
    """The reference's reading of a DeepInfra error body (§9.3), or None if it has none.

    FastAPI validation errors (`detail: [{loc, msg, type}]`) become
    "body.width input should be …" joined with "; ".
    """
    if isinstance(body, str):
        return body.strip()[:500] or None
    if not isinstance(body, Mapping):
        return None
    detail = body.get("detail")
    if isinstance(detail, list):
        parts = [_validation_message(item) for item in detail if isinstance(item, Mapping)]
        joined = "; ".join(part for part in parts if part)
        if joined:
            return joined
    if isinstance(detail, str) and detail:
        return detail
    for holder in (detail, body, body.get("error")):
        if isinstance(holder, Mapping):
            for key in ("error", "message"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value
    return None


def _validation_message(item: Mapping[str, Any]) -> str:
    loc = item.get("loc")
    where = ".".join(str(part) for part in loc) if isinstance(loc, list) else str(loc or "")
    return f"{where} {str(item.get('msg') or '').lower()}".strip()


def error_from_response(status: int, body: Any) -> UpstreamError:
    """Classify a DeepInfra error answer onto the upstream error tree."""
    message = error_message(body)
    text = message or ""
    shown = message or f"DeepInfra answered HTTP {status}"
    args: dict[str, Any] = {"provider": PROVIDER_ID, "status": status, "body": body}
    if status in (401, 403) or mentions(text, OUR_KEY_PHRASES):
        return UpstreamMisconfiguredError(shown, **args)
    if status in (402, 429) or mentions(text, _ACCOUNT_LIMIT_PHRASES):
        return UpstreamRateLimitedError(shown, **args)
    if mentions(text, _TRANSIENT_PHRASES):
        return UpstreamUnavailableError(shown, **args)
    if status == 404:
        # The catalog's model name is unknown to DeepInfra: our configuration, not the user.
        return UpstreamMisconfiguredError(shown, **args)
    return error_for_status(PROVIDER_ID, status, shown, body)


class DeepInfraProvider(Provider):
    id = PROVIDER_ID
    key_env = "DEEPINFRA_API_KEY"
    base_url_env = ("DEEPINFRA_BASE_URL",)
    default_base_url = "https://api.deepinfra.com"
    api_prefix = "/v1"
    modalities = frozenset({"image"})
    image_inputs = frozenset({"single_blob"})

    async def generate(self, job: Job, target: Target) -> Result:
        key = self.require_credential("DeepInfra API key")
        request = to_request(job, target)
        image = request.image
        return await self.post_json(
            self.base_url + request.path,
            request.json,
            key=key,
            errors=error_from_response,
            read=from_response,
            # An image makes it a multipart form: the fields, and the file as `image`.
            data=request.fields if image else None,
            files={"image": (image.filename, image.data, image.content_type)} if image else None,
        )
