"""`iso`: the one timestamp format of the API's JSON (UTC, milliseconds, `Z`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from image_router.kit.clock import iso


def test_a_utc_moment_is_written_with_milliseconds_and_z() -> None:
    moment = datetime(2025, 3, 4, 5, 6, 7, 891_234, tzinfo=UTC)
    assert iso(moment) == "2025-03-04T05:06:07.891Z"


def test_another_offset_is_converted_to_utc_first() -> None:
    paris_summer = timezone(timedelta(hours=2))
    assert iso(datetime(2025, 7, 1, 1, 30, tzinfo=paris_summer)) == "2025-06-30T23:30:00.000Z"


def test_none_stays_none_so_optional_fields_need_no_condition() -> None:
    assert iso(None) is None
