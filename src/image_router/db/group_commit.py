"""Group commit: the money statements of many requests in one round trip.

Every generation moves money twice (its hold and its settle: `ledger.direct`), each one
unit of work. The round trip, not the work, is what costs: on issue #12's bench a bare
server on our stack that only made those two round trips per request spent half its CPU
on them (the loopback send to PostgreSQL and the wake-up of the answer; on SQLite the
hand-off to the connection's thread), and the database committed twice per request.
Here a unit waits while an earlier batch is in flight, and everything that queued
meanwhile goes together, in one transaction:

- PostgreSQL (`fetchval`): one `fetchmany` (a pipeline of Bind/Execute messages and one
  Sync) on one pooled connection: one round trip, one commit;
- SQLite (`run_in_sqlite`): one hand-off to the connection's thread, which runs every
  unit in a savepoint of its own and commits once.

Nothing waits for company: an idle gateway sends each unit at once, and a busy one
batches by itself (as many as arrived during one round trip). What each request gets back
is exactly what its own unit would have given it alone:

- a unit that fails fails alone. On SQLite its savepoint is rolled back and the others go
  on. A PostgreSQL batch is one implicit transaction (all of it commits or none does), so
  when it fails for any reason but a lost connection (a deadlock, one request's bad value,
  a timeout) nothing of it was committed, and each statement is sent again alone;
- `Undo(outcome)`, raised by a SQLite unit, rolls back what the unit wrote and answers
  `outcome` (a refused hold);
- a lost connection fails every request of the batch with the same outage error as a
  single statement would (`db.outage.DatabaseUnreachable`): whether the commit happened is
  unknown, exactly as for one statement, and sending it again could do it twice. A failed
  commit fails every unit of its batch;
- units are sent in the order of their `order` key (the account's id), so two batches in
  flight (here or in another worker) lock accounts in the same order: no deadlock;
- a request cancelled while its unit waits does not take it back: the unit runs (callers
  run these `shielded`, so they wait for the outcome anyway).

Per engine, at most `FLIGHTS` batches are in flight on PostgreSQL (a statement waiting for
a lock held elsewhere does not stall everything) and one on SQLite (one connection, one
writer), each of at most `MAX_BATCH` units. A statement sent through `fetchval` must
return exactly one row, so a batch's rows line up with its requests.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db import outage
from image_router.db.driver import in_sqlite_thread, pg_connection

T = TypeVar("T")

FLIGHTS = 2
MAX_BATCH = 64


class Undo(Exception):
    """Raised by a SQLite unit: roll back what it wrote and answer `outcome`."""

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome


@dataclass
class _Failed:
    error: BaseException


@dataclass
class _Unit:
    order: str
    payload: Any  # PostgreSQL: the statement's arguments; SQLite: the function to run
    answer: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# Sends a batch of units of one kind; returns one answer (or `_Failed`) per unit, in order.
_Send = Callable[[Hashable, list[Any]], Awaitable[list[Any]]]


class GroupCommit:
    """The units queued for one engine, on one event loop (see the module)."""

    def __init__(self, send: _Send, flights: int) -> None:
        self._send = send
        self._flights_allowed = flights
        self.loop = asyncio.get_running_loop()
        self._queued: dict[Hashable, list[_Unit]] = {}
        self._flying = 0
        self._flights: set[asyncio.Task[None]] = set()  # strong references to the tasks

    def submit(self, kind: Hashable, payload: Any, *, order: str) -> asyncio.Future[Any]:
        """Queue one unit of `kind` (units of one kind can share a batch): the future of its
        answer. A plain future, not a coroutine, so that a caller can shield it without a
        task of its own (the settle of every generation does)."""
        unit = _Unit(order, payload)
        self._queued.setdefault(kind, []).append(unit)
        if self._flying < self._flights_allowed:
            self._flying += 1
            flight = self.loop.create_task(self._fly())
            self._flights.add(flight)
            flight.add_done_callback(self._flights.discard)
        return unit.answer

    async def _fly(self) -> None:
        try:
            while self._queued:
                kind = next(iter(self._queued))
                batch = self._queued.pop(kind)
                if len(batch) > MAX_BATCH:
                    self._queued[kind] = batch[MAX_BATCH:]
                    batch = batch[:MAX_BATCH]
                if len(batch) > 1:
                    batch.sort(key=lambda unit: unit.order)
                try:
                    answers = await self._send(kind, [unit.payload for unit in batch])
                except BaseException as failed:  # every unit shares its batch's fate
                    for unit in batch:
                        _answer(unit, _Failed(failed))
                    if not isinstance(failed, Exception):
                        raise  # the flight cancelled (the loop shutting down)
                    continue
                for unit, answer in zip(batch, answers, strict=True):
                    _answer(unit, answer)
        finally:
            # In the same step as the queue was last seen empty: a unit queued from now on
            # starts a flight of its own.
            self._flying -= 1


def _answer(unit: _Unit, answer: Any) -> None:
    if unit.answer.done():  # its request was cancelled and left
        return
    if not isinstance(answer, _Failed):
        unit.answer.set_result(answer)
    elif isinstance(answer.error, asyncio.CancelledError):
        unit.answer.cancel()
    else:
        unit.answer.set_exception(answer.error)


_GROUPS: WeakKeyDictionary[AsyncEngine, GroupCommit] = WeakKeyDictionary()


def _group(engine: AsyncEngine) -> GroupCommit:
    """The engine's group commit on the running event loop."""
    group = _GROUPS.get(engine)
    if group is None or group.loop is not asyncio.get_running_loop():
        if engine.dialect.driver == "aiosqlite":
            group = GroupCommit(partial(_send_sqlite, engine), 1)
        else:
            group = GroupCommit(partial(_send_pg, engine), FLIGHTS)
        _GROUPS[engine] = group
    return group


# ----------------------------------------------------------------------------- PostgreSQL


def fetchval(
    engine: AsyncEngine, sql: str, args: Sequence[Any], *, order: str
) -> asyncio.Future[Any]:
    """The first column of the one row `sql` returns for `args`, committed (a future)."""
    return _group(engine).submit(sql, args, order=order)


async def _send_pg(engine: AsyncEngine, sql: Hashable, batch: list[Sequence[Any]]) -> list[Any]:
    try:
        async with pg_connection(engine) as pg:
            rows = await pg.fetchmany(str(sql), batch)
    except outage.DatabaseUnreachable as lost:
        # Every request of the batch fails with it, and none is sent again.
        return [_Failed(lost)] * len(batch)
    except Exception as failed:
        if len(batch) == 1:
            return [_Failed(failed)]
        # Nothing of the batch was committed: each statement again, on its own, each with
        # its own outcome (one that commits is told so, whatever happens to the next).
        return [(await _send_pg(engine, sql, [args]))[0] for args in batch]
    return [row[0] for row in rows]


# ----------------------------------------------------------------------------- SQLite


def run_in_sqlite(
    engine: AsyncEngine, unit: Callable[[sqlite3.Connection], T], *, order: str
) -> asyncio.Future[T]:
    """`unit(connection)`'s result, committed (a future): run on the connection's thread
    inside a transaction it must neither commit nor roll back (raise `Undo` to undo it)."""
    return _group(engine).submit("", unit, order=order)


async def _send_sqlite(engine: AsyncEngine, _kind: Hashable, batch: list[Any]) -> list[Any]:
    return await in_sqlite_thread(engine, lambda conn: _run_each(conn, batch))


def _run_each(
    conn: sqlite3.Connection, units: list[Callable[[sqlite3.Connection], Any]]
) -> list[Any]:
    # The pool rolls back on return, so a checked-out connection never has a transaction
    # open; committing someone else's half-done one would be far worse than refusing.
    if conn.in_transaction:
        raise RuntimeError("the SQLite connection has an open transaction")
    answers: list[Any] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for unit in units:
            conn.execute("SAVEPOINT unit")
            try:
                answers.append(unit(conn))
            except Undo as undo:
                conn.execute("ROLLBACK TO unit")
                answers.append(undo.outcome)
            except Exception as failed:
                conn.execute("ROLLBACK TO unit")
                answers.append(_Failed(failed))
            conn.execute("RELEASE unit")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return answers
