"""Runware's errors (spec §9.1, §7.2): which `UpstreamError` a Runware failure is, and the
message a client sees for it (Runware's parameter names renamed to ours, as the reference
does). For the Runware adapter, whose id this module holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    error_for_status,
)
from image_router.providers.upstream_text import (
    ACCOUNT_LIMIT_PHRASES,
    OUR_KEY_PHRASES,
    RETRYABLE_PHRASES,
    mentions,
)

PROVIDER_ID: Final = "runware"
MISSING_IMAGE_MESSAGE: Final = "Image input is missing for image-to-image generation."

# Spec §7.2's strings by what they mean for us; first match wins. Each rule: Runware error
# codes, HTTP statuses, message fragments, the error raised.
_CLASSES: tuple[
    tuple[frozenset[str], frozenset[int], tuple[str, ...], type[UpstreamError]], ...
] = (
    (
        frozenset({"invalidProviderContent"}),
        frozenset(),
        ("content moderation", "moderation system", "safety system", "nsfw"),
        UpstreamRejectedError,
    ),
    (
        # Our key, or a model our catalog names that Runware does not (or no longer) serve.
        frozenset({"invalidApiKey", "invalidModel"}),
        frozenset({401, 403}),
        (*OUR_KEY_PHRASES, "invalid value for 'model' param"),
        UpstreamMisconfiguredError,
    ),
    (
        # Our account is out of money or requests: another route may still work.
        frozenset({"insufficientCredits"}),
        frozenset({402, 429}),
        (
            *ACCOUNT_LIMIT_PHRASES,
            *("rate limit exceeded", "high demand for this model", "high concurrency usage"),
        ),
        UpstreamRateLimitedError,
    ),
    (
        frozenset({"timeoutProvider"}),
        frozenset(),
        ("task processing timeout", "deadline expired", "504 gateway time-out"),
        UpstreamTimeoutError,
    ),
    (
        frozenset(),
        frozenset(),
        (*RETRYABLE_PHRASES, "try again later", "overloaded"),
        UpstreamUnavailableError,
    ),
)
# The reference renames Runware's parameters to the ones our clients sent (§9.1).
_RENAMES = (
    ("positivePrompt", "prompt"),
    ("Positive prompt", "Prompt"),
    ("seedImage", "image"),
    ("maskImage", "mask"),
)
_MISSING_IMAGE = (
    "Missing required parameter 'referenceImages'.",
    "Missing required parameter '[inputs][referenceImages]'.",
)


def error_from_response(status: int, body: Any, task_uuid: str | None = None) -> UpstreamError:
    """Classify Runware's `{"errors": [...]}` (or an `{"error": ...}`) by the §7.2 rules."""
    entry = _error_entry(body, task_uuid)
    code = entry.get("code") if isinstance(entry.get("code"), str) else None
    message = _client_message(entry, code)
    # Whatever Runware calls it, a refused `model` is our catalog's mistake, not the user's.
    kind = "invalidModel" if entry.get("parameter") == "model" else code
    found = [
        c for k, s, hints, c in _CLASSES if kind in k or status in s or mentions(message, hints)
    ]
    # A task error inside a 2xx answer is about this job's input unless shown otherwise.
    cls = found[0] if found else type(error_for_status(PROVIDER_ID, max(status, 400), message))
    return cls(message, provider=PROVIDER_ID, status=status, body=body, code=code)


def _error_entry(body: Any, task_uuid: str | None) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        return {"message": body} if isinstance(body, str) and body else {}
    errors = body.get("errors")
    if isinstance(errors, list):
        entries = [e for e in errors if isinstance(e, Mapping)]
        ours = [e for e in entries if task_uuid and e.get("taskUUID") == task_uuid]
        if ours or entries:
            return (ours or entries)[0]
    error = body.get("error")
    if isinstance(error, Mapping):
        return error
    if isinstance(error, str):
        return {"message": error}
    return body if isinstance(body.get("message"), str) else {}


def _client_message(entry: Mapping[str, Any], code: str | None) -> str:
    message = entry.get("message")
    text = message if isinstance(message, str) and message else "Runware generation failed"
    if any(missing in text for missing in _MISSING_IMAGE):
        text = MISSING_IMAGE_MESSAGE
    for ours, theirs in _RENAMES:
        text = text.replace(ours, theirs, 1)
    content = entry.get("responseContent")
    more = "Additional information below." in text
    if code == "providerError" and more and isinstance(content, str) and content:
        return content
    if code in ("providerError", "invalidProviderContent") and isinstance(content, Mapping):
        data = content.get("data")
        detail = data.get("task_status_msg") if isinstance(data, Mapping) else None
        if isinstance(detail, str) and detail:
            return detail
    return text
