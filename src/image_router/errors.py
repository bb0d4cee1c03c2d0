"""What a client can be told went wrong.

Every error a client sees is a `GatewayError`. Each class fixes the HTTP status, the
OpenAI-style `type` and a stable `code`; instances carry the message (word for word where
ImageRouter defines one), an optional `param` and optional extra headers. One handler in
`app.py` renders them all as `{"error": {"message", "type", "code", "param"}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class GatewayError(Exception):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = dict(headers or {})
        if code is not None:
            self.code = code

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "code": self.code,
                "param": self.param,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class UploadError(InvalidRequest):
    code = "file_upload_error"


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "payload_too_large"


class ModelNotFound(InvalidRequest):
    status = 404
    code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    error_type = "invalid_request_error"
    code = "not_found"


class Conflict(GatewayError):
    """The request clashes with the current state (a generation still running, an e-mail
    already taken, a profile managed by the identity provider)."""

    status = 409
    error_type = "invalid_request_error"
    code = "conflict"


class MethodNotAllowed(GatewayError):
    status = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class Unauthenticated(GatewayError):
    status = 401
    error_type = "unauthorized"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    error_type = "access_denied"
    code = "access_denied"


class InsufficientCredits(GatewayError):
    status = 402
    error_type = "insufficient_credits"
    code = "insufficient_credits"


class RateLimited(GatewayError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limited"


class GenerationRejected(GatewayError):
    """The upstream vendor refused the user's input (content policy, bad image...)."""

    status = 400
    error_type = "upstream_error"
    code = "upstream_rejected"


class GenerationFailed(GatewayError):
    """Every route failed for reasons that are not the user's fault."""

    status = 502
    error_type = "upstream_error"
    code = "upstream_failed"


class GenerationUnavailable(GatewayError):
    """No route could be tried at all (no vendor configured, all circuits open...)."""

    status = 503
    error_type = "upstream_error"
    code = "upstream_unavailable"


class GenerationTimeout(GatewayError):
    status = 504
    error_type = "upstream_error"
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    """A part of the gateway itself is away (its database, its storage), or it is stopping:
    nothing was charged, and the same request may be sent again after `Retry-After`."""

    status = 503
    error_type = "service_unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class StorageUnavailable(ServiceUnavailable):
    code = "storage_unavailable"


class ShuttingDown(ServiceUnavailable):
    """The server stopped before the request finished (its drain time was up)."""

    code = "server_shutting_down"


class InternalError(GatewayError):
    status = 500
    error_type = "internal_error"
    code = "internal_error"


class OperatorError(Exception):
    """Bad input to an operator command (CLI); the message is shown as is."""
