"""Chutes image chutes: `POST <chute host>/generate` answering raw image bytes (spec §9.10).

Each chute has its own host. The base URL is a template in which "{model}" becomes the
chute name (the route's `upstream`); the default is `https://chutes-{model}.chutes.ai`, so
`z-image-turbo` is served by `https://chutes-z-image-turbo.chutes.ai/generate`.

Shared host rule: some chutes are not served by a host of their own but by Chutes' shared
image host, which takes the chute name as `model` in the body. For those, the whole host
label (or path segment) holding "{model}" is replaced by `image`: the default template
gives `https://image.chutes.ai`, `http://proxy:9000/{model}` gives
`http://proxy:9000/image`. `qwen-image` is such a chute (`SHARED_CHUTES`); a route can
say so for any chute with the option `shared_host = true` (or `false` to opt out). A base
URL without "{model}" serves every chute from that one host, with `model` in the body.

The body is `{prompt}` (plus `model` on a shared host), as the reference sends it: no
size, no output format (the gateway converts). A 200 answer is the image itself.

Errors are FastAPI's `{"detail": …}`. Chutes answers 429 both for our rate limit and when
no GPU is free ("Infrastructure is at maximum capacity, try again later", and for free
chutes a longer message the reference shortens to that); the latter is an outage of that
chute, not of our account, so it is `UpstreamUnavailableError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

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
    UpstreamUnavailableError,
    error_for_status,
    retry_after,
    translate_errors,
)
from image_router.providers.upstream_text import (
    ACCOUNT_LIMIT_PHRASES,
    RETRYABLE_PHRASES,
    mentions,
    scrub,
)
from image_router.storage.images import sniff_content_type

PROVIDER_ID = "chutes"
DEFAULT_BASE_URL = "https://chutes-{model}.chutes.ai"
PLACEHOLDER = "{model}"
#: What replaces the templated label for chutes served by the shared image host.
SHARED_HOST_LABEL = "image"
#: Chutes served by the shared image host unless a route's `shared_host` option says not.
SHARED_CHUTES = frozenset({"qwen-image"})

FREE_CAPACITY_MESSAGE = (
    "This free model is at maximum capacity. Please try again later, or switch to the "
    "paid model which is served by stable providers."
)
CAPACITY_MESSAGE = "Infrastructure is at maximum capacity, try again later"

# A chute name becomes a DNS label: anything else is a catalog mistake.
_CHUTE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_TEMPLATED_LABEL = re.compile(r"[^/.:]*\{model\}[^/.:]*")

# Chutes itself has no capacity for this chute right now (or failed as §7.2's "retry"
# strings say): another route may.
_TRANSIENT_PHRASES = (
    *RETRYABLE_PHRASES,
    "no instances available",
    "under maintenance",
    "exhausted all available targets",
    "no result returned from upstream",
)


@dataclass(frozen=True)
class ChutesRequest:
    url: str
    json: dict[str, Any]


def is_shared(target: Target) -> bool:
    """Whether the chute of `target` is served by the shared image host."""
    option = target.options.get("shared_host")
    if option is not None:
        return bool(option)
    return target.upstream in SHARED_CHUTES


def chute_url(template: str, chute: str, *, shared: bool) -> str:
    """The `/generate` URL of `chute` under the base URL `template` (see module doc)."""
    base = template.rstrip("/")
    if PLACEHOLDER not in base:
        return f"{base}/generate"
    if shared:
        return _TEMPLATED_LABEL.sub(SHARED_HOST_LABEL, base, count=1) + "/generate"
    return base.replace(PLACEHOLDER, chute) + "/generate"


def to_request(job: Job, target: Target, template: str) -> ChutesRequest:
    """Where and what to send for one job."""
    refuse_image_inputs(job, PROVIDER_ID)
    chute = target.upstream
    if not _CHUTE_NAME.fullmatch(chute):
        raise UpstreamMisconfiguredError(
            f"'{chute}' is not a Chutes chute name", provider=PROVIDER_ID
        )
    shared = is_shared(target) or PLACEHOLDER not in template
    body: dict[str, Any] = {"prompt": job.prompt}
    if shared:
        body["model"] = chute
    return ChutesRequest(chute_url(template, chute, shared=shared), body)


def from_response(data: bytes, content_type: str | None = None) -> Result:
    """The image a chute answered; a 200 that is not an image is a protocol error."""
    kind = sniff_content_type(data)
    if kind is None or not kind.startswith("image/"):
        raise UpstreamProtocolError(
            "Chutes answered with a body that is not an image",
            provider=PROVIDER_ID,
            status=200,
            body=data[:300].decode("utf-8", "replace"),
        )
    raw = {"content_type": content_type or kind, "bytes": len(data)}
    return Result(artifacts=(Artifact(data=data, content_type=kind),), raw=raw)


def error_message(text: str) -> str | None:
    """The `detail` of a Chutes error body, else the body text; None when empty."""
    if FREE_CAPACITY_MESSAGE in text:
        return CAPACITY_MESSAGE
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, Mapping):
        detail = body.get("detail")
        if isinstance(detail, Mapping):
            detail = detail.get("message") or detail.get("error")
        if isinstance(detail, str) and detail:
            return detail
    stripped = text.strip()
    return stripped[:500] or None


def error_from_response(
    status: int, text: str, *, retry_after_s: float | None = None
) -> UpstreamError:
    """Classify a Chutes error answer (status and body text) onto the upstream tree."""
    message = error_message(text)
    shown = message or f"Chutes answered HTTP {status}"
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = text[:500]
    args: dict[str, Any] = {
        "provider": PROVIDER_ID,
        "status": status,
        "body": body,
        "retry_after_s": retry_after_s,
    }
    if status in (401, 403):
        return UpstreamMisconfiguredError(shown, **args)
    if mentions(message or "", _TRANSIENT_PHRASES):
        return UpstreamUnavailableError(shown, **args)
    if status in (402, 429) or mentions(message or "", ACCOUNT_LIMIT_PHRASES):
        return UpstreamRateLimitedError(shown, **args)
    if status == 404:
        # "No matching chute found!": the catalog names a chute that does not exist.
        return UpstreamMisconfiguredError(shown, **args)
    return error_for_status(PROVIDER_ID, status, shown, body, retry_after_s=retry_after_s)


class ChutesProvider(Provider):
    id = PROVIDER_ID
    key_env = "CHUTES_API_TOKEN"
    base_url_env = ("CHUTES_BASE_URL",)
    env_notes: ClassVar[Mapping[str, str]] = {
        "CHUTES_BASE_URL": "`{model}` = chute name; shared-host chutes such as qwen-image "
        "use `image` in its place"
    }
    default_base_url = DEFAULT_BASE_URL
    modalities = frozenset({"image"})
    image_inputs = frozenset()

    async def generate(self, job: Job, target: Target) -> Result:
        self.require_credential("Chutes API token")
        request = to_request(job, target, self.base_url)
        headers = {"Authorization": f"Bearer {self.credential}"}
        async with translate_errors(self.id):
            response = await self.http.post(request.url, headers=headers, json=request.json)
            if response.is_error:
                text = scrub(response.text, self.credential)
                raise error_from_response(
                    response.status_code, text, retry_after_s=retry_after(response.headers)
                )
            return from_response(response.content, response.headers.get("content-type"))
