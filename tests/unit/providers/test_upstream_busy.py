"""`Retry-After` read from a vendor's answer, and which errors mean "busy, try again"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from image_router.providers.chutes import FREE_CAPACITY_MESSAGE, error_from_response
from image_router.providers.errors import error_for_status, retry_after

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("Mon, 07 Dec 2026 12:00:30 GMT", 30.0),
        ("Mon, 07 Dec 2026 11:00:00 GMT", 0.0),  # a date in the past: now
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),  # RFC 9110 allows whole seconds only
        ("٣", None),  # a non-ASCII digit
    ],
)
def test_retry_after_reads_seconds_or_an_http_date(value: str, seconds: float | None) -> None:
    assert retry_after({"retry-after": value}, now=NOW) == seconds


def test_no_header_is_none() -> None:
    assert retry_after({}) is None


@pytest.mark.parametrize(
    ("status", "message", "retry_after_s", "busy"),
    [
        (429, "Too many requests", None, True),
        (429, "You exceeded your current quota, check your billing details", None, False),
        (402, "Payment required", None, False),
        (503, "Service unavailable", None, False),
        (503, "Service unavailable", 10.0, True),
        (500, "Internal error", 10.0, False),
    ],
)
def test_busy_means_waiting_may_help(
    status: int, message: str, retry_after_s: float | None, busy: bool
) -> None:
    error = error_for_status("vendor", status, message, retry_after_s=retry_after_s)
    assert error.busy is busy


def test_chutes_capacity_is_busy_and_keeps_the_retry_after() -> None:
    error = error_from_response(429, FREE_CAPACITY_MESSAGE, retry_after_s=3.0)
    assert error.busy
    assert error.retry_after_s == 3.0
    assert error.record()["retry_after_s"] == 3.0
