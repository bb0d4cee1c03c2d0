"""Declare in `/openapi.json` the error statuses every operation can really answer.

FastAPI documents a 422 that this server never sends (validation errors are rendered as
400 by the app's handler) and none of the statuses raised by the shared machinery: the
API-key and session guards (401, 403), the rate limiter (429), path lookups (404). These
rules derive them from each operation's shape, so a new route is documented truthfully
without a list to keep in step; the few statuses that depend on configuration are named
below. `tests/e2e/test_e2e_openapi_fuzz.py` (schemathesis) fails when a route answers a
status its operation does not declare.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}

# Operations that need neither an API key nor a website session.
_PUBLIC = frozenset(
    {
        "/health",
        "/v1/models",
        "/v2/models",
        "/v1/models/{model_id}",
        "/v1/models/{model_id}/quote",
        "/v1/openai/images/models",
        "/v1/legal",
        "/v1/consent/cookies",
    }
)

# Statuses that depend on what the operator configured.
_CONFIGURED: dict[tuple[str, str], dict[int, str]] = {
    ("post", "/v1/billing/checkout"): {404: "Payments are not enabled"},
    ("post", "/v1/consent/cookies"): {404: "Analytics are not enabled"},
    ("get", "/v1/jobs"): {404: "`after` names no job of this account"},
    ("post", "/v1/jobs/{job_id}/cancel"): {409: "The job has already finished"},
}

# The operations that take an `Idempotency-Key` (api/idempotency.py): a key reused for
# another request is a 422, a repeat while the first is still running a 409.
_IDEMPOTENT = frozenset(
    {
        ("post", "/v1/openai/images/generations"),
        ("post", "/v1/openai/images/edits"),
        ("post", "/v1/openai/videos/generations"),
        ("post", "/v1/api-keys"),
        ("post", "/v1/account/api-keys"),
        ("post", "/v1/billing/checkout"),
    }
)
_IDEMPOTENT_STATUSES = {
    409: "A request with this Idempotency-Key is still running (`Retry-After`)",
    422: "This Idempotency-Key was used for another request",
}
IDEMPOTENCY_PARAMETER: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Repeat the request safely: the same key and body within 24 hours get the "
    "first answer again (`Idempotent-Replayed: true`), never a second charge. 1 to 255 "
    "printable ASCII characters; a UUID is typical.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}

_TEXTS = {
    400: "Invalid request",
    401: "Missing or invalid credentials",
    403: "Not allowed for this credential, account state or without the CSRF token",
    404: "Not found",
    429: "Rate limited",
}


def _statuses(method: str, path: str, operation: dict[str, Any]) -> dict[int, str]:
    found: dict[int, str] = {}
    if operation.get("parameters") or "requestBody" in operation or method != "get":
        found[400] = _TEXTS[400]
    if path.startswith(("/v1/", "/v2/")):
        found[429] = _TEXTS[429]
        if path not in _PUBLIC:
            found[401] = _TEXTS[401]
            found[403] = _TEXTS[403]
    if "{" in path:
        found[404] = _TEXTS[404]
    found.update(_CONFIGURED.get((method, path), {}))
    if (method, path) in _IDEMPOTENT:
        found.update(_IDEMPOTENT_STATUSES)
    return found


def declare_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the derived error responses to every operation of `schema`; drop FastAPI's 422."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            if (method, path) in _IDEMPOTENT:
                parameters = operation.setdefault("parameters", [])
                if IDEMPOTENCY_PARAMETER not in parameters:
                    parameters.append(IDEMPOTENCY_PARAMETER)
            for status, text in _statuses(method, path, operation).items():
                responses.setdefault(str(status), {"description": text, "content": _ERROR})
    components = schema.setdefault("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def document_errors(app: FastAPI) -> None:
    """Wrap `app.openapi` (after every other documentation step) with `declare_errors`."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        # `build` caches its schema; declaring is idempotent and cheap, so no cache here.
        return declare_errors(build())

    app.openapi = openapi  # type: ignore[method-assign]
