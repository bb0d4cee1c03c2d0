"""Data-subject requests (privacy-payments.md DSR-8): recorded with a due date, then closed.

Self-service requests (export, erasure, restriction through the API or website) are recorded
by the code that fulfils them, already completed (`record_fulfilled`). Requests that arrive by
e-mail or post are recorded by an operator (`image-router dsr add`), fulfilled with the same
code paths as self-service, and closed (`dsr close`); `overdue` lists the open ones past due.

Due date: GDPR Art. 12(3) allows one month from receipt. A period of one month ends on the
same day of the next month, or on that month's last day when it has no such day (31 January
→ 28 or 29 February), which is how Regulation 1182/71 Art. 3(2)(c) counts periods and how the
EDPB's guidelines on the right of access (01/2022) read Art. 12(3). The time of day is kept.
The two-month extension for complex requests is not modelled; note it on the request.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import DataSubjectRequest
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id

TYPES = ("access", "export", "rectification", "erasure", "restriction", "objection")
CHANNELS = ("api", "web", "clerk", "email", "post", "phone", "cli")
OPEN = "open"
COMPLETED = "completed"


class RequestError(ValueError):
    """Bad input about a data-subject request; the message is meant for the operator."""


@dataclass(frozen=True)
class RequestView:
    id: str
    account_id: str | None
    type: str
    channel: str
    status: str
    received_at: datetime
    due_at: datetime
    completed_at: datetime | None
    handled_by: str | None
    note: str | None

    def is_overdue(self, now: datetime) -> bool:
        return self.status == OPEN and self.due_at < now


def due_date(received_at: datetime) -> datetime:
    """One calendar month after `received_at`, clamped to the last day of a shorter month."""
    # Count months from year 0 (January = 0): the next month is year * 12 + month.
    year, month_0 = divmod(received_at.year * 12 + received_at.month, 12)
    month = month_0 + 1
    day = min(received_at.day, calendar.monthrange(year, month)[1])
    return received_at.replace(year=year, month=month, day=day)


async def open_request(
    conn: AsyncConnection,
    *,
    account_id: str | None,
    type: str,
    channel: str,
    note: str | None = None,
    received_at: datetime | None = None,
    handled_by: str | None = None,
) -> RequestView:
    """Record a request received at `received_at` (default now), due one month later."""
    if type not in TYPES:
        raise RequestError(f"unknown request type '{type}' (one of {', '.join(TYPES)})")
    if channel not in CHANNELS:
        raise RequestError(f"unknown channel '{channel}' (one of {', '.join(CHANNELS)})")
    received = (received_at or utcnow()).astimezone(UTC)
    values: dict[str, Any] = {
        "id": new_id(),
        "account_id": account_id,
        "type": type,
        "channel": channel,
        "status": OPEN,
        "received_at": received,
        "due_at": due_date(received),
        "completed_at": None,
        "handled_by": handled_by,
        "note": (note or "").strip() or None,
    }
    await conn.execute(insert(DataSubjectRequest).values(**values))
    return RequestView(**values)


async def record_fulfilled(
    conn: AsyncConnection,
    *,
    account_id: str,
    type: str,
    channel: str,
    handled_by: str | None = None,
    now: datetime | None = None,
) -> RequestView:
    """Record a request that was fulfilled as it was made (self-service)."""
    now = now or utcnow()
    opened = await open_request(
        conn, account_id=account_id, type=type, channel=channel, received_at=now
    )
    return await close_request(conn, opened.id, handled_by=handled_by, now=now)


async def close_request(
    conn: AsyncConnection,
    request_id: str,
    *,
    handled_by: str | None,
    now: datetime | None = None,
    note: str | None = None,
) -> RequestView:
    """Mark an open request completed; a note is appended to the request's note."""
    current = await get_request(conn, request_id)
    if current.status != OPEN:
        raise RequestError(f"request {request_id} is already {current.status}")
    values: dict[str, Any] = {
        "status": COMPLETED,
        "completed_at": (now or utcnow()).astimezone(UTC),
        "handled_by": handled_by or current.handled_by,
    }
    if note and note.strip():
        values["note"] = "\n".join(filter(None, (current.note, note.strip())))
    result = await conn.execute(
        update(DataSubjectRequest)
        .where(DataSubjectRequest.id == request_id, DataSubjectRequest.status == OPEN)
        .values(**values)
    )
    if result.rowcount != 1:  # closed by someone else meanwhile
        raise RequestError(f"request {request_id} is already closed")
    return await get_request(conn, request_id)


async def get_request(conn: AsyncConnection, request_id: str) -> RequestView:
    row = (
        await conn.execute(select(DataSubjectRequest).where(DataSubjectRequest.id == request_id))
    ).first()
    if row is None:
        raise RequestError(f"no request with id {request_id}")
    return _view(row)


async def list_requests(
    conn: AsyncConnection, *, open_only: bool = False, account_id: str | None = None
) -> list[RequestView]:
    """Requests by due date, soonest first."""
    query = select(DataSubjectRequest).order_by(DataSubjectRequest.due_at, DataSubjectRequest.id)
    if open_only:
        query = query.where(DataSubjectRequest.status == OPEN)
    if account_id is not None:
        query = query.where(DataSubjectRequest.account_id == account_id)
    return [_view(row) for row in (await conn.execute(query)).all()]


async def overdue(conn: AsyncConnection, now: datetime | None = None) -> list[RequestView]:
    """Open requests whose due date has passed, most overdue first."""
    query = (
        select(DataSubjectRequest)
        .where(DataSubjectRequest.status == OPEN, DataSubjectRequest.due_at < (now or utcnow()))
        .order_by(DataSubjectRequest.due_at, DataSubjectRequest.id)
    )
    return [_view(row) for row in (await conn.execute(query)).all()]


def _view(row: Any) -> RequestView:
    return RequestView(
        id=row.id,
        account_id=row.account_id,
        type=row.type,
        channel=row.channel,
        status=row.status,
        received_at=row.received_at,
        due_at=row.due_at,
        completed_at=row.completed_at,
        handled_by=row.handled_by,
        note=row.note,
    )
