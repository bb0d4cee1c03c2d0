"""A client hanging up is normal: at each stage of a generation (taking the hold, the
vendor call, the settle) it logs one INFO line with the request id, never an ERROR or a
traceback, and it leaves no hold behind. Before the credit is held the request is
abandoned (released, not charged); once it is held, the generation runs on as a job that
completes, is charged and can be fetched at /v1/jobs/{id} (docs/jobs.md).

The requests are driven as a server drives the application (raw ASGI), so a hang-up is a
real `http.disconnect` message at a chosen moment and an exception escaping the
application (which uvicorn logs as "Exception in ASGI application") is seen here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
import pytest

from image_router.ledger import direct
from image_router.observability.logging import RequestIdFilter
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
DALLE2 = {"model": "openai/dall-e-2", "size": "1024x1024", "prompt": "a lighthouse"}
DALLE2_PRICE = 160  # credits: $0.016


class Records(logging.Handler):
    """Every log record of the run, stamped with its request id like the real handler."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.addFilter(RequestIdFilter())
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


class HangingClient:
    """Sends its body, then hangs up when told (`gone`); records what it was sent."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.gone = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self._body_sent = False

    async def receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


def scope(key: str, body: bytes, rid: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": IMAGE,
        "raw_path": IMAGE.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"gateway.test"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"authorization", f"Bearer {key}".encode()),
            (b"x-request-id", rid.encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("gateway.test", 80),
    }


class Gate:
    """Stops a step of the generation until the test opens it; says when it was reached."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.open = asyncio.Event()

    async def pass_through(self) -> None:
        self.reached.set()
        await self.open.wait()


async def hang_up(
    gw: Gateway, key: str, rid: str, reached: Callable[[], Awaitable[None]], gate: Gate | None
) -> HangingClient:
    """POST a generation, hang up once `reached` returns, open `gate`; the app must end
    without an exception."""
    app = gw.client._transport.app  # type: ignore[attr-defined]  # httpx.ASGITransport
    body = orjson.dumps(DALLE2)
    client = HangingClient(body)
    served = asyncio.ensure_future(app(scope(key, body, rid), client.receive, client.send))
    await asyncio.wait_for(reached(), 10)
    client.gone.set()
    await asyncio.sleep(0.05)  # the disconnect watcher cancels the generation
    if gate is not None:
        gate.open.set()
    await asyncio.wait_for(served, 10)  # raised here before: CancelledError
    return client


def disconnect_lines(records: Records, rid: str) -> list[logging.LogRecord]:
    return [
        r
        for r in records.records
        if r.levelno >= logging.INFO
        and "client disconnected" in r.getMessage()
        and getattr(r, "request_id", None) == rid
    ]


async def assert_no_hold_left(gw: Gateway, account: str, balance: int) -> None:
    assert await gw.balance(account) == balance == await gw.ledger_sum(account)
    assert await gw.rows("SELECT id FROM generations WHERE status = 'processing'") == []


async def test_a_hang_up_while_the_hold_is_taken(
    gateway: Gateway, records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    account, key = await gateway.account("1.00")
    gate = Gate()
    real_hold = direct.take_hold  # the request path's hold (one round trip)

    async def slow_hold(*args: Any, **kwargs: Any) -> Any:
        await gate.pass_through()
        return await real_hold(*args, **kwargs)

    monkeypatch.setattr(direct, "take_hold", slow_hold)

    await hang_up(gateway, key, "rid-hold", gate.reached.wait, gate)

    assert [r for r in records.records if r.levelno >= logging.ERROR] == []
    [line] = disconnect_lines(records, "rid-hold")
    assert line.levelno == logging.INFO and line.exc_info is None
    assert f"while its hold was taken; released {DALLE2_PRICE} held credits" in line.getMessage()
    await assert_no_hold_left(gateway, account, 10_000)
    assert gateway.openai.requests == []  # the vendor was never called
    [row] = await gateway.rows("SELECT status FROM generations")
    assert row["status"] == "error"


async def finished(gw: Gateway) -> dict[str, Any]:
    """The one generation, once it left `processing` (it runs on after the hang-up)."""
    for _ in range(1000):
        [row] = await gw.rows("SELECT id, status, cost FROM generations")
        if row["status"] != "processing":
            return row
        await asyncio.sleep(0.01)
    raise AssertionError("the generation never finished")


async def test_a_hang_up_during_the_vendor_call(gateway: Gateway, records: Records) -> None:
    account, key = await gateway.account("1.00")
    gateway.openai.hang_next(0.5)

    async def vendor_called() -> None:
        # The fake records the request before it stalls; there is no event to wait on.
        for _ in range(1000):
            if gateway.openai.requests:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the vendor was never called")

    await hang_up(gateway, key, "rid-vendor", vendor_called, None)

    # The vendor call goes on: the image is made, charged once, and kept as a job.
    row = await finished(gateway)
    assert row["status"] == "success" and row["cost"] == DALLE2_PRICE
    assert [r for r in records.records if r.levelno >= logging.ERROR] == []
    [line] = disconnect_lines(records, "rid-vendor")
    assert line.levelno == logging.INFO and line.exc_info is None
    assert "client disconnected; it runs on as a job" in line.getMessage()
    await assert_no_hold_left(gateway, account, 10_000 - DALLE2_PRICE)
    job = await gateway.client.get(
        f"/v1/jobs/{row['id']}", headers={"Authorization": f"Bearer {key}"}
    )
    assert job.json()["status"] == "succeeded" and job.json()["cost"] == 0.016
    assert len(job.json()["data"]) == 1
    listed = await gateway.client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
    assert [j["id"] for j in listed.json()["data"]] == [row["id"]]


async def test_a_hang_up_during_the_settle(
    gateway: Gateway, records: Records, monkeypatch: pytest.MonkeyPatch
) -> None:
    account, key = await gateway.account("1.00")
    gate = Gate()
    real_finish = direct.close_hold  # the request path's settle (one round trip)

    async def slow_finish(*args: Any, **kwargs: Any) -> Any:
        if args[3]["status"] == "success":
            await gate.pass_through()
        return await real_finish(*args, **kwargs)

    monkeypatch.setattr(direct, "close_hold", slow_finish)

    await hang_up(gateway, key, "rid-settle", gate.reached.wait, gate)

    # The image was made: it is charged once, and nothing stays held.
    row = await finished(gateway)
    assert row["status"] == "success" and row["cost"] == DALLE2_PRICE
    assert [r for r in records.records if r.levelno >= logging.ERROR] == []
    [line] = disconnect_lines(records, "rid-settle")
    assert line.levelno == logging.INFO and line.exc_info is None
    assert "client disconnected; it runs on as a job" in line.getMessage()
    await assert_no_hold_left(gateway, account, 10_000 - DALLE2_PRICE)
