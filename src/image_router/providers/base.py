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
import errno
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

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
    n: int = 1  # images to make in this one call (the model's `max_n` bounds it)

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


#: Words of a 429 that means our vendor account ran out (OpenAI's `insufficient_quota`).
_OUT_OF_FUNDS_PHRASES = ("quota", "credit", "balance", "billing")


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
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.body = redact(body)
        self.code = code
        #: The vendor's `Retry-After`, in seconds, when it sent one.
        self.retry_after_s = retry_after_s
        #: Set when we gave up on a running vendor job because of this error and asked
        #: the vendor to stop it (see `InFlight.running`).
        self.vendor_job_cancelled = False

    @property
    def busy(self) -> bool:
        """The vendor said "busy, try again later": a 429 (rate limit or no free capacity),
        or a 503 that says when to come back. Our vendor account being out of money or
        quota (a 402, or a 429 saying so) is not: waiting does not fix it."""
        if self.status == 503:
            return self.retry_after_s is not None
        if self.status != 429:
            return False
        said = f"{self.code or ''} {self.message}".lower()
        return not any(phrase in said for phrase in _OUT_OF_FUNDS_PHRASES)

    def record(self) -> dict[str, Any]:
        """A JSON-able description for the usage log."""
        record = {
            "provider": self.provider,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "body": self.body,
        }
        if self.retry_after_s is not None:
            record["retry_after_s"] = self.retry_after_s
        if self.vendor_job_cancelled:
            record["vendor_job_cancelled"] = True
        return record


class UpstreamUnavailableError(UpstreamError):
    """5xx, connection failure, overload."""

    kind = "unavailable"


class UpstreamTimeoutError(UpstreamUnavailableError):
    kind = "timeout"


class UpstreamUnreachableError(UpstreamUnavailableError):
    """No connection at all (refused, unknown host): the base URL or the network is wrong,
    which is the operator's to fix, not a slow vendor."""

    kind = "unreachable"


class UpstreamRateLimitedError(UpstreamError):
    """429 or quota exhausted on our account."""

    kind = "rate_limited"


class UpstreamMisconfiguredError(UpstreamError):
    """The vendor refused *our* credentials or configuration: 401/403 (the key), 404/405
    on our own call (a wrong base URL or a model name our catalog got wrong)."""

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
    provider: str,
    status: int,
    message: str,
    body: Any = None,
    code: str | None = None,
    *,
    retry_after_s: float | None = None,
) -> UpstreamError:
    """Map a vendor HTTP error status to the upstream error tree."""
    cls: type[UpstreamError]
    if status == 429:
        cls = UpstreamRateLimitedError
    elif status in (401, 403, 404, 405):
        # 404/405 answer the URL we built, not the user's input: a wrong base URL or path.
        # Adapters whose vendor uses 404 otherwise (a polled job gone) classify it first.
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
    return cls(
        message, provider=provider, status=status, body=body, code=code, retry_after_s=retry_after_s
    )


def retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """The seconds a vendor's `Retry-After` header asks us to wait (RFC 9110: a number of
    seconds or an HTTP date); None when absent or unreadable."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


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
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        # The aiohttp transport reports a refused connection as ConnectTimeout: only a
        # cause that is itself a timeout makes it one.
        reason = _connect_failure(exc)
        if reason is None:
            raise UpstreamTimeoutError(
                f"{provider} did not accept a connection in time", provider=provider
            ) from exc
        raise UpstreamUnreachableError(
            f"could not connect to {provider} ({reason})", provider=provider
        ) from exc
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


def _connect_failure(exc: BaseException) -> str | None:
    """Why a connection could not be made, or None when it merely took too long."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    oserrors = [e for e in chain if isinstance(e, OSError) and not isinstance(e, TimeoutError)]
    if any(e.errno == errno.ECONNREFUSED for e in oserrors):
        return "connection refused"
    if any(isinstance(e, socket.gaierror) for e in oserrors):
        return "host not found"
    if oserrors or isinstance(exc, httpx.ConnectError):
        return "connection failed"
    return None


def log_operator_fault(provider: Provider, error: UpstreamError) -> None:
    """An ERROR line for a failure the operator must fix (our key, base URL or network),
    naming the vendor and where we called it; never the key."""
    # The vendor's own words stay out: a refusal of our key may quote part of it.
    if isinstance(error, UpstreamUnreachableError):
        what = error.message
    elif isinstance(error, UpstreamMisconfiguredError):
        status = f"HTTP {error.status}" if error.status is not None else "no key"
        what = f"{provider.id} refused our call ({status})"
    else:
        return
    log.error(
        "%s at %s: check the vendor's key and base URL settings",
        what,
        provider.public_base_url(),
    )


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
_cancels: set[asyncio.Task[bool]] = set()


async def cancel_quietly(request: Awaitable[object], *, vendor: str) -> bool:
    """Best effort: await `request`, a vendor call that stops a job nobody will collect.

    Shielded, so a second cancellation of the caller (usually already unwinding one) does
    not cut the call short, and bounded by `CANCEL_TIMEOUT_S`. A failure is logged, never
    raised: the job is abandoned either way, and the log keeps it for follow-up. Returns
    whether the vendor accepted the cancel (a `request` answering False had nothing to stop).
    """

    async def attempt() -> bool:
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                outcome = await request
        except TimeoutError:
            log.warning("%s did not confirm a cancel within %ss", vendor, CANCEL_TIMEOUT_S)
        except (UpstreamError, httpx.HTTPError, ValueError) as exc:
            log.warning("%s refused to cancel an abandoned job: %s", vendor, exc)
        else:
            return outcome is not False
        return False

    task = asyncio.ensure_future(attempt())
    _cancels.add(task)
    task.add_done_callback(_cancels.discard)
    return await asyncio.shield(task)


@dataclass
class Watch:
    """What `InFlight.running` learns about one vendor job: did we ask it to stop?"""

    abandoned: bool = False


class InFlight:
    """The vendor jobs a provider is waiting on, by the URL that stops each one.

    `running` brackets the wait. While it lasts, `cancel(job)` calls `stop(url)` (the
    gateway abandoning the job: deadline, client gone). When the wait itself ends the job
    for us, the vendor job is stopped here (best effort, `cancel_quietly`), since it would
    otherwise run on, billing our vendor account, for nobody: a request cancelled mid-wait,
    or polling that failed for good (the error then says `vendor_job_cancelled`).
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

    def abandoned(self, job: Job) -> bool:
        """Whether `cancel` was called for the job now running for `job`."""
        return bool(job.job_id) and job.job_id in self._abandoned

    @asynccontextmanager
    async def running(
        self, job: Job, url: str, *, gone_when_stopped: bool = False
    ) -> AsyncIterator[Watch]:
        """`gone_when_stopped`: a stopped job vanishes at the vendor, so an error while
        waiting on it after `cancel` means "abandoned", not a vendor failure.

        Only the wait for the job belongs inside: an error raised here is taken to leave
        the job running, so the vendor's own report that the job failed is read after.
        """
        watch = Watch()
        if job.job_id:
            self._urls[job.job_id] = url
        try:
            yield watch
        except asyncio.CancelledError:
            if not self.abandoned(job):  # `cancel` already stopped it otherwise
                await self._give_up(job, url, "the request was cancelled")
            raise
        except UpstreamError as exc:
            if self.abandoned(job):
                if not gone_when_stopped:
                    raise
                watch.abandoned = True
            else:
                exc.vendor_job_cancelled = await self._give_up(job, url, exc.message)
                raise
        finally:
            if job.job_id:
                self._urls.pop(job.job_id, None)
                watch.abandoned = watch.abandoned or job.job_id in self._abandoned
                self._abandoned.discard(job.job_id)

    async def cancel(self, job: Job) -> bool:
        """Stop the vendor job running for `job`, if there is one; True when one was."""
        url = self._urls.get(job.job_id) if job.job_id else None
        if url is None:
            return False
        self._abandoned.add(job.job_id)
        await self._stop(url)
        log.info(
            "%s: cancelled the vendor job of %s at the gateway's request", self._vendor, job.job_id
        )
        return True

    async def _give_up(self, job: Job, url: str, reason: str) -> bool:
        stopped = await cancel_quietly(self._stop(url), vendor=self._vendor)
        log.warning(
            "%s: gave up on the vendor job of %s (%s); cancel %s",
            self._vendor,
            job.job_id or "-",
            reason,
            "sent" if stopped else "failed",
        )
        return stopped


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
    #: The path the vendor's API lives under (e.g. "/v1"). A configured base URL works
    #: with or without it: see `normalise_base_url`.
    api_prefix: ClassVar[str] = ""

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

    def require_credential(self, name: str) -> str:
        """Our credential (`name`, e.g. "Runware API key"); without it we are at fault."""
        if not self.credential:
            raise UpstreamMisconfiguredError(f"no {name} is configured", provider=self.id)
        return self.credential

    async def generate(self, job: Job, target: Target) -> Result:
        """Run one job on `target.upstream`. Raises only `UpstreamError` subclasses."""
        raise NotImplementedError

    async def cancel(self, job: Job, target: Target) -> bool:
        """Best effort: ask the vendor to stop a job we abandoned; True when a running job
        was asked to stop. Default: the vendor has no way to stop one."""
        return False
