"""What a failed generation tells the client, the usage log and the metrics.

The one place where an `UpstreamError` (or a deadline, a hang-up, a bug) becomes the
`GatewayError` a client sees.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from image_router.db.outage import RETRY_AFTER_S as DB_RETRY_AFTER_S
from image_router.db.outage import is_outage
from image_router.errors import (
    DatabaseUnavailable,
    GatewayError,
    GenerationFailed,
    GenerationRejected,
    GenerationTimeout,
    GenerationUnavailable,
    InternalError,
    ShuttingDown,
    StorageUnavailable,
)
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from image_router.storage.base import StorageError

log = logging.getLogger(__name__)

#: The `Retry-After` (seconds) of a 503 for a busy vendor that did not say when to return.
BUSY_RETRY_AFTER_S = 5
#: The `Retry-After` of a 503 for outputs that could not be stored.
STORAGE_RETRY_AFTER_S = 10


def describe(exc: BaseException) -> str:
    if isinstance(exc, UpstreamError | GatewayError):
        return exc.message
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "the generation did not finish before its deadline"
    if isinstance(exc, asyncio.CancelledError):
        return "the request was cancelled (client disconnected)"
    if isinstance(exc, StorageError):
        return "the output could not be stored (storage unavailable)"
    if is_outage(exc):
        return "the database was unavailable"
    return f"internal error: {type(exc).__name__}"


def client_error(exc: BaseException) -> GatewayError:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | UpstreamTimeoutError):
        return GenerationTimeout("The generation did not finish in time. You were not charged.")
    if isinstance(exc, UpstreamRejectedError):
        return GenerationRejected(exc.message, code=exc.code or "upstream_rejected")
    if isinstance(exc, UpstreamMisconfiguredError):
        # Our key or base URL, not the request: say so without the vendor's words (they
        # may quote part of our key); the ERROR log names vendor and URL for the operator.
        return GenerationFailed(
            f"The gateway's configuration for {exc.provider} was refused by the vendor "
            f"(HTTP {exc.status or '-'}); the operator must fix it. You were not charged.",
            code="upstream_misconfigured",
        )
    if isinstance(exc, UpstreamError) and exc.busy:
        # The last route left was busy, and still was when retried: a try-again-later case.
        wait = max(1, math.ceil(exc.retry_after_s or BUSY_RETRY_AFTER_S))
        return GenerationUnavailable(
            f"The upstream provider is busy: {exc.message.rstrip('.')}. Try again in "
            f"{wait} seconds. You were not charged.",
            code="upstream_busy",
            headers={"Retry-After": str(wait)},
        )
    if isinstance(exc, UpstreamError):
        return GenerationFailed(
            f"The upstream provider failed: {exc.message.rstrip('.')}. You were not charged.",
            code=f"upstream_{exc.kind}",
        )
    if isinstance(exc, StorageError):
        # The output was made but could not be kept: the hold goes back like any failure.
        log.error("storing a generation's output failed: %s", exc)
        return _storage_unavailable()
    if is_outage(exc):
        return database_unavailable(exc)
    log.error("generation failed unexpectedly", exc_info=exc)
    return InternalError("Failed to generate. You were not charged.")


def event_error(exc: BaseException, *, cut: bool = False) -> dict[str, Any]:
    """The error object a failed generation's event (and its job) carries: what its client
    was (or would have been) answered, without logging the failure a second time. `cut`:
    the drain, not the client, cancelled it."""
    if isinstance(exc, asyncio.CancelledError) and cut:
        return {
            "message": "The server stopped before the generation finished. You were not charged.",
            "type": ShuttingDown.error_type,
            "code": ShuttingDown.code,
        }
    if isinstance(exc, asyncio.CancelledError):
        return {
            "message": "The client disconnected before the generation finished. "
            "You were not charged.",
            "type": "cancelled",
            "code": "client_disconnected",
        }
    if isinstance(exc, GatewayError):
        error = exc
    elif isinstance(exc, UpstreamError | TimeoutError):
        error = client_error(exc)
    elif isinstance(exc, StorageError):
        # The same answer a synchronous request gets (503 `storage_unavailable`), so a job
        # failed by an S3 outage says so instead of `internal_error`.
        error = _storage_unavailable()
    elif is_outage(exc):
        error = _database_unavailable()
    else:  # a bug: `client_error` logs it once, when the client's answer is made
        error = InternalError("Failed to generate. You were not charged.")
    return {"message": error.message, "type": error.error_type, "code": error.code}


def database_unavailable(exc: BaseException) -> DatabaseUnavailable:
    """The 503 of a request cut short by a database outage. Whatever hold it took and could
    not give back is left `processing`, and the hold reconciler releases it."""
    log.error("the database is unavailable: %s", exc)
    return _database_unavailable()


def _database_unavailable() -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"The service's database is unavailable; try again in {DB_RETRY_AFTER_S} seconds. "
        "You were not charged.",
        headers={"Retry-After": str(DB_RETRY_AFTER_S)},
    )


def _storage_unavailable() -> StorageUnavailable:
    return StorageUnavailable(
        f"The output could not be stored (the storage is unavailable); try again in "
        f"{STORAGE_RETRY_AFTER_S} seconds. You were not charged.",
        headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
    )


def outcome(exc: BaseException) -> str:
    """The status label of a failed generation for the metrics."""
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, StorageError):
        return "storage_unavailable"
    if is_outage(exc):
        return "database_unavailable"
    if isinstance(exc, UpstreamRejectedError):
        return "rejected"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError | UpstreamTimeoutError):
        return "timeout"
    return "error"
