"""Google AI Studio (the Gemini API) as the Gemini and Imagen adapters both speak it.

Not a provider: a library like `contract`, so `gemini` (with `gemini_veo`) and `gemini_imagen`
share one host, one key handling and one error model without importing each other.

The key (`first_key` of the comma-separated list) travels only in the `x-goog-api-key`
header, Google's documented alternative to `?key=`, so it is never in a URL, a log line or
an artifact. Error answers are `{"error": {code, message, status, details}}`; `classify`
maps them (and failed Veo operations) onto the upstream error tree.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any, Final

import httpx
import pybase64

from image_router.providers.contract import Job
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_for_status,
    response_json,
)
from image_router.providers.upstream_text import error_body, expect_object

DEFAULT_BASE_URL: Final = "https://generativelanguage.googleapis.com"
API_VERSION: Final = "v1beta"
KEY_HEADER: Final = "x-goog-api-key"

# Our key, project or adapter is at fault (§7.2 "Invalid API key", "requires billing"):
# not the user's fault, and another route may work.
_OUR_FAULT_STATES: Final = frozenset(
    {"UNAUTHENTICATED", "PERMISSION_DENIED", "FAILED_PRECONDITION", "NOT_FOUND"}
)
_OUR_FAULT_TEXT: Final = (
    *("api key", "requires billing", "billed users", "user location is not supported"),
    "invalid json payload",
)
_TRANSIENT_STATES: Final = frozenset({"INTERNAL", "UNAVAILABLE", "UNKNOWN", "ABORTED", "CANCELLED"})


# ---------------------------------------------------------------------------- errors


def classify(
    provider: str, status: int, state: str | None, message: str, reasons: set[str], body: Any
) -> UpstreamError:
    """Map one Google error (HTTP status, canonical state, message) onto the error tree."""
    text = message.lower()
    args: dict[str, Any] = {"provider": provider, "status": status, "body": body, "code": state}
    # Quota first: quota messages may well mention the API key or the billing plan.
    if state == "RESOURCE_EXHAUSTED" or status == 429:
        return UpstreamRateLimitedError(message, **args)
    if (
        "API_KEY_INVALID" in reasons
        or state in _OUR_FAULT_STATES
        or any(t in text for t in _OUR_FAULT_TEXT)
    ):
        return UpstreamMisconfiguredError(message, **args)
    if state == "DEADLINE_EXCEEDED":
        return UpstreamTimeoutError(message, **args)
    if state in _TRANSIENT_STATES or "overloaded" in text:
        return UpstreamUnavailableError(message, **args)
    return error_for_status(provider, status, message, body, state)


def error_from_response(status: int, body: Any, *, provider: str) -> UpstreamError:
    """Classify a Google error answer `{"error": {code, message, status, details}}`."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return error_for_status(provider, status, f"Google answered HTTP {status}", body)
    message = str(error.get("message") or f"Google answered HTTP {status}")
    state = error.get("status") if isinstance(error.get("status"), str) else None
    return classify(provider, status, state, message, error_reasons(error), body)


def error_reasons(error: Mapping[str, Any]) -> set[str]:
    """The `reason`s of an error's `details` (e.g. API_KEY_INVALID)."""
    details = error.get("details")
    if not isinstance(details, list):
        return set()
    return {str(d["reason"]) for d in details if isinstance(d, Mapping) and "reason" in d}


def raise_for_google(response: httpx.Response, key: str, provider: str) -> None:
    """Raise the classified error of a non-2xx answer; the key never reaches the record."""
    if response.is_error:
        raise error_from_response(
            response.status_code, error_body(response, key), provider=provider
        )


# ---------------------------------------------------------------------------- HTTP and bodies


async def post_json(
    http: httpx.AsyncClient, url: str, body: Mapping[str, Any], key: str, provider: str
) -> Mapping[str, Any]:
    """POST `body` with the key header and return the JSON object Google answered."""
    response = await http.post(url, json=body, headers={KEY_HEADER: key})
    raise_for_google(response, key, provider)
    return expect_object(response_json(provider, response), vendor="Google", provider=provider)


def decode_b64(encoded: str, provider: str, body: Any) -> bytes:
    try:
        return pybase64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise UpstreamProtocolError(
            "Google sent media that is not valid base64", provider=provider, body=body
        ) from exc


def text_or_none(value: Any) -> str | None:
    """`value` when it is a non-empty string (Google leaves optional fields out or empty)."""
    return value if isinstance(value, str) and value else None


# ---------------------------------------------------------------------------- sizes


def size_table(text: str) -> dict[str, str]:
    """`"1024x1024=1:1 832x1248=2:3"` as a dict, so the size tables read like the spec."""
    return {size: value for size, _, value in (item.partition("=") for item in text.split())}


def size_key(job: Job) -> str | None:
    """The job's size as the tables spell it ("1024x1024"); None for "auto"."""
    dims = job.dimensions
    return None if dims is None else f"{dims[0]}x{dims[1]}"
