"""`/usage`: filters with their totals, pagination, CSV export of the filtered rows, the
daily-spend chart, one request by `?id=`, thumbnails of stored outputs, job states, and the
former address `/account/logs`. On SQLite and PostgreSQL (the per-day sums are SQL)."""

from __future__ import annotations

import csv
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.db.tables import Generation, GenerationJob
from image_router.kit.clock import utcnow
from image_router.kit.money import usd_to_credits
from image_router.ledger import service as ledger
from tests.conftest import Gateway
from tests.integration.web_helpers import sign_up

IMAGE = "/v1/openai/images/generations"
ROW_ID = re.compile(r'<tr id="log-([0-9a-f-]+)"')


async def _row(gw: Gateway, account_id: str, **values: Any) -> str:
    gid = str(uuid.uuid4())
    created = values.pop("created_at")
    row = {
        "id": gid,
        "account_id": account_id,
        "api_key_id": None,
        "via_web_token": False,
        "modality": "image",
        "model": "openai/dall-e-2",
        "provider": "openai",
        "prompt_enc": None,
        "size": "1024x1024",
        "status": "success",
        "held": 0,
        "cost": 0,
        "latency_ms": 1500,
        "output_urls": [],
        "output_keys": [],
        "attempts": [],
        "input_types": [],
        "created_at": created,
        "deadline_at": created + timedelta(minutes=5),
        "finished_at": created + timedelta(seconds=2),
        **values,
    }
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(insert(Generation).values(**row))
    return gid


class Log:
    """A signed-in account with a known usage log (newest first in `ids`)."""

    def __init__(self, account_id: str, keys: dict[str, str]) -> None:
        self.account_id = account_id
        self.keys = keys
        self.dalle: list[str] = []  # newest first
        self.errors: list[str] = []
        self.playground: list[str] = []
        self.today: str = ""


MARCH = datetime(2025, 3, 10, 8, 0, tzinfo=UTC)


@pytest.fixture
async def log(any_gateway: Gateway) -> Log:
    gw = any_gateway
    assert (await sign_up(gw.client, "usage@example.com")).status_code == 303
    account_id = (await gw.client.get("/v1/account")).json()["id"]
    async with unit_of_work(gw.res.engine) as conn:
        laptop, _ = await accounts.create_key(conn, account_id, "laptop")
        server, _ = await accounts.create_key(conn, account_id, "server")
    out = Log(account_id, {"laptop": laptop.id, "server": server.id})
    for i in range(52):  # 2025-03-10: 52 dall-e-2 successes at $0.02 through "laptop"
        out.dalle.insert(
            0,
            await _row(
                gw,
                account_id,
                created_at=MARCH + timedelta(minutes=i),
                api_key_id=laptop.id,
                cost=200,
            ),
        )
    for i in range(3):  # 2025-03-12: 3 gpt-image-1 failures through "server"
        out.errors.insert(
            0,
            await _row(
                gw,
                account_id,
                created_at=MARCH + timedelta(days=2, minutes=i),
                api_key_id=server.id,
                model="openai/gpt-image-1",
                status="error",
                error="The vendor refused the prompt",
            ),
        )
    for i in range(2):  # 2025-03-15: 2 gpt-image-1 successes from the playground at $0.05
        out.playground.insert(
            0,
            await _row(
                gw,
                account_id,
                created_at=MARCH + timedelta(days=5, minutes=i),
                via_web_token=True,
                model="openai/gpt-image-1",
                cost=500,
            ),
        )
    # Today: one video at $0.03, and another account's request, which is never shown.
    out.today = await _row(
        gw,
        account_id,
        created_at=utcnow() - timedelta(seconds=5),
        api_key_id=laptop.id,
        model="ir/test-video",
        modality="video",
        cost=300,
        output_urls=["/files/clip.mp4"],
        outputs_expire_at=utcnow() + timedelta(days=1),
    )
    other, _ = await gw.account("1")
    await _row(gw, other, created_at=MARCH, cost=9999)
    return out


def totals(page: str) -> tuple[int, str]:
    found = re.search(r'id="usage-totals" data-requests="(\d+)" data-spend="([^"]+)"', page)
    assert found is not None
    return int(found.group(1)), found.group(2)


async def usage(gw: Gateway, query: str = "") -> str:
    page = await gw.client.get("/usage" + query)
    assert page.status_code == 200, page.text
    return page.text


async def test_filters_pages_and_totals(any_gateway: Gateway, log: Log) -> None:
    gw = any_gateway
    everything = await usage(gw)
    assert totals(everything) == (58, "$1.1700")
    assert ROW_ID.findall(everything)[:3] == [log.today, *log.playground]
    assert "Page 1 of 2" in everything and "9999" not in everything

    dalle = await usage(gw, "?model=openai/dall-e-2")
    assert totals(dalle) == (52, "$1.0400")
    assert ROW_ID.findall(dalle) == log.dalle[:50]
    second = await usage(gw, "?model=openai/dall-e-2&page=2")
    assert ROW_ID.findall(second) == log.dalle[50:] and "Page 2 of 2" in second
    assert 'href="/usage?model=openai%2Fdall-e-2&amp;page=1"' in second

    failed = await usage(gw, "?status=error")
    assert totals(failed) == (3, "$0.0000")
    assert ROW_ID.findall(failed) == log.errors and "The vendor refused the prompt" in failed

    assert totals(await usage(gw, f"?key={log.keys['server']}")) == (3, "$0.0000")
    playground = await usage(gw, "?key=playground")
    assert totals(playground) == (2, "$0.1000") and ROW_ID.findall(playground) == log.playground

    one_day = await usage(gw, "?from=2025-03-12&to=2025-03-12")
    assert ROW_ID.findall(one_day) == log.errors
    since = await usage(gw, "?from=2025-03-11&model=openai/gpt-image-1&status=success")
    assert totals(since) == (2, "$0.1000")

    unreadable = await usage(gw, "?from=yesterday&status=maybe")
    assert totals(unreadable) == (58, "$1.1700")
    assert "Could not read from, status" in unreadable


async def test_the_csv_holds_exactly_the_filtered_rows(any_gateway: Gateway, log: Log) -> None:
    response = await any_gateway.client.get("/usage.csv?model=openai/gpt-image-1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["id"] for r in rows] == [*log.playground, *log.errors]
    assert [r["cost_usd"] for r in rows] == ["0.0500", "0.0500", "0.0000", "0.0000", "0.0000"]
    assert {r["key"] for r in rows} == {"playground", "server"}
    assert rows[-1]["status"] == "error"
    assert rows[-1]["failure_reason"] == "The vendor refused the prompt"
    assert rows[0]["created_at"] == "2025-03-15T08:01:00Z"

    page = await usage(any_gateway, "?model=openai/gpt-image-1")
    assert 'href="/usage.csv?model=openai%2Fgpt-image-1"' in page


async def test_the_chart_shows_the_last_30_days(any_gateway: Gateway, log: Log) -> None:
    page = await usage(any_gateway)
    today = utcnow().date().isoformat()
    assert f'<td>{today}</td><td class="num">$0.0300</td><td class="num">1</td>' in page
    assert 'role="img"' in page and "Spend per day, last 30 days" in page
    assert page.count('class="chart-bar"') == 30
    assert "2025-03-10" not in page.split("</figure>")[0]  # older than 30 days


async def test_one_request_by_id_and_video_rows(any_gateway: Gateway, log: Log) -> None:
    page = await usage(any_gateway, f"?id={log.today}")
    assert ROW_ID.findall(page) == [log.today]
    assert f'<tr id="log-{log.today}" data-log-id="{log.today}" class="highlight"' in page
    assert '<span class="badge accent">video</span>' in page and 'href="/files/clip.mp4"' in page
    assert 'id="show-all"' in page

    foreign = await usage(any_gateway, f"?id={uuid.uuid4()}")
    assert ROW_ID.findall(foreign) == [] and "No request matches." in foreign


async def test_a_real_generation_shows_its_thumbnail_and_prompt(gateway: Gateway) -> None:
    assert (await sign_up(gateway.client, "thumbs@example.com")).status_code == 303
    account_id = (await gateway.client.get("/v1/account")).json()["id"]
    async with unit_of_work(gateway.res.engine) as conn:
        _, key = await accounts.create_key(conn, account_id, "thumbs")
        await ledger.grant(conn, account_id, usd_to_credits("1"), reason="test")
    made = await gateway.post(
        IMAGE, key, json={"model": "test/test", "prompt": "=1+1 a lighthouse", "size": "256x256"}
    )
    assert made.status_code == 200, made.text
    gid = made.headers["x-generation-id"]
    url = made.json()["data"][0]["url"]
    path = url.removeprefix("http://gateway.test")

    page = await usage(gateway, f"?id={gid}")
    assert f'<img class="thumb" src="{url}"' in page
    assert "=1+1 a lighthouse" in page and "thumbs</td>" in page
    assert (await gateway.client.get(path)).status_code == 200

    exported = await gateway.client.get("/usage.csv")
    [row] = list(csv.DictReader(io.StringIO(exported.text)))
    assert row["id"] == gid and row["prompt"] == "'=1+1 a lighthouse"  # no formula
    assert row["outputs"] == url and row["key"] == "thumbs"


async def test_the_former_address_redirects(gateway: Gateway) -> None:
    assert (await sign_up(gateway.client, "old@example.com")).status_code == 303
    old = await gateway.client.get("/account/logs?status=error")
    assert old.status_code == 308 and old.headers["location"] == "/usage?status=error"
    assert (await gateway.client.get("/usage.csv")).text.startswith("id,created_at,model")


async def _job(gw: Gateway, gid: str, account_id: str, state: str, **values: Any) -> None:
    now = utcnow()
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(
            insert(GenerationJob).values(
                id=gid,
                account_id=account_id,
                origin="async",
                modality="video",
                model="ir/test-video",
                state=state,
                spec={},
                deadline_at=now + timedelta(minutes=20),
                created_at=now,
                **values,
            )
        )


def _status_cell(page: str, gid: str) -> str:
    found = re.search(
        rf'<tr id="log-{gid}"[^>]*>.*?<td data-label="Status" class="log-status">(.*?)</td>',
        page,
        re.DOTALL,
    )
    assert found is not None, gid
    return found.group(1)


async def test_job_states_and_running_rows(any_gateway: Gateway) -> None:
    """The status is the job's (jobs/views.status_of); a row still queued or running links
    to the playground that follows it, asks for the refresh script, and says to refresh."""
    gw = any_gateway
    assert (await sign_up(gw.client, "jobs-usage@example.com")).status_code == 303
    account_id = (await gw.client.get("/v1/account")).json()["id"]
    now = utcnow()
    video = {"modality": "video", "model": "ir/test-video", "finished_at": None}
    queued = await _row(gw, account_id, created_at=now, status="processing", **video)
    await _job(gw, queued, account_id, "queued")
    running = await _row(gw, account_id, created_at=now, status="processing", **video)
    await _job(gw, running, account_id, "running", progress=0.4)
    cancelled = await _row(
        gw, account_id, created_at=now, status="error", error="cancelled by the client", **video
    )
    await _job(gw, cancelled, account_id, "cancelled")
    done = await _row(
        gw,
        account_id,
        created_at=now,
        output_urls=["/files/done.mp4"],
        outputs_expire_at=now + timedelta(days=1),
        **{**video, "finished_at": now},
    )
    await _job(gw, done, account_id, "succeeded")
    plain = await _row(gw, account_id, created_at=now, status="processing")  # no job row

    page = await usage(gw)
    assert '<script src="/static/usage.js" defer></script>' in page
    assert 'id="usage-live"' in page and "refresh the page" in page

    cell = _status_cell(page, queued)
    assert '<span class="badge warn">queued</span>' in cell
    assert f'href="/playground?job={queued}"' in cell and "Still queued." in cell
    assert f'href="/usage?id={queued}">refresh</a>' in cell
    assert re.search(rf'<tr id="log-{queued}"[^>]*data-job-status="queued" data-active>', page)

    cell = _status_cell(page, running)
    assert '<span class="badge warn">running</span>' in cell and "40 %" in cell

    cell = _status_cell(page, cancelled)
    assert '<span class="badge ">cancelled</span>' in cell
    assert '<span class="job-note muted">cancelled by the client</span>' in cell
    assert "Still" not in cell
    assert re.search(rf'<tr id="log-{cancelled}"[^>]*data-job-status="cancelled">', page)

    cell = _status_cell(page, done)
    assert '<span class="badge ok">succeeded</span>' in cell
    assert f'<a class="job-note" href="/playground?job={done}">Open the result</a>' in cell

    cell = _status_cell(page, plain)  # a synchronous request still running
    assert '<span class="badge warn">running</span>' in cell and "Still running." in cell

    # Once nothing runs, the page neither loads the script nor speaks of refreshing.
    quiet = await usage(gw, f"?id={done}")
    assert "usage.js" not in quiet and 'id="usage-live"' not in quiet
