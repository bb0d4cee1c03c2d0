"""Spend-limit windows (UTC day, ISO week, calendar month) and key setting parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from image_router.account import managed_keys, spend_limits
from image_router.account.managed_keys import KeySettingError

NOW = datetime(2026, 11, 27, 22, 30, tzinfo=UTC)


def _at(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "now", "start", "end"),
    [
        ("day", _at(2026, 12, 31, 23, 59, 59), _at(2026, 12, 31), _at(2027, 1, 1)),
        ("day", _at(2026, 3, 1), _at(2026, 3, 1), _at(2026, 3, 2)),
        # ISO weeks run Monday to Sunday, across months and years.
        ("week", _at(2026, 3, 2), _at(2026, 3, 2), _at(2026, 3, 9)),
        ("week", _at(2026, 3, 1, 23, 59), _at(2026, 2, 23), _at(2026, 3, 2)),
        ("week", _at(2027, 1, 1, 12), _at(2026, 12, 28), _at(2027, 1, 4)),
        ("month", _at(2026, 12, 31, 23, 59, 59), _at(2026, 12, 1), _at(2027, 1, 1)),
        ("month", _at(2028, 2, 29, 1), _at(2028, 2, 1), _at(2028, 3, 1)),
        ("month", _at(2026, 1, 31), _at(2026, 1, 1), _at(2026, 2, 1)),
    ],
)
def test_windows(period: str, now: datetime, start: datetime, end: datetime) -> None:
    assert spend_limits.window_start(period, now) == start
    assert spend_limits.window_end(period, now) == end
    # The end is the next window's start.
    assert spend_limits.window_start(period, end) == end


def test_windows_are_utc_whatever_the_offset_of_now() -> None:
    # 01:30 on the 2nd in UTC+3 is still the 1st in UTC.
    local = datetime(2026, 6, 2, 1, 30, tzinfo=timezone(timedelta(hours=3)))
    assert spend_limits.window_start("day", local) == _at(2026, 6, 1)
    assert spend_limits.window_start("month", local) == _at(2026, 6, 1)


def test_lifetime_has_no_window() -> None:
    assert spend_limits.window_start(None, NOW) is None
    assert spend_limits.window_end(None, NOW) is None


@pytest.mark.parametrize(
    ("value", "credits"),
    [
        (None, None),
        (0, 0),
        (5, 50_000),
        (Decimal("0.0001"), 1),
        (Decimal("0.1"), 1_000),
        ("$2.5", 25_000),
        (" 12 ", 120_000),
    ],
)
def test_spend_limits_parse_to_exact_credits(value: object, credits: int | None) -> None:
    assert managed_keys.parse_spend_limit(value) == credits


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (-1, "negative"),
        (Decimal("0.00005"), "multiple of $0.0001"),
        ("NaN", "not a USD amount"),
        ("1e10", "at most"),
        (True, "USD amount"),
        (1.5, "USD amount"),  # a float would already have lost exactness
        ([], "USD amount"),
    ],
)
def test_bad_spend_limits(value: object, words: str) -> None:
    with pytest.raises(KeySettingError) as caught:
        managed_keys.parse_spend_limit(value)
    assert words in str(caught.value)
    assert caught.value.param == "spend_limit"


def test_expiry_parsing() -> None:
    assert managed_keys.parse_expiry(None, NOW) is None
    assert managed_keys.parse_expiry("2027-01-01", NOW) == _at(2027, 1, 1)
    assert managed_keys.parse_expiry("2027-01-01T02:00:00+02:00", NOW) == _at(2027, 1, 1)
    for past in ("2026-11-27T22:30:00Z", "2026-11-27T23:00:00+01:00"):
        with pytest.raises(KeySettingError, match="future"):
            managed_keys.parse_expiry(past, NOW)
    with pytest.raises(KeySettingError, match="ISO 8601"):
        managed_keys.parse_expiry("next week", NOW)


def test_settings_reject_unknown_fields_and_keep_only_present_ones() -> None:
    assert managed_keys.parse_settings(
        {"disabled": True, "spend_limit": None}, NOW, allowed=managed_keys.PATCH_FIELDS
    ) == {"is_active": False, "spend_limit": None}
    with pytest.raises(KeySettingError, match="unknown field 'disabled'") as caught:
        managed_keys.parse_settings({"disabled": True}, NOW, allowed=managed_keys.FIELDS)
    assert caught.value.param == "disabled"
