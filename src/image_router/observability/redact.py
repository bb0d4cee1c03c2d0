"""Secrets that must never reach a log line, and the one function that blanks them out.

The gateway does not log secrets on purpose; this is the net under accidents: an exception
message quoting a vendor URL with `?key=`, a header dump, a key pasted into a model name.
Every pattern stops at quotes and backslashes so a JSON line stays well formed.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # `Authorization: Key …` (fal), `Authorization: Basic …`, header dumps of any scheme.
    (re.compile(r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?)[^\"'\\\r\n,;}]+"), rf"\1{REDACTED}"),
    # RFC 6750 bearer tokens, wherever they appear.
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{8,}=*"), rf"\1 {REDACTED}"),
    # Our own API keys (kit.ids: "ir-" and 61 letters or digits).
    (re.compile(r"ir-[A-Za-z0-9]{61}"), REDACTED),
    # OpenAI-style (`sk-…`, `sk-proj-…`) and Stripe-style (`sk_live_…`, `rk_test_…`) keys.
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{8,}"), REDACTED),
    # Credentials in query strings or `name=value` text: Gemini's `?key=`, `api_key=`, `token=`.
    (
        re.compile(
            r"(?i)(?<![A-Za-z0-9])"
            r"((?:api[_-]?key|key|access[_-]?token|token|secret|password)=)"
            r"[^&\s\"'\\#]+"
        ),
        rf"\1{REDACTED}",
    ),
)

# A cheap pre-check: most lines contain none of these, and then no regex runs at all.
_HINTS = ("authorization", "bearer", "ir-", "sk-", "k_live_", "k_test_", "=")


def redact(text: str) -> str:
    """`text` with every recognisable secret replaced by `[redacted]`."""
    folded = text.lower()
    if not any(hint in folded for hint in _HINTS):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
