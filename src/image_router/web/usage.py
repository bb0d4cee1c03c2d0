"""`/usage`: the usage log of the signed-in account, filtered, totalled, charted, exported.

Filters are GET parameters (`from`, `to`: UTC days, inclusive; `model`; `key`: an API key
id or `playground`; `status`), so a filtered view is a link. The totals, the page of rows
and `/usage.csv` read the same filter (`usage/history.py`), so the numbers above the table
are those of its rows. `?id=<generation id>` shows that one request, highlighted (the
playground links to it). Prompts are opened with the account's vault where they are stored;
outputs are shown as thumbnails while they are stored.

The chart is the last 30 days of spend, drawn on the server (`charts.py`) with the same
numbers as a table. `/account/logs` (the page's former address) redirects here; its
deletion forms keep working.

Jobs (docs/jobs.md): a row's status is the job's — queued, running, succeeded, failed or
cancelled — read as the job API reads it (`jobs/views.status_of`). A row still queued or
running says so and links to the playground (`/playground?job=<id>`), which follows it and
shows its result; `static/usage.js` reloads those rows every few seconds until they finish
(without JavaScript, the row says to refresh the page).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from image_router.account.sessions import SessionView
from image_router.api.deps import ResourcesDep
from image_router.db.session import autocommit
from image_router.jobs.views import ACTIVE_STATES, status_of
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.privacy import content
from image_router.resources import Resources
from image_router.usage import history
from image_router.usage.history import PLAYGROUND, HistoryRow, UsageFilter
from image_router.web.charts import Chart, bar_chart
from image_router.web.common import SignedInDep, SignedInFormDep, redirect, render
from image_router.web.keys import when

router = APIRouter(include_in_schema=False)

USAGE_URL = "/usage"
OLD_URL = "/account/logs"
PAGE_SIZE = 50
CHART_DAYS = 30
EXPORT_CAP = 100_000  # rows in one CSV; narrow the dates for more
STATUS_WORDS = {"success": "succeeded", "error": "failed", "processing": "running"}
#: The badge of each job status (`jobs/views.STATUSES`).
STATUS_BADGE = {
    "succeeded": "ok",
    "failed": "bad",
    "cancelled": "",
    "queued": "warn",
    "running": "warn",
}
DONE = {
    "row_deleted": "The prompt and images of that request have been deleted.",
    "history_deleted": "Your prompt history and stored images have been deleted.",
}
_FILTER_PARAMS = ("from", "to", "model", "key", "status")
CSV_COLUMNS = (
    "id",
    "created_at",
    "model",
    "type",
    "vendor",
    "status",
    "failure_reason",
    "cost_usd",
    "latency_ms",
    "key",
    "size",
    "quality",
    "seconds",
    "prompt",
    "outputs",
)


@dataclass(frozen=True)
class Filters:
    """The filter of a request to the page, as entered and as applied."""

    applied: UsageFilter
    entered: dict[str, str]  # the valid parameters, to refill the form and build links
    ignored: list[str]  # names of the parameters that could not be read

    def query(self, **extra: str | int) -> str:
        """The query string of this filter (plus `extra`), for links."""
        pairs = {**self.entered, **{k: str(v) for k, v in extra.items()}}
        return urlencode(pairs)


def _day(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None


def read_filters(request: Request) -> Filters:
    """The filter parameters; an unreadable one is left out (and named in `ignored`)."""
    params = request.query_params
    entered: dict[str, str] = {}
    ignored: list[str] = []
    since = until = None
    if value := params.get("from", "").strip():
        if (day := _day(value)) is not None:
            since = datetime(day.year, day.month, day.day, tzinfo=UTC)
            entered["from"] = day.isoformat()
        else:
            ignored.append("from")
    if value := params.get("to", "").strip():
        if (day := _day(value)) is not None:
            until = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
            entered["to"] = day.isoformat()
        else:
            ignored.append("to")
    model = params.get("model", "").strip()[:200] or None
    if model:
        entered["model"] = model
    key = params.get("key", "").strip()[:36] or None
    if key:
        entered["key"] = key
    status = params.get("status", "").strip() or None
    if status is not None and status not in history.STATUSES:
        ignored.append("status")
        status = None
    elif status:
        entered["status"] = status
    generation_id = params.get("id", "").strip()[:36] or None
    return Filters(
        UsageFilter(
            since=since,
            until=until,
            model=model,
            key=key,
            status=status,
            generation_id=generation_id,
        ),
        entered,
        ignored,
    )


def _page_number(request: Request) -> int:
    try:
        return max(1, min(int(request.query_params.get("page", "1")), 100_000))
    except ValueError:
        return 1


def key_words(row: HistoryRow) -> str:
    if row.via_web_token:
        return "playground"
    if row.api_key_id is None:
        return "—"
    return row.key_name or "deleted key"


@dataclass(frozen=True)
class Shown:
    """One usage row as the page shows it."""

    row: HistoryRow
    created: str
    cost: str
    latency: str
    key: str
    status_words: str
    badge: str
    prompt: str | None
    is_video: bool
    job_status: str  # queued | running | succeeded | failed | cancelled
    active: bool  # still queued or running: the page reloads the row until it finishes
    progress: str  # "40 %" while running when the vendor reports it, else ""


async def _shown(res: Resources, account_id: str, row: HistoryRow) -> Shown:
    latency = "" if row.latency_ms is None else f"{row.latency_ms / 1000:.1f} s"
    job_status = status_of(row.status, row.job_state)
    active = job_status in ACTIVE_STATES
    progress = ""
    if job_status == "running" and row.job_progress is not None:
        progress = f"{round(row.job_progress * 100)} %"
    return Shown(
        row=row,
        created=when(row.created_at),
        cost=f"${format_usd(row.cost)}",
        latency=latency,
        key=key_words(row),
        status_words=job_status,
        badge=STATUS_BADGE.get(job_status, ""),
        prompt=await res.vault.open(account_id, row.prompt_enc),
        is_video=row.modality == "video",
        job_status=job_status,
        active=active,
        progress=progress,
    )


def spend_chart(days: list[history.DaySpend]) -> Chart:
    return bar_chart(
        "Spend per day, last 30 days",
        [
            (d.day.isoformat(), d.spend, f"{d.requests} request{'s' if d.requests != 1 else ''}")
            for d in days
        ],
    )


async def _usage_page(
    request: Request,
    res: Resources,
    session: SessionView,
    *,
    status: int = 200,
    error: str | None = None,
) -> Response:
    filters = read_filters(request)
    number = _page_number(request)
    now = utcnow()
    account = session.account_id
    async with autocommit(res.engine) as conn:
        totals = await history.totals(conn, account, filters.applied)
        rows = await history.page(
            conn,
            account,
            filters.applied,
            limit=PAGE_SIZE,
            offset=(number - 1) * PAGE_SIZE,
            now=now,
        )
        models, keys = await history.choices(conn, account)
        days = await history.daily_spend(conn, account, last_day=now.date(), days=CHART_DAYS)
    pages = max(1, -(-totals.requests // PAGE_SIZE))
    shown = [await _shown(res, account, row) for row in rows]
    notice = DONE.get(request.query_params.get("done", ""))
    if filters.ignored:
        notice = f"Could not read {', '.join(filters.ignored)}; left out of the filter."
    return render(
        request,
        "usage.html",
        session,
        status=status,
        error=error,
        notice=notice,
        rows=shown,
        any_active=any(s.active for s in shown),
        totals_requests=totals.requests,
        totals_spend=f"${format_usd(totals.spend)}",
        filters=filters,
        filtered=bool(filters.entered),
        one=filters.applied.generation_id,
        page=number,
        pages=pages,
        models=models,
        keys=keys,
        playground=PLAYGROUND,
        statuses=[(s, STATUS_WORDS[s]) for s in history.STATUSES],
        chart=spend_chart(days),
        days=[(d.day.isoformat(), f"${format_usd(d.spend)}", d.requests) for d in days],
    )


@router.get(USAGE_URL)
async def usage(request: Request, res: ResourcesDep, session: SignedInDep) -> Response:
    return await _usage_page(request, res, session)


@router.get(OLD_URL)
async def old_usage(request: Request) -> Response:
    """The page's former address."""
    query = request.url.query
    return RedirectResponse(USAGE_URL + (f"?{query}" if query else ""), status_code=308)


def _cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def csv_line(values: list[str]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([_cell(v) for v in values])
    return out.getvalue()


async def _csv_rows(res: Resources, account_id: str, applied: UsageFilter) -> AsyncIterator[str]:
    yield csv_line(list(CSV_COLUMNS))
    async with autocommit(res.engine) as conn:
        async for row in history.every_row(conn, account_id, applied, now=utcnow(), cap=EXPORT_CAP):
            prompt = await res.vault.open(account_id, row.prompt_enc)
            yield csv_line(
                [
                    row.id,
                    row.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    row.model,
                    row.modality,
                    row.provider,
                    row.status,
                    row.error or "",
                    format_usd(row.cost),
                    "" if row.latency_ms is None else str(row.latency_ms),
                    key_words(row),
                    row.size,
                    row.quality or "",
                    row.seconds or "",
                    prompt or "",
                    " ".join(row.output_urls),
                ]
            )


@router.get(USAGE_URL + ".csv")
async def usage_csv(request: Request, res: ResourcesDep, session: SignedInDep) -> Response:
    """The filtered rows as CSV (the page's filter parameters), newest first."""
    filters = read_filters(request)
    stamp = utcnow().strftime("%Y%m%d-%H%M%S")
    return StreamingResponse(
        _csv_rows(res, session.account_id, filters.applied),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="usage-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.post(USAGE_URL + "/{generation_id}/delete")
@router.post(OLD_URL + "/{generation_id}/delete")
async def delete_row(
    request: Request, generation_id: str, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    """Delete one request's prompt and outputs (billing facts stay)."""
    session, _ = signed
    try:
        found = await content.delete_generation_content(
            res.engine, res.store, session.account_id, generation_id
        )
    except content.GenerationRunning as exc:
        return await _usage_page(request, res, session, status=409, error=str(exc))
    if not found:
        return await _usage_page(
            request, res, session, status=404, error="There is no such request in your usage log."
        )
    return redirect(request, f"{USAGE_URL}?done=row_deleted")


@router.post(USAGE_URL + "/delete-all")
@router.post(OLD_URL + "/delete-all")
async def delete_all_rows(request: Request, res: ResourcesDep, signed: SignedInFormDep) -> Response:
    session, _ = signed
    await content.delete_all_content(res.engine, res.store, session.account_id)
    return redirect(request, f"{USAGE_URL}?done=history_deleted")
