"""Webhook events are at-least-once (the outbox, docs/webhooks.md "How it works"): a hold
the reconciler releases is told, an event whose recording failed after the settle (the
database down) is recorded by the sweeper, and neither path records an event twice.

Real HTTP to the webhook receiver fake, the `standardwebhooks` library verifying, on
SQLite and PostgreSQL; the delivery runner and the sweeper run when the test says.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from image_router.account.service import Caller
from image_router.generation.recovery import ABANDONED, release_expired_holds
from image_router.generation.validation import validate_image
from image_router.kit.clock import utcnow
from image_router.webhooks.events import SWEEP_AFTER, SWEPT_ERROR_CODE
from tests.integration.webhook_helpers import IMAGE, OTHER, Hooks, hooks_gateway

PAID = {"model": "openai/dall-e-2", "prompt": "a lighthouse", "size": "1024x1024"}


@pytest.fixture
async def any_hooks(any_db_url: str, tmp_path: Path) -> AsyncIterator[Hooks]:
    async for made in hooks_gateway(any_db_url, tmp_path):
        yield made


def _later() -> Any:
    """A clock past the sweeper's wait: what it sees on its first pass after the close."""
    return utcnow() + SWEEP_AFTER + timedelta(seconds=1)


async def _request_secret(hooks: Hooks, key: str) -> str:
    response = await hooks.gw.client.get(
        "/v1/webhooks/default/secret", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    secret: str = response.json()["key"]
    return secret


async def _marks(hooks: Hooks) -> list[dict[str, Any]]:
    return await hooks.gw.rows("SELECT id, status, events_pending, webhook_url FROM generations")


async def test_a_hold_the_reconciler_releases_is_told_exactly_once(any_hooks: Hooks) -> None:
    gw = any_hooks.gw
    account, key = await gw.account("1")
    endpoint = await any_hooks.register(key)
    # What a worker killed mid-generation leaves: a hold taken by the real hot path (its
    # usage row marked for events, with the request's own webhook), and nothing after.
    request = validate_image(PAID | {"webhook_url": OTHER}, gw.res.catalog, enabled=gw.res.enabled)
    caller = Caller(account_id=account, balance=await gw.balance(account), api_key_id=None)
    accepted = await gw.res.generator.accept(caller, request, client_ip=None)
    assert await gw.balance(account) < 10_000
    opened = {"id": accepted.generation_id, "status": "processing"}
    assert await _marks(any_hooks) == [opened | {"events_pending": True, "webhook_url": OTHER}]
    # A processing row is nobody's event yet.
    assert await gw.res.webhooks.events.sweep(now=_later()) == 0

    assert await release_expired_holds(gw.res.engine, grace=timedelta(seconds=-3600)) == 1
    assert await gw.balance(account) == 10_000
    assert await gw.ledger_sum(account) == 10_000
    # Not before the sweeper's wait (the releasing process would be recording it).
    assert await gw.res.webhooks.events.sweep() == 0
    # Several workers sweeping at once record it once.
    await asyncio.gather(*(gw.res.webhooks.events.sweep(now=_later()) for _ in range(3)))
    assert await gw.res.webhooks.events.sweep(now=_later()) == 0
    assert await any_hooks.run() == 2  # the endpoint and the request's webhook_url
    assert await any_hooks.run() == 0

    by_path = {r.path: r for r in any_hooks.receiver.requests}
    assert sorted(by_path) == ["/receiver/hook", "/receiver/other"]
    event = any_hooks.receiver.verified(endpoint["secret"], by_path["/receiver/hook"])
    own = any_hooks.receiver.verified(
        await _request_secret(any_hooks, key), by_path["/receiver/other"]
    )
    assert own == event
    assert event["type"] == "generation.failed"
    data = event["data"]
    assert data["id"] == accepted.generation_id
    assert (data["status"], data["cost"], data["data"]) == ("error", 0, [])
    assert data["model"] == "openai/dall-e-2"
    # The error the usage row records.
    assert data["error"] == {
        "message": ABANDONED,
        "type": "generation_error",
        "code": SWEPT_ERROR_CODE,
    }
    assert len(await any_hooks.deliveries(key)) == 2
    # The mark and the request's webhook URL are gone with the recording.
    closed = {"id": accepted.generation_id, "status": "error"}
    assert await _marks(any_hooks) == [closed | {"events_pending": None, "webhook_url": None}]


async def test_an_event_lost_to_a_database_failure_after_the_settle_is_swept(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    account, key = await gw.account("1")
    endpoint = await any_hooks.register(key)
    # The database goes away between the settle and the recording: the events are given
    # an engine whose server refuses connections (nothing listens on port 9).
    down = create_async_engine("postgresql+asyncpg://postgres@127.0.0.1:9/down")
    try:
        events = gw.res.webhooks.events
        gw.res.generator = replace(gw.res.generator, events=replace(events, engine=down))
        answer = await gw.post(IMAGE, key, json=PAID)
    finally:
        await down.dispose()
    assert answer.status_code == 200, answer.text  # the answer and the charge stand
    charged = 10_000 - await gw.balance(account)
    assert charged > 0 and await gw.ledger_sum(account) == await gw.balance(account)
    assert await gw.rows("SELECT id FROM webhook_deliveries") == []
    assert [m["events_pending"] for m in await _marks(any_hooks)] == [True]

    assert await events.sweep(now=_later()) == 1
    assert await events.sweep(now=_later()) == 0
    assert await any_hooks.run() == 1
    assert await any_hooks.run(now=_later() + timedelta(days=2)) == 0
    assert len(any_hooks.receiver.requests) == 1
    event = any_hooks.receiver.verified(endpoint["secret"])
    assert event["type"] == "generation.completed"
    data = event["data"]
    assert data["id"] == answer.headers["x-generation-id"]
    assert data["status"] == "success" and data["error"] is None
    assert data["cost"] == answer.json()["cost"]
    assert data["latency"] == answer.json()["latency"]
    assert data["data"] == [{"url": item["url"]} for item in answer.json()["data"]]
    assert [m["events_pending"] for m in await _marks(any_hooks)] == [None]


async def test_the_normal_path_records_once_and_the_sweeper_finds_nothing(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    _, key = await gw.account("1")
    await any_hooks.register(key)
    ok = await gw.post(IMAGE, key, json=PAID)
    assert ok.status_code == 200, ok.text
    gw.openai.fail_next(500)
    failed = await gw.post(IMAGE, key, json=PAID | {"webhook_url": OTHER})
    assert failed.status_code == 502
    assert await gw.res.webhooks.events.sweep(now=_later()) == 0
    assert await any_hooks.run() == 3  # two events to the endpoint, one to the webhook_url
    types = sorted(d["event_type"] for d in await any_hooks.deliveries(key))
    assert types == ["generation.completed", "generation.failed", "generation.failed"]
    assert {(m["events_pending"], m["webhook_url"]) for m in await _marks(any_hooks)} == {
        (None, None)
    }


async def test_an_account_known_to_have_no_endpoint_marks_nothing(any_hooks: Hooks) -> None:
    gw = any_hooks.gw
    account, key = await gw.account("1")
    events = gw.res.webhooks.events
    assert events.expects(account, None)  # nothing known yet: the first is marked
    first = await gw.post(IMAGE, key, json=PAID)
    assert first.status_code == 200, first.text
    # Its recording found no endpoint and cleared the mark; the account is now known to
    # have none, so the next hold is opened unmarked (no query at all), unless the
    # request names its own webhook.
    assert not events.expects(account, None)
    assert events.expects(account, OTHER)
    second = await gw.post(IMAGE, key, json=PAID)
    assert second.status_code == 200, second.text
    marks = {m["id"]: m["events_pending"] for m in await _marks(any_hooks)}
    assert marks == {
        first.headers["x-generation-id"]: None,
        second.headers["x-generation-id"]: None,
    }
    assert await gw.res.webhooks.events.sweep(now=_later()) == 0
    assert await gw.rows("SELECT id FROM webhook_deliveries") == []


async def test_the_delivery_loop_sweeps_first_and_sends_in_the_same_pass(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    account, key = await gw.account("1")
    endpoint = await any_hooks.register(key)
    request = validate_image(PAID, gw.res.catalog, enabled=gw.res.enabled)
    caller = Caller(account_id=account, balance=await gw.balance(account), api_key_id=None)
    accepted = await gw.res.generator.accept(caller, request, client_ip=None)
    assert await release_expired_holds(gw.res.engine, grace=timedelta(seconds=-3600)) == 1

    stop = asyncio.Event()
    swept: list[int] = []

    async def sweep() -> int:
        swept.append(await gw.res.webhooks.events.sweep(now=_later()))
        stop.set()  # one pass
        return swept[-1]

    runner = gw.res.webhooks.runner
    await asyncio.wait_for(runner.run_periodically(60.0, stop, lambda: runner, sweep=sweep), 30)
    assert swept == [1]
    assert len(any_hooks.receiver.requests) == 1
    event = any_hooks.receiver.verified(endpoint["secret"])
    assert (event["type"], event["data"]["id"]) == ("generation.failed", accepted.generation_id)
