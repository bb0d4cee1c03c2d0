"""The upstream error tree: what a vendor adapter raises, and the one translation into it.

A provider raises only `UpstreamError` subclasses. `translate_errors` is the one place
where transport failures become those, `error_for_status` maps a vendor's HTTP error status
onto the tree (adapters classify their vendor's error bodies first), `response_json` turns
an unreadable body into a protocol error, and `retry_after` reads a vendor's `Retry-After`.

Nothing here knows about HTTP serving, the database, settings or billing.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx
import orjson

log = logging.getLogger(__name__)


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


def log_operator_fault(provider_id: str, base_url: str, error: UpstreamError) -> None:
    """An ERROR line for a failure the operator must fix (our key, base URL or network),
    naming the vendor and where we called it; never the key."""
    # The vendor's own words stay out: a refusal of our key may quote part of it.
    if isinstance(error, UpstreamUnreachableError):
        what = error.message
    elif isinstance(error, UpstreamMisconfiguredError):
        status = f"HTTP {error.status}" if error.status is not None else "no key"
        what = f"{provider_id} refused our call ({status})"
    else:
        return
    log.error(
        "%s at %s: check the vendor's key and base URL settings",
        what,
        base_url,
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
