"""`db.group_commit` with a scripted connection: statements that queue while a batch is in
flight go together, each gets its own answer, a failed batch is retried one by one, a lost
connection is not retried, and a caller that leaves takes nothing with it; on SQLite, the
units of a batch share one transaction and each fails or is undone alone."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest

from image_router.db import group_commit as module
from image_router.db.group_commit import (
    FLIGHTS,
    MAX_BATCH,
    GroupCommit,
    Undo,
    _Failed,
    _run_each,
    _send_pg,
)
from image_router.db.outage import DatabaseUnreachable


class Connection:
    """Answers `fetchmany` with one row per args after `delay`, failing as `fail` says."""

    def __init__(self, fail: Callable[[list[Sequence[Any]]], BaseException | None]) -> None:
        self.fail = fail
        self.batches: list[list[Sequence[Any]]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetchmany(self, sql: str, args: Any) -> list[tuple[Any]]:
        batch = list(args)
        self.batches.append(batch)
        await self.gate.wait()
        error = self.fail(batch)
        if error is not None:
            raise error
        return [(f"{sql}:{a[0]}",) for a in batch]


@pytest.fixture
def connection(monkeypatch: pytest.MonkeyPatch) -> Connection:
    conn = Connection(lambda batch: None)

    @asynccontextmanager
    async def pg_connection(_engine: Any) -> AsyncIterator[Connection]:
        yield conn

    monkeypatch.setattr(module, "pg_connection", pg_connection)
    return conn


def pg_group() -> GroupCommit:
    return GroupCommit(partial(_send_pg, None), FLIGHTS)


async def occupy(group: GroupCommit, connection: Connection) -> list[asyncio.Future[Any]]:
    """Every flight waiting on a round trip (held by the closed gate), one statement each."""
    connection.gate.clear()
    flights = []
    for _ in range(FLIGHTS):
        flights.append(asyncio.ensure_future(group.submit("q", ["first"], order="0")))
        for _ in range(3):
            await asyncio.sleep(0)
    assert connection.batches == [[["first"]]] * FLIGHTS
    return flights


async def test_a_lone_statement_goes_at_once(connection: Connection) -> None:
    group = pg_group()
    assert await group.submit("q", ["a"], order="a") == "q:a"
    assert connection.batches == [[["a"]]]


async def test_statements_queued_behind_a_batch_go_together_in_account_order(
    connection: Connection,
) -> None:
    group = pg_group()
    first = await occupy(group, connection)
    later = [
        asyncio.ensure_future(group.submit("q", [name], order=name)) for name in ("c", "a", "b")
    ]
    await asyncio.sleep(0)
    connection.gate.set()
    assert await asyncio.gather(*later) == ["q:c", "q:a", "q:b"]
    await asyncio.gather(*first)
    # The three that waited went in one batch, sorted by their order key.
    assert connection.batches[FLIGHTS:] == [[["a"], ["b"], ["c"]]]


async def test_a_batch_holds_at_most_max_batch_statements(connection: Connection) -> None:
    group = pg_group()
    first = await occupy(group, connection)
    calls = [group.submit("q", [i], order=f"{i:04}") for i in range(2 * MAX_BATCH + 1)]
    answers = asyncio.gather(*calls)
    await asyncio.sleep(0)
    connection.gate.set()
    assert len(await answers) == len(calls)
    await asyncio.gather(*first)
    assert max(len(batch) for batch in connection.batches) == MAX_BATCH
    assert sum(len(batch) for batch in connection.batches) == len(calls) + FLIGHTS


async def test_a_failed_batch_is_retried_one_by_one(connection: Connection) -> None:
    # The batch fails because of one statement ("bad"): the others still succeed.
    connection.fail = lambda batch: ValueError("bad value") if ["bad"] in batch else None
    group = pg_group()
    first = await occupy(group, connection)
    outcomes = asyncio.gather(
        *(group.submit("q", [v], order=v) for v in ("a", "bad", "c")), return_exceptions=True
    )
    await asyncio.sleep(0)
    connection.gate.set()
    a, bad, c = await outcomes
    await asyncio.gather(*first)
    assert (a, c) == ("q:a", "q:c")
    assert isinstance(bad, ValueError)
    assert [["a"], ["bad"], ["c"]] in connection.batches  # the batch, then each alone
    assert connection.batches[-3:] == [[["a"]], [["bad"]], [["c"]]]


async def test_a_lost_connection_fails_the_batch_without_a_retry(connection: Connection) -> None:
    lost = DatabaseUnreachable("the database connection was lost")
    connection.fail = lambda batch: lost
    group = pg_group()
    outcomes = await asyncio.gather(
        *(group.submit("q", [v], order=v) for v in "abcd"), return_exceptions=True
    )
    assert outcomes == [lost] * 4
    # Retrying could commit twice: each statement was sent once, no more.
    assert sum(len(batch) for batch in connection.batches) == 4


async def test_a_caller_that_leaves_does_not_cancel_the_others(connection: Connection) -> None:
    group = pg_group()
    blockers = await occupy(group, connection)
    leaving = asyncio.ensure_future(group.submit("q", ["a"], order="a"))
    staying = asyncio.ensure_future(group.submit("q", ["b"], order="b"))
    await asyncio.sleep(0)
    leaving.cancel()
    connection.gate.set()
    assert await staying == "q:b"
    await asyncio.gather(*blockers)
    assert leaving.cancelled()
    assert [["a"], ["b"]] in connection.batches  # it was still sent


async def test_a_statement_queued_as_the_last_flight_ends_is_sent(connection: Connection) -> None:
    group = pg_group()
    for round_ in range(20):
        answers = await asyncio.gather(*(group.submit("q", [i], order="a") for i in range(5)))
        assert answers == [f"q:{i}" for i in range(5)], round_
        await asyncio.sleep(0)


def test_sqlite_units_share_one_transaction_and_fail_alone() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.commit()

    def writes(value: str, then: BaseException | None = None) -> Callable[[Any], Any]:
        def unit(c: sqlite3.Connection) -> str:
            c.execute("INSERT INTO t VALUES (?)", (value,))
            if then is not None:
                raise then
            return value

        return unit

    broken = ValueError("broken")
    answers = _run_each(
        conn, [writes("a"), writes("undone", Undo("refused")), writes("b", broken), writes("c")]
    )
    assert answers[:2] == ["a", "refused"]
    assert isinstance(answers[2], _Failed) and answers[2].error is broken
    assert answers[3] == "c"
    assert not conn.in_transaction  # committed
    assert sorted(v for (v,) in conn.execute("SELECT v FROM t")) == ["a", "c"]


def test_sqlite_refuses_a_connection_with_an_open_transaction() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.execute("INSERT INTO t VALUES ('someone else''s')")
    with pytest.raises(RuntimeError, match="open transaction"):
        _run_each(conn, [lambda c: None])
    assert conn.in_transaction  # left as it was


async def test_a_lost_connection_during_the_retry_fails_only_the_statement_it_hit(
    connection: Connection,
) -> None:
    # The batch fails ("bad"); sent again alone, "a" commits, "lost" meets a lost
    # connection, "c" commits: "a" and "c" must be told they committed.
    lost = DatabaseUnreachable("the database connection was lost")

    def fail(batch: list[Sequence[Any]]) -> BaseException | None:
        if len(batch) > 1:
            return ValueError("bad value")
        return lost if batch == [["lost"]] else None

    connection.fail = fail
    group = pg_group()
    first = await occupy(group, connection)
    outcomes = asyncio.gather(
        *(group.submit("q", [v], order=v) for v in ("a", "lost", "c")), return_exceptions=True
    )
    await asyncio.sleep(0)
    connection.gate.set()
    assert await outcomes == ["q:a", lost, "q:c"]
    await asyncio.gather(*first)
