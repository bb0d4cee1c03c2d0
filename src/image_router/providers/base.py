"""The provider contract: what a vendor adapter receives, returns and raises.

A provider is an authenticated client for one upstream vendor. It receives a validated
`Job` and a `Target` (the upstream model name plus route options already resolved from the
catalog), and returns a `Result` with the produced artifacts. It raises only `UpstreamError`
subclasses; `translate_errors` is the one place where transport failures and vendor error
statuses become those.

Nothing here knows about HTTP serving, the database, settings or billing.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar, Literal

import httpx
import orjson

from image_router.kit.sizes import parse_size

Modality = Literal["image", "video"]

#: How long an abandoned job may spend asking its vendor to stop it.
CANCEL_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


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
        return base64.b64encode(self.data).decode("ascii")


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


# ---------------------------------------------------------------------------- errors


class UpstreamError(Exception):
    """A vendor call failed. `retry_elsewhere` says whether another route may succeed."""

    retry_elsewhere: ClassVar[bool] = True
    kind: ClassVar[str] = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        body: Any = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.body = redact(body)
        self.code = code

    def record(self) -> dict[str, Any]:
        """A JSON-able description for the usage log."""
        return {
            "provider": self.provider,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "body": self.body,
        }


class UpstreamUnavailableError(UpstreamError):
    """5xx, connection failure, overload."""

    kind = "unavailable"


class UpstreamTimeoutError(UpstreamUnavailableError):
    kind = "timeout"


class UpstreamRateLimitedError(UpstreamError):
    """429 or quota exhausted on our account."""

    kind = "rate_limited"


class UpstreamMisconfiguredError(UpstreamError):
    """The vendor refused *our* credentials or configuration (401/403)."""

    kind = "misconfigured"


class UpstreamProtocolError(UpstreamError):
    """The vendor answered something we cannot parse or did not expect."""

    kind = "protocol"


class UpstreamRejectedError(UpstreamError):
    """The vendor refused the user's input (content policy, invalid image...).

    Another route would most likely refuse it too, so it is not retried.
    """

    retry_elsewhere = False
    kind = "rejected"


class UpstreamCancelledError(UpstreamError):
    """We abandoned the job (client gone, deadline passed)."""

    retry_elsewhere = False
    kind = "cancelled"


def error_for_status(
    provider: str, status: int, message: str, body: Any = None, code: str | None = None
) -> UpstreamError:
    """Map a vendor HTTP error status to the upstream error tree."""
    cls: type[UpstreamError]
    if status == 429:
        cls = UpstreamRateLimitedError
    elif status in (401, 403):
        cls = UpstreamMisconfiguredError
    elif status == 402:
        cls = UpstreamRateLimitedError  # our vendor account is out of funds
    elif status in (408, 504):
        cls = UpstreamTimeoutError
    elif status >= 500:
        cls = UpstreamUnavailableError
    elif 400 <= status < 500:
        cls = UpstreamRejectedError
    else:
        cls = UpstreamProtocolError
    return cls(message, provider=provider, status=status, body=body, code=code)


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


@asynccontextmanager
async def translate_errors(provider: str) -> AsyncIterator[None]:
    """Turn transport failures and unexpected exceptions into `UpstreamError`s."""
    try:
        yield
    except UpstreamError:
        raise
    except asyncio.CancelledError:
        raise
    except httpx.TimeoutException as exc:
        raise UpstreamTimeoutError(f"{provider} did not answer in time", provider=provider) from exc
    except httpx.TransportError as exc:
        raise UpstreamUnavailableError(
            f"could not reach {provider}: {type(exc).__name__}", provider=provider
        ) from exc
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise UpstreamProtocolError(
            f"unexpected answer from {provider}: {exc}", provider=provider
        ) from exc


def response_json(provider: str, response: httpx.Response) -> Any:
    """Parse a vendor's JSON body or raise `UpstreamProtocolError`."""
    try:
        # orjson: image answers carry megabytes of base64, which the stdlib parses ~5x slower.
        return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise UpstreamProtocolError(
            f"{provider} answered with a body that is not JSON",
            provider=provider,
            status=response.status_code,
            body=response.text[:500],
        ) from exc


_REDACTED_KEYS = frozenset({"b64_json", "bytesBase64Encoded", "data", "image", "mask"})


def redact(value: Any, _depth: int = 0) -> Any:
    """Copy a vendor body for logging: base64 payloads and long strings are cut out."""
    if _depth > 8:
        return "[nested too deep]"
    if isinstance(value, Mapping):
        return {
            str(k): (
                "[removed - base64 data]"
                if k in _REDACTED_KEYS and isinstance(v, str) and len(v) > 256
                else redact(v, _depth + 1)
            )
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v, _depth + 1) for v in value[:50]]
    if isinstance(value, str) and len(value) > 2000:
        return value[:2000] + "…[truncated]"
    if isinstance(value, bytes):
        return f"[{len(value)} bytes]"
    return value


# ---------------------------------------------------------------------------- cancelling

#: Vendor cancels still running after their caller was cancelled (the loop keeps only weak
#: references to tasks).
_cancels: set[asyncio.Task[None]] = set()


async def cancel_quietly(request: Awaitable[object], *, vendor: str) -> None:
    """Best effort: await `request`, a vendor call that stops a job nobody will collect.

    Shielded, so a second cancellation of the caller (usually already unwinding one) does
    not cut the call short, and bounded by `CANCEL_TIMEOUT_S`. A failure is logged, never
    raised: the job is abandoned either way, and the log keeps it for follow-up.
    """

    async def attempt() -> None:
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                await request
        except TimeoutError:
            log.warning("%s did not confirm a cancel within %ss", vendor, CANCEL_TIMEOUT_S)
        except (UpstreamError, httpx.HTTPError, ValueError) as exc:
            log.warning("%s refused to cancel an abandoned job: %s", vendor, exc)

    task = asyncio.ensure_future(attempt())
    _cancels.add(task)
    task.add_done_callback(_cancels.discard)
    await asyncio.shield(task)


@dataclass
class Watch:
    """What `InFlight.running` learns about one vendor job: did we ask it to stop?"""

    abandoned: bool = False


class InFlight:
    """The vendor jobs a provider is waiting on, by the URL that stops each one.

    `running` brackets the wait: while it lasts, `cancel(job)` calls `stop(url)`; a request
    cancelled mid-wait stops the vendor job itself (best effort, `cancel_quietly`).
    Afterwards `Watch.abandoned` says whether `cancel` was called for it.
    """

    def __init__(self, stop: Callable[[str], Awaitable[object]], *, vendor: str) -> None:
        self._stop = stop
        self._vendor = vendor
        self._urls: dict[str, str] = {}
        self._abandoned: set[str] = set()

    @property
    def urls(self) -> dict[str, str]:
        """Job id → the stop URL of the vendor job running for it."""
        return dict(self._urls)

    @asynccontextmanager
    async def running(
        self, job: Job, url: str, *, gone_when_stopped: bool = False
    ) -> AsyncIterator[Watch]:
        """`gone_when_stopped`: a stopped job vanishes at the vendor, so an error while
        waiting on it after `cancel` means "abandoned", not a vendor failure."""
        watch = Watch()
        if job.job_id:
            self._urls[job.job_id] = url
        try:
            yield watch
        except asyncio.CancelledError:
            await cancel_quietly(self._stop(url), vendor=self._vendor)
            raise
        except UpstreamError:
            if not (gone_when_stopped and job.job_id in self._abandoned):
                raise
            watch.abandoned = True
        finally:
            if job.job_id:
                self._urls.pop(job.job_id, None)
                watch.abandoned = watch.abandoned or job.job_id in self._abandoned
                self._abandoned.discard(job.job_id)

    async def cancel(self, job: Job) -> None:
        """Stop the vendor job running for `job`, if there is one."""
        url = self._urls.get(job.job_id) if job.job_id else None
        if url is None:
            return
        self._abandoned.add(job.job_id)
        await self._stop(url)


# ---------------------------------------------------------------------------- provider


class Provider:
    """Base class of every vendor adapter. Holds no per-request state."""

    id: ClassVar[str]
    default_base_url: ClassVar[str] = ""
    modalities: ClassVar[frozenset[Modality]] = frozenset({"image"})
    #: Values of the route option `image_input` this provider understands.
    image_inputs: ClassVar[frozenset[str]] = frozenset()
    #: Whether the vendor needs a credential at all (the offline test provider does not).
    needs_credential: ClassVar[bool] = True

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
        self.credential = credential
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.poll_interval = poll_interval
        #: Vendor-specific settings beyond key and host (a second host, a project id...).
        self.extra: Mapping[str, str] = dict(extra or {})

    def require_credential(self, name: str) -> str:
        """Our credential (`name`, e.g. "Runware API key"); without it we are at fault."""
        if not self.credential:
            raise UpstreamMisconfiguredError(f"no {name} is configured", provider=self.id)
        return self.credential

    async def generate(self, job: Job, target: Target) -> Result:
        """Run one job on `target.upstream`. Raises only `UpstreamError` subclasses."""
        raise NotImplementedError

    async def cancel(self, job: Job, target: Target) -> None:
        """Best effort: ask the vendor to stop a job we abandoned. Default: nothing to do."""
