"""Group commit: the money statements of many requests in one round trip.

Every generation runs two statements on PostgreSQL (its hold and its settle, each one
round trip: `ledger.direct`). The round trip, not the statement, is what costs: on
issue #12's bench a bare server on our stack that only made those two round trips per
request spent half its CPU on them (the loopback send and the wake-up of the answer), and
PostgreSQL committed twice per request. Here a statement waits while an earlier batch is
in flight, and everything that queued meanwhile goes together: one `fetchmany` (a
pipeline of Bind/Execute messages and one Sync) on one pooled connection, one commit.
Nothing waits for company: an idle gateway sends each statement at once, and a busy one
batches by itself (as many requests as arrived during one round trip).

What each request gets back is exactly what its own statement would have returned:

- every statement sent here must return exactly one row (so the batch's rows line up
  with its requests); `fetchval` returns its first column;
- a batch is one implicit transaction, atomic like each of its statements: all commit or
  none does. When it fails for any reason but a lost connection (a deadlock, a bad value
  in one request, a timeout), nothing of it was committed, so each statement is run
  again alone and each request gets its own result or its own error; one bad request
  never fails the others;
- a lost connection fails every request of the batch with the same outage error as a
  single statement would (`db.outage.DatabaseUnreachable`): whether the commit happened
  is unknown, exactly as for one statement, and running it again could do it twice;
- statements are sent in the order of their `order` key (the account's id), so two
  batches in flight (here or in another worker) lock accounts in the same order and
  cannot deadlock each other;
- a request cancelled while its statement waits does not take it back: it runs (the
  callers run these statements `shielded`, so they wait for the outcome anyway).

At most `FLIGHTS` batches are in flight per engine (a statement waiting for a lock held
elsewhere does not stall everything), each of at most `MAX_BATCH` statements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db import outage
from image_router.db.driver import pg_connection

FLIGHTS = 2
MAX_BATCH = 64


@dataclass
class _Statement:
    order: str
    args: Sequence[Any]
    answer: asyncio.Future[Any] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """The statements queued for one engine, on one event loop (see the module)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.loop = asyncio.get_running_loop()
        self._queued: dict[str, list[_Statement]] = {}
        self._flying = 0
        self._flights: set[asyncio.Task[None]] = set()  # strong references to the tasks

    async def fetchval(self, sql: str, args: Sequence[Any], *, order: str) -> Any:
        """The first column of the one row `sql` returns for `args`, committed."""
        statement = _Statement(order, args)
        self._queued.setdefault(sql, []).append(statement)
        if self._flying < FLIGHTS:
            self._flying += 1
            flight = self.loop.create_task(self._fly())
            self._flights.add(flight)
            flight.add_done_callback(self._flights.discard)
        return await statement.answer

    async def _fly(self) -> None:
        try:
            while self._queued:
                sql = next(iter(self._queued))
                waiting = self._queued.pop(sql)
                if len(waiting) > MAX_BATCH:
                    self._queued[sql] = waiting[MAX_BATCH:]
                    waiting = waiting[:MAX_BATCH]
                try:
                    await self._send(sql, waiting)
                except BaseException as failed:  # the flight cancelled (shutdown), or a bug
                    for statement in waiting:
                        _answer(statement, error=failed)
                    raise
        finally:
            # In the same step as the queue was last seen empty: a statement queued from
            # now on starts a flight of its own.
            self._flying -= 1

    async def _send(self, sql: str, batch: list[_Statement]) -> None:
        if len(batch) > 1:
            batch.sort(key=lambda statement: statement.order)
        try:
            async with pg_connection(self._engine) as pg:
                rows = await pg.fetchmany(sql, [statement.args for statement in batch])
        except outage.DatabaseUnreachable as lost:
            for statement in batch:
                _answer(statement, error=lost)
            return
        except Exception as failed:
            if len(batch) == 1:
                _answer(batch[0], error=failed)
                return
            # Nothing of the batch was committed: each statement again, on its own.
            for statement in batch:
                await self._send(sql, [statement])
            return
        for statement, row in zip(batch, rows, strict=True):
            _answer(statement, value=row[0])


def _answer(
    statement: _Statement, *, value: Any = None, error: BaseException | None = None
) -> None:
    if statement.answer.done():  # its request was cancelled and left
        return
    if error is None:
        statement.answer.set_result(value)
    elif isinstance(error, asyncio.CancelledError):
        statement.answer.cancel()
    else:
        statement.answer.set_exception(error)


_GROUPS: WeakKeyDictionary[AsyncEngine, GroupCommit] = WeakKeyDictionary()


def group_commit(engine: AsyncEngine) -> GroupCommit:
    """The engine's group commit on the running event loop."""
    group = _GROUPS.get(engine)
    if group is None or group.loop is not asyncio.get_running_loop():
        group = _GROUPS[engine] = GroupCommit(engine)
    return group
