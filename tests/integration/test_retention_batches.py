"""RET-1: the purge works in bounded batches, several purgers at once purge each row once,
and the server's periodic loop purges on its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db.session import make_engine, unit_of_work
from image_router.db.tables import Consent, StripeEvent, WebSession
from image_router.kit.clock import utcnow
from image_router.privacy import audit
from image_router.privacy.retention import PurgeReport, RetentionPolicy, purge
from tests.conftest import Gateway
from tests.integration.test_retention import DAY, PROMPT, SECOND, count, run_purge, usage_row


@contextmanager
def rows_changed_per_transaction(engine: AsyncEngine) -> Iterator[list[int]]:
    """How many rows each committed transaction updated or deleted, in commit order."""
    committed: list[int] = []
    pending = [0]

    def after_execute(_conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("UPDATE", "DELETE")):
            pending[0] += max(cursor.rowcount, 0)

    def on_commit(_conn: Any) -> None:
        committed.append(pending[0])
        pending[0] = 0

    def on_rollback(_conn: Any) -> None:
        pending[0] = 0

    sync = engine.sync_engine
    event.listen(sync, "after_cursor_execute", after_execute)
    event.listen(sync, "commit", on_commit)
    event.listen(sync, "rollback", on_rollback)
    try:
        yield committed
    finally:
        event.remove(sync, "after_cursor_execute", after_execute)
        event.remove(sync, "commit", on_commit)
        event.remove(sync, "rollback", on_rollback)


async def test_every_transaction_touches_at_most_one_batch(any_gateway: Gateway) -> None:
    account, _ = await any_gateway.account()
    t = utcnow()
    for _ in range(5):
        await usage_row(
            any_gateway,
            account,
            t,
            prompt=PROMPT,
            content_expires_at=t + 30 * DAY,
            ip="192.0.2.1",
            outputs=1,
            outputs_expire_at=t + DAY,
        )
    async with unit_of_work(any_gateway.res.engine) as conn:
        for i in range(5):
            await conn.execute(
                insert(WebSession).values(
                    id=f"s{i}",
                    account_id=account,
                    csrf_token="c",
                    created_at=t,
                    expires_at=t,
                    last_seen_at=t,
                    reauthenticated_at=t,
                )
            )
            await conn.execute(
                insert(StripeEvent).values(event_id=f"evt_{i}", type="x", received_at=t)
            )
            await conn.execute(
                insert(Consent).values(
                    consent_id=f"visitor-{i}",
                    purpose="analytics_cookies",
                    granted=True,
                    source="banner",
                    created_at=t,
                )
            )
            await audit.record(
                conn,
                actor_type="system",
                actor_id="test",
                subject_account_id=None,
                action="user.show",
                now=t + i * SECOND,
            )

    with rows_changed_per_transaction(any_gateway.res.engine) as changed:
        report = await run_purge(any_gateway, t + 4 * 365 * DAY, batch_size=2)
    assert {k: v for k, v in report.counts().items() if v} == {
        "prompts": 5,
        "outputs": 5,
        "output_files": 5,
        "client_ips": 5,
        "web_sessions": 5,
        "usage_rows": 5,
        "stripe_events": 5,
        "audit_entries": 5,
        "consents": 5,
    }
    assert max(changed) == 2
    # 8 categories of 5 rows each (output files are not rows), 2 at a time: 3 transactions
    # each that change something.
    assert len([n for n in changed if n]) == 8 * 3
    assert await any_gateway.generations() == []
    for table in ("web_sessions", "stripe_events", "consents"):
        assert await count(any_gateway, table) == 0


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_concurrent_purgers_purge_each_row_once(
    any_gateway: Gateway, batch_size: int
) -> None:
    account, _ = await any_gateway.account()
    t = utcnow()
    names = []
    for _ in range(12):
        gid = await usage_row(
            any_gateway,
            account,
            t,
            prompt=PROMPT,
            content_expires_at=t + DAY,
            outputs=1,
            outputs_expire_at=t + DAY,
        )
        names.append(f"{gid}-0.png")
    # Two workers: each its own engine (connection pool), as two processes would have.
    url = any_gateway.res.settings.storage.resolved_database_url()
    engines = [make_engine(url), make_engine(url)]
    try:
        policy = RetentionPolicy(batch_size=batch_size)
        reports: list[PurgeReport] = await asyncio.gather(
            *(purge(e, any_gateway.res.store, policy, now=t + 2 * DAY) for e in engines)
        )
    finally:
        for engine in engines:
            await engine.dispose()
    assert [r.failed for r in reports] == [[], []]
    assert sum(r.prompts for r in reports) == 12
    assert sum(r.outputs for r in reports) == 12
    if engines[0].dialect.name == "postgresql":
        # Claimed rows are locked: no file is even deleted twice.
        assert sum(r.output_files for r in reports) == 12
    for stored in await any_gateway.generations():
        assert stored["prompt"] is None and stored["output_keys"] == []
    for name in names:
        assert await any_gateway.res.store.get(name) is None


@pytest.mark.parametrize("gateway_overrides", [{"purge_interval_s": 0.2}])
async def test_the_server_purges_periodically(gateway: Gateway) -> None:
    account, _ = await gateway.account()
    now = utcnow()
    gid = await usage_row(
        gateway,
        account,
        now - 40 * DAY,
        prompt=PROMPT,
        content_expires_at=now - 10 * DAY,
        ip="192.0.2.9",
        outputs=1,
        outputs_expire_at=now - 39 * DAY,
    )
    fresh = await usage_row(
        gateway,
        account,
        now,
        prompt=PROMPT,
        content_expires_at=now + 30 * DAY,
        outputs=1,
        outputs_expire_at=now + DAY,
    )
    name = f"{gid}-0.png"
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        rows = {r["id"]: r for r in await gateway.generations()}
        if rows[gid]["prompt"] is None and rows[gid]["ip"] is None:
            break
        assert asyncio.get_running_loop().time() < deadline, "the periodic purge did not run"
        await asyncio.sleep(0.1)
    assert rows[gid]["output_keys"] == []
    assert await gateway.res.store.get(name) is None
    assert rows[fresh]["prompt"] == PROMPT
    assert await gateway.res.store.get(f"{fresh}-0.png") is not None


async def test_a_dry_run_counts_and_changes_nothing(any_gateway: Gateway) -> None:
    account, _ = await any_gateway.account()
    t = utcnow()
    gid = await usage_row(
        any_gateway,
        account,
        t,
        prompt=PROMPT,
        content_expires_at=t + 30 * DAY,
        ip="192.0.2.1",
        outputs=2,
        outputs_expire_at=t + DAY,
    )
    async with unit_of_work(any_gateway.res.engine) as conn:
        for i in range(3):
            await audit.record(
                conn,
                actor_type="system",
                actor_id="test",
                subject_account_id=None,
                action="user.show",
                now=t + i * SECOND,
            )
    before = await any_gateway.generations()
    later = t + 3 * 365 * DAY
    dry = await purge(
        any_gateway.res.engine, any_gateway.res.store, RetentionPolicy(), now=later, dry_run=True
    )
    assert dry.dry_run and dry.failed == []
    assert await any_gateway.generations() == before
    assert await count(any_gateway, "audit_log") == 3
    assert await any_gateway.res.store.get(f"{gid}-1.png") is not None
    # What the dry run announced is what the real run then does (usage rows aside: the
    # real run deletes them only once their outputs are gone, in the same pass).
    real = await run_purge(any_gateway, later)
    assert dry.counts() | {"usage_rows": 1} == real.counts()
    assert dry.counts()["audit_entries"] == 2  # never the newest entry


async def test_stopping_ends_a_pass_between_batches(any_gateway: Gateway) -> None:
    account, _ = await any_gateway.account()
    t = utcnow()
    for _ in range(4):
        await usage_row(any_gateway, account, t, prompt=PROMPT, content_expires_at=t)
    stop = asyncio.Event()

    def stop_after_a_change(_conn: Any) -> None:
        if changed and changed[-1]:
            stop.set()  # as the server's shutdown would, mid-pass

    engine = any_gateway.res.engine
    with rows_changed_per_transaction(engine) as changed:
        event.listen(engine.sync_engine, "commit", stop_after_a_change)
        try:
            report = await purge(
                engine,
                any_gateway.res.store,
                RetentionPolicy(batch_size=1),
                now=t + timedelta(hours=1),
                stop=stop,
            )
        finally:
            event.remove(engine.sync_engine, "commit", stop_after_a_change)
    assert report.prompts == 1  # one batch, then it stopped
    prompts = [r["prompt"] for r in await any_gateway.generations()]
    assert sorted(prompts, key=str) == [None, PROMPT, PROMPT, PROMPT]
