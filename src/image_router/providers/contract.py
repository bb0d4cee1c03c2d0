"""The provider contract: what a vendor adapter receives, returns and may lean on.

A provider is an authenticated client for one upstream vendor. It receives a validated
`Job` and a `Target` (the upstream model name plus route options already resolved from the
catalog), and returns a `Result` with the produced artifacts. It raises only
`UpstreamError` subclasses (`providers.errors`). `Provider.post_json` / `Provider.send`
make one authenticated vendor call with the error translation done; polling lives in
`providers.polling`, stopping abandoned vendor jobs in `providers.inflight`.

Nothing here knows about HTTP serving, the database, settings or billing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import httpx
import pybase64

from image_router.kit.sizes import parse_size
from image_router.providers.direct import DirectLane
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamRejectedError,
    response_json,
    translate_errors,
)
from image_router.providers.upstream_text import error_body, first_key, scrub

Modality = Literal["image", "video"]

# An answer larger than this is parsed (JSON, then the adapter's base64 decoding) in a
# worker thread. Below it the hop costs more than it saves: an answer of a few kB parses in
# microseconds, while every hop makes the event loop wait for the GIL behind the worker.
PARSE_IN_THREAD_ABOVE = 256 * 1024

T = TypeVar("T")

#: How an adapter reads its vendor's error answer: (HTTP status, body without our key)
#: → the `UpstreamError` to raise (usually the adapter's `error_from_response`).
ErrorReader = Callable[[int, Any], UpstreamError]


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class InputFile:
    """An uploaded image (or mask): the bytes and what the client said they were."""

    data: bytes
    content_type: str
    filename: str

    def data_uri(self) -> str:
        return f"data:{self.content_type};base64,{self.b64()}"

    def b64(self) -> str:
        return pybase64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True)
class Job:
    """One validated generation request, as every provider sees it.

    `size` is "auto" or "WIDTHxHEIGHT"; `quality` one of auto/low/medium/high;
    `seconds` is resolved against the model's list (video only); `user_ref` is an opaque,
    non-personal id a vendor may receive as its end-user field; `job_id` is the usage row id
    (vendors that take a task id get it, e.g. Runware's taskUUID).
    """

    modality: Modality
    model: str
    prompt: str
    quality: str = "auto"
    size: str = "auto"
    output_format: str | None = None
    seconds: float | None = None
    images: tuple[InputFile, ...] = ()
    mask: InputFile | None = None
    user_ref: str = ""
    job_id: str = ""
    n: int = 1  # images to make in this one call (the model's `max_n` bounds it)
    # Durable jobs (issue #14): a vendor job that outlives the process that submitted it.
    #: Set when resuming: the vendor already accepted this job and this is what
    #: `on_submitted` was given then. A resumable adapter waits on it and submits nothing.
    vendor_ref: Mapping[str, Any] | None = field(default=None, compare=False)
    #: Called once by a resumable adapter right after the vendor accepted the job, before
    #: waiting on it, with a JSON-serialisable reference (whatever that adapter needs to
    #: wait on and cancel the job later, in another process). The gateway persists it.
    on_submitted: Callable[[Mapping[str, Any]], Awaitable[None]] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def dimensions(self) -> tuple[int, int] | None:
        """(width, height) of a concrete size; None for "auto"."""
        return parse_size(self.size)


@dataclass(frozen=True)
class Target:
    """Where a job goes: the upstream model name and the route's resolved options.

    `options` carries the catalog route's provider-specific settings (how the vendor takes
    input images, quality → steps mappings already applied, fixed extra parameters...).
    """

    upstream: str
    options: Mapping[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Artifact:
    """One produced image or video: either its bytes or a URL to fetch them from."""

    data: bytes | None = None
    url: str | None = None
    content_type: str | None = None
    revised_prompt: str | None = None


@dataclass(frozen=True)
class Result:
    """What a provider produced.

    `usage` is the vendor's token accounting (OpenAI `usage`), `reported_cost` a cost in USD
    the vendor reported for this job, `predict_seconds` billed compute time; price rules read
    these. `extra` holds vendor fields passed through to the client (e.g. OpenAI `usage`).
    `raw` is a redacted copy of the vendor's answer for the usage log: never a secret,
    never base64 payloads.
    """

    artifacts: tuple[Artifact, ...]
    created: int | None = None
    usage: Mapping[str, Any] | None = None
    reported_cost: Decimal | None = None
    predict_seconds: Decimal | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] | None = None


def _as_is(body: Any) -> Any:
    return body


def refuse_mask(job: Job, provider: str) -> None:
    """Refuse a mask (the reference's message, §2.10) on a route that cannot edit with one."""
    if job.mask is not None:
        raise UpstreamRejectedError(
            "Mask editing is not supported for this model",
            provider=provider,
            code="mask_not_supported",
        )


def refuse_image_inputs(
    job: Job, provider: str, *, code: str = "image_input_not_supported"
) -> None:
    """Refuse input images or a mask (§2.10's message) on a text-only route."""
    if job.images or job.mask is not None:
        raise UpstreamRejectedError(
            "This model does not support image inputs", provider=provider, code=code
        )


# ---------------------------------------------------------------------------- provider


def normalise_base_url(url: str, default: str, api_prefix: str) -> str:
    """Accept a vendor's base URL with or without its API path prefix.

    Where the default base URL ends with the prefix (Replicate's `/v1`), the adapter
    expects it there, so a bare host gets it appended; otherwise the adapter adds the
    prefix itself (OpenRouter's `/api/v1`), so a URL that repeats it loses it.
    """
    url = url.strip().rstrip("/")
    prefix = api_prefix.rstrip("/")
    if not prefix:
        return url
    has_prefix = url.lower().endswith(prefix.lower())
    if default.rstrip("/").endswith(prefix):
        return url if has_prefix else url + prefix
    return url[: -len(prefix)].rstrip("/") if has_prefix else url


class Provider:
    """Base class of every vendor adapter. Holds no per-request state."""

    id: ClassVar[str]
    default_base_url: ClassVar[str] = ""
    modalities: ClassVar[frozenset[Modality]] = frozenset({"image"})
    #: Values of the route option `image_input` this provider understands.
    image_inputs: ClassVar[frozenset[str]] = frozenset()
    #: Whether the vendor needs a credential at all (the offline test provider does not).
    needs_credential: ClassVar[bool] = True
    #: Whether `generate` honours `Job.vendor_ref` / `Job.on_submitted` (a vendor job that
    #: can be waited on again after a restart). False: an interrupted call is lost.
    resumable: ClassVar[bool] = False
    #: The path the vendor's API lives under (e.g. "/v1"). A configured base URL works
    #: with or without it: see `normalise_base_url`.
    api_prefix: ClassVar[str] = ""
    # The vendor's settings, as environment variables (config reads them; the README's
    # vendor table is generated from them): its key ("" for none); its base URL, earlier
    # names after the current one; other options, by the name `extra` holds them under;
    # notes on any of them for the README.
    key_env: ClassVar[str] = ""
    base_url_env: ClassVar[tuple[str, ...]] = ()
    extra_env: ClassVar[Mapping[str, str]] = {}
    env_notes: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        credential: str | None = None,
        base_url: str | None = None,
        poll_interval: float = 2.0,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.http = http
        #: JSON calls skip httpx's layers when its transport is aiohttp's (`direct`).
        self._direct = DirectLane.of(http)
        self.credential = credential
        self.base_url = normalise_base_url(
            base_url or self.default_base_url, self.default_base_url, self.api_prefix
        )
        self.poll_interval = poll_interval
        #: Vendor-specific settings beyond key and host (a second host, a project id...).
        self.extra: Mapping[str, str] = dict(extra or {})

    def public_base_url(self) -> str:
        """The base URL without any user:password part or query, fit for a log line."""
        parts = urlsplit(self.base_url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))

    def require_credential(self, name: str, *, first: bool = False) -> str:
        """Our credential (`name`, e.g. "Runware API key"); without it we are at fault.

        `first`: the setting is a comma-separated list of keys and the first one is used
        (the reference's choice for paid models)."""
        key = first_key(self.credential) if first else self.credential
        if not key:
            raise UpstreamMisconfiguredError(f"no {name} is configured", provider=self.id)
        return key

    async def generate(self, job: Job, target: Target) -> Result:
        """Run one job on `target.upstream`. Raises only `UpstreamError` subclasses."""
        raise NotImplementedError

    async def cancel(self, job: Job, target: Target) -> bool:
        """Best effort: ask the vendor to stop a job we abandoned; True when a running job
        was asked to stop. Default: the vendor has no way to stop one."""
        return False

    @property
    def stops_jobs(self) -> bool:
        """Whether `cancel` can stop a vendor job (the adapter has one of its own)."""
        return type(self).cancel is not Provider.cancel

    # ------------------------------------------------------------------ vendor calls

    async def send(
        self,
        method: str,
        url: str,
        *,
        key: str,
        errors: ErrorReader,
        auth: str | None = "Bearer",
        headers: Mapping[str, str] | None = None,
        json: Any = None,
        data: Mapping[str, Any] | None = None,
        files: Any = None,
    ) -> httpx.Response:
        """One authenticated call: `Authorization: <auth> <key>` (with `auth=None` the key
        travels in `headers`). A transport failure is translated (`translate_errors`); an
        error status raises `errors(status, body)`, the body stripped of our key."""
        sent = {"Authorization": f"{auth} {key}"} if auth else {}
        sent.update(headers or {})
        async with translate_errors(self.id):
            if self._direct is not None and data is None and files is None:
                response = await self._direct.request(method, url, headers=sent, json=json)
            else:
                response = await self.http.request(
                    method, url, headers=sent, json=json, data=data, files=files
                )
            if response.is_error:
                raise errors(response.status_code, error_body(response, key))
        return response

    async def post_json(
        self,
        url: str,
        body: Any = None,
        *,
        key: str,
        errors: ErrorReader,
        read: Callable[[Any], T] = _as_is,
        auth: str | None = "Bearer",
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, Any] | None = None,
        files: Any = None,
    ) -> T:
        """`send` a POST (`body` as JSON, or a multipart `data` and `files`) and return
        `read(answer)`, `read` being the adapter's pure `from_response`: a body that is not
        JSON, or one `read` trips over, is an `UpstreamProtocolError` (its body without our
        key)."""
        response = await self.send(
            "POST",
            url,
            key=key,
            errors=errors,
            auth=auth,
            headers=headers,
            json=body,
            data=data,
            files=files,
        )
        async with translate_errors(self.id):
            try:
                if len(response.content) > PARSE_IN_THREAD_ABOVE:
                    # Megabytes of base64: parsing and decoding them takes milliseconds,
                    # which would stall every other request on this event loop.
                    return await asyncio.to_thread(_read_json, self.id, response, read)
                return _read_json(self.id, response, read)
            except UpstreamError as exc:
                # `read` may quote the answer; a vendor echoing our key must not reach a log.
                exc.body = scrub(exc.body, key)
                raise


def _read_json(provider: str, response: httpx.Response, read: Callable[[Any], T]) -> T:
    return read(response_json(provider, response))
