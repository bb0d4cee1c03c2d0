"""Data-subject requests (DSR-8): due one calendar month after receipt, listed when overdue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from image_router.db.session import make_engine, unit_of_work
from image_router.privacy import requests as dsr


@pytest.mark.parametrize(
    ("received", "due"),
    [
        (datetime(2026, 3, 15, 8, 5, tzinfo=UTC), datetime(2026, 4, 15, 8, 5, tzinfo=UTC)),
        (
            datetime(2026, 1, 31, 23, 0, tzinfo=UTC),
            datetime(2026, 2, 28, 23, 0, tzinfo=UTC),
        ),  # no 31 February
        (
            datetime(2028, 1, 30, 0, 0, tzinfo=UTC),
            datetime(2028, 2, 29, 0, 0, tzinfo=UTC),
        ),  # leap year
        (datetime(2026, 3, 31, 12, 0, tzinfo=UTC), datetime(2026, 4, 30, 12, 0, tzinfo=UTC)),
        (
            datetime(2026, 12, 20, 12, 0, tzinfo=UTC),
            datetime(2027, 1, 20, 12, 0, tzinfo=UTC),
        ),  # into the next year
    ],
)
def test_a_request_is_due_one_calendar_month_after_receipt(
    received: datetime, due: datetime
) -> None:
    assert dsr.due_date(received) == due


async def test_requests_are_opened_listed_overdue_and_closed(db_url: str) -> None:
    engine = make_engine(db_url)
    received = datetime(2026, 1, 31, 10, 0, tzinfo=UTC)
    try:
        async with unit_of_work(engine) as conn:
            late = await dsr.open_request(
                conn,
                account_id="a-1",
                type="access",
                channel="email",
                note=" ticket 42 ",
                received_at=received,
                handled_by="alice",
            )
            recent = await dsr.open_request(
                conn,
                account_id="a-2",
                type="erasure",
                channel="post",
                received_at=received + timedelta(days=20),
            )
        assert late.due_at == datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
        assert late.note == "ticket 42"
        on_due_date = datetime(2026, 2, 28, 10, 0, tzinfo=UTC)
        async with unit_of_work(engine) as conn:
            assert await dsr.overdue(conn, on_due_date) == []  # due *at* that time: not late
            [overdue] = await dsr.overdue(conn, on_due_date + timedelta(minutes=1))
            assert overdue.id == late.id and overdue.is_overdue(on_due_date + timedelta(days=1))
            listed = await dsr.list_requests(conn, open_only=True)
            assert [r.id for r in listed] == [late.id, recent.id]

            closed = await dsr.close_request(
                conn,
                late.id,
                handled_by="bob",
                now=on_due_date + timedelta(days=2),
                note="sent the export",
            )
        assert (closed.status, closed.handled_by) == ("completed", "bob")
        assert closed.note == "ticket 42\nsent the export"
        assert not closed.is_overdue(on_due_date + timedelta(days=9))
        async with unit_of_work(engine) as conn:
            assert [r.id for r in await dsr.list_requests(conn, open_only=True)] == [recent.id]
            assert len(await dsr.list_requests(conn)) == 2
            with pytest.raises(dsr.RequestError, match="already completed"):
                await dsr.close_request(conn, late.id, handled_by="bob")
            with pytest.raises(dsr.RequestError, match="no request"):
                await dsr.close_request(conn, "nope", handled_by="bob")
            with pytest.raises(dsr.RequestError, match="unknown request type"):
                await dsr.open_request(conn, account_id=None, type="delete", channel="email")
            with pytest.raises(dsr.RequestError, match="unknown channel"):
                await dsr.open_request(conn, account_id=None, type="access", channel="fax")
    finally:
        await engine.dispose()
