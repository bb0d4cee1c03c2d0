"""The audit log's hash chain (SEC-4): appends link up, also from concurrent writers, and any
change, removal or reordering is named by `verify`, while retention purges still verify."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db.session import make_engine, unit_of_work
from image_router.db.tables import AuditEntry
from image_router.privacy import audit

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
async def engine(any_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(any_db_url)
    yield engine
    await engine.dispose()


async def append(engine: AsyncEngine, n: int, *, start: datetime = T0, **overrides: str) -> None:
    """`n` entries, one minute apart, each in its own transaction."""
    for i in range(n):
        async with unit_of_work(engine) as conn:
            values = {
                "actor_type": "operator",
                "actor_id": "alice",
                "subject_account_id": f"account-{i}",
                "action": "operator_view",
                "fields": ("email", "name"),
                "reason": f"ticket {i}",
                "request_id": f"req-{i}",
            } | overrides
            await audit.record(conn, now=start + timedelta(minutes=i), **values)  # type: ignore[arg-type]


async def verify(engine: AsyncEngine) -> audit.VerifyResult:
    async with unit_of_work(engine) as conn:
        return await audit.verify(conn)


async def listed(engine: AsyncEngine, **filters: object) -> list[audit.AuditRecord]:
    async with unit_of_work(engine) as conn:
        return await audit.entries(conn, **filters)  # type: ignore[arg-type]


async def test_an_empty_log_verifies(engine: AsyncEngine) -> None:
    result = await verify(engine)
    assert (result.ok, result.checked, result.head) == (True, 0, None)


async def test_every_entry_links_to_the_one_before(engine: AsyncEngine) -> None:
    await append(engine, 30)
    result = await verify(engine)
    assert result.ok and result.checked == 30 and not result.pruned
    rows = await listed(engine)
    assert rows[0].prev_hash == audit.GENESIS
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(rows))
    assert result.head == rows[-1].hash
    assert rows[3].fields == ("email", "name") and rows[3].created_at == T0 + timedelta(minutes=3)


async def test_concurrent_writers_on_separate_connections_form_one_chain(
    any_db_url: str,
) -> None:
    # Separate engines: separate connections, as separate server processes would have.
    engines = [make_engine(any_db_url) for _ in range(20)]

    async def writer(engine: AsyncEngine, i: int) -> None:
        for j in range(3):
            async with unit_of_work(engine) as conn:
                await audit.record(
                    conn,
                    actor_type="system",
                    actor_id=f"worker-{i}",
                    subject_account_id=None,
                    action="export",
                    reason=f"round {j}",
                )

    try:
        await asyncio.gather(*(writer(e, i) for i, e in enumerate(engines)))
        result = await verify(engines[0])
        rows = await listed(engines[0])
    finally:
        for engine in engines:
            await engine.dispose()
    assert result.ok, result.problem
    assert result.checked == len(rows) == 60
    # No fork: no two entries claim the same predecessor.
    assert len({row.prev_hash for row in rows}) == 60


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("reason", "'nothing to see'"),
        ("action", "'export'"),
        ("actor_id", "'mallory'"),
        ("subject_account_id", "'account-9'"),
        ("fields", "'email'"),
        ("request_id", "NULL"),
        ("hash", "'" + "f" * 64 + "'"),
    ],
)
async def test_changing_any_column_of_an_entry_is_named(
    engine: AsyncEngine, column: str, value: str
) -> None:
    await append(engine, 5)
    third = (await listed(engine))[2].id
    async with unit_of_work(engine) as conn:
        await conn.execute(text(f"UPDATE audit_log SET {column} = {value} WHERE id = {third}"))
    result = await verify(engine)
    assert not result.ok
    assert result.first_bad_id == third
    assert "changed" in (result.problem or "")


async def test_changing_an_entrys_time_is_named(engine: AsyncEngine) -> None:
    await append(engine, 5)
    third = (await listed(engine))[2].id
    async with unit_of_work(engine) as conn:
        await conn.execute(
            update(AuditEntry)
            .where(AuditEntry.id == third)
            .values(created_at=T0 - timedelta(days=1))
        )
    assert (await verify(engine)).first_bad_id == third


async def test_removing_an_entry_in_the_middle_is_named(engine: AsyncEngine) -> None:
    await append(engine, 5)
    ids = [row.id for row in await listed(engine)]
    async with unit_of_work(engine) as conn:
        await conn.execute(text(f"DELETE FROM audit_log WHERE id = {ids[2]}"))
    result = await verify(engine)
    assert not result.ok and result.first_bad_id == ids[3]
    assert "removed" in (result.problem or "")
    assert result.checked == 2


async def test_swapping_two_entries_is_named(engine: AsyncEngine) -> None:
    await append(engine, 4)
    first, second = (await listed(engine))[1:3]
    async with unit_of_work(engine) as conn:
        for row, other in ((first, second), (second, first)):
            await conn.execute(
                update(AuditEntry)
                .where(AuditEntry.id == row.id)
                .values(reason=other.reason, subject_account_id=other.subject_account_id)
            )
    assert (await verify(engine)).first_bad_id == first.id


async def test_removing_the_oldest_entries_outside_retention_is_named(
    engine: AsyncEngine,
) -> None:
    await append(engine, 4)
    ids = [row.id for row in await listed(engine)]
    async with unit_of_work(engine) as conn:
        await conn.execute(text(f"DELETE FROM audit_log WHERE id <= {ids[1]}"))
    result = await verify(engine)
    assert not result.ok and result.first_bad_id == ids[2]
    assert "no retention purge" in (result.problem or "")


async def test_a_retention_purge_removes_a_prefix_and_the_rest_still_verifies(
    engine: AsyncEngine,
) -> None:
    await append(engine, 10)
    ids = [row.id for row in await listed(engine)]
    async with unit_of_work(engine) as conn:
        removed = await audit.purge_before(conn, T0 + timedelta(minutes=4, seconds=30))
    assert removed == 5
    result = await verify(engine)
    assert result.ok and result.pruned, result.problem
    remaining = await listed(engine)
    assert [row.id for row in remaining[:5]] == ids[5:]
    assert remaining[-1].action == audit.PURGED and remaining[-1].actor_type == "system"
    # A second purge moves the anchor on; removing more by hand is still caught.
    async with unit_of_work(engine) as conn:
        assert await audit.purge_before(conn, T0 + timedelta(minutes=7, seconds=30)) == 3
    assert (await verify(engine)).ok
    async with unit_of_work(engine) as conn:
        await conn.execute(text(f"DELETE FROM audit_log WHERE id = {ids[8]}"))
    assert (await verify(engine)).first_bad_id == ids[9]


async def test_a_purge_deletes_only_a_prefix_and_never_the_newest(engine: AsyncEngine) -> None:
    # Out-of-order times (appends from clocks that differ slightly): the entry after a
    # recent one stays even though it is older than the cutoff.
    for minutes in (0, 10, 1):
        await append(engine, 1, start=T0 + timedelta(minutes=minutes))
    ids = [row.id for row in await listed(engine)]
    async with unit_of_work(engine) as conn:
        assert await audit.purge_before(conn, T0 + timedelta(minutes=5), now=T0) == 1
    remaining = await listed(engine)
    assert [row.id for row in remaining[:2]] == ids[1:]
    async with unit_of_work(engine) as conn:  # everything is old: the newest entry stays
        assert await audit.purge_before(conn, T0 + timedelta(days=1)) == 2
    assert (await listed(engine))[0].id == remaining[-1].id
    assert (await verify(engine)).ok


async def test_a_purge_in_batches_removes_at_most_a_batch(engine: AsyncEngine) -> None:
    await append(engine, 6)
    cutoff = T0 + timedelta(hours=1)
    async with unit_of_work(engine) as conn:
        assert await audit.purge_before(conn, cutoff, batch=2) == 2
    async with unit_of_work(engine) as conn:
        assert await audit.purge_before(conn, cutoff, batch=2) == 2
    assert (await verify(engine)).ok


async def test_entries_filter_by_subject_time_and_action(engine: AsyncEngine) -> None:
    await append(engine, 6)
    await append(engine, 1, action="restriction_set", start=T0 + timedelta(hours=1))
    assert [e.subject_account_id for e in await listed(engine, subject="account-2")] == [
        "account-2"
    ]
    window = await listed(engine, since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=4))
    assert [e.reason for e in window] == ["ticket 2", "ticket 3"]
    assert [e.action for e in await listed(engine, action="restriction_set")] == ["restriction_set"]


async def test_the_log_refuses_values_in_place_of_field_names(engine: AsyncEngine) -> None:
    async with unit_of_work(engine) as conn:
        with pytest.raises(ValueError, match="never holds values") as raised:
            await audit.record(
                conn,
                actor_type="operator",
                actor_id="alice",
                subject_account_id="account-1",
                action="operator_view",
                fields=("ada@example.com",),
            )
        assert "ada" not in str(raised.value)
        with pytest.raises(ValueError, match="actor_type"):
            await audit.record(
                conn, actor_type="root", actor_id=None, subject_account_id=None, action="x"
            )
    assert await listed(engine) == []
