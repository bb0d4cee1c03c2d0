"""The database driver itself, for the few statements that run on every request.

SQLAlchemy's async layer costs more CPU than the statements it runs: every statement is a
greenlet switch and result wrapping, and on SQLite (aiosqlite) four hand-offs to the
connection's thread (cursor, execute, fetch, close). The money path of a generation (the
hold with its usage row, the settle or release) therefore reaches past it to the driver:

- PostgreSQL: the asyncpg connection of a pooled SQLAlchemy connection, whose statement
  cache prepares each statement once per connection; one statement per round trip.
- SQLite: a plain function run by aiosqlite's own connection thread, so a whole unit of
  work is ONE hand-off (plus the pool's rollback-on-return, which stays: it is what cleans
  up after an interrupted unit of work on the single shared connection).

So does an API key's lookup on a cache miss, on PostgreSQL (`account.service`): its
statements are the ORM's own, compiled once for asyncpg (`pg_statement`).

The connection comes from SQLAlchemy's pool, so it is shared and serialised with every
other unit of work exactly like theirs. Values are encoded by the columns' own SQLAlchemy
types (`Encoders`), so the rows are the ones the ORM would write.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from sqlalchemy import Table
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement

from image_router.db import outage

T = TypeVar("T")


class PgTransaction(Protocol):
    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, *exc: object) -> bool | None: ...


class PgConnection(Protocol):
    """The part of `asyncpg.Connection` the hot path uses (asyncpg ships no type hints)."""

    async def fetchrow(self, query: str, *args: Any) -> Any: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...
    async def fetchmany(self, query: str, args: Any) -> list[Any]: ...
    def transaction(self) -> PgTransaction: ...


def pg_statement(statement: ClauseElement, order: tuple[str, ...]) -> str:
    """`statement`'s SQL for asyncpg (`$1` … `$n`), its parameters in `order`.

    Compiled once, at import, from the statement SQLAlchemy runs elsewhere, so both paths
    send the same SQL. `order` names the parameters as SQLAlchemy numbers them; a
    statement changed without its callers fails here, at start-up, not with misplaced
    values."""
    compiled = statement.compile(dialect=_ASYNCPG)
    named = tuple(getattr(compiled, "positiontup", None) or ())
    if named != order:
        raise ValueError(f"parameters are {named}, not {order}: {compiled}")
    return str(compiled)


_ASYNCPG = asyncpg_dialect()  # type: ignore[no-untyped-call]


def driver_of(engine: AsyncEngine) -> str | None:
    """'asyncpg' or 'aiosqlite' when the hot path can use the engine's driver, else None."""
    driver = engine.dialect.driver
    return driver if driver in ("asyncpg", "aiosqlite") else None


@asynccontextmanager
async def pg_connection(engine: AsyncEngine) -> AsyncIterator[PgConnection]:
    """A pooled connection's asyncpg connection, outside any SQLAlchemy transaction: each
    statement commits by itself unless run in `connection.transaction()`."""
    async with engine.connect() as conn:
        connection: PgConnection = await _driver_connection(conn)
        try:
            yield connection
        except Exception as exc:
            # SQLAlchemy never saw this statement fail: tell its pool when the connection
            # died (so it is not handed out again) and call it what it is, an outage.
            if getattr(connection, "is_closed", lambda: False)() or outage.is_outage(exc):
                await conn.invalidate(exc)
                lost = f"the database connection was lost: {exc}"
                raise outage.DatabaseUnreachable(lost) from exc
            raise


async def in_sqlite_thread(engine: AsyncEngine, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work(connection)` on the SQLite connection's own thread: one hand-off.

    `work` owns its transaction: it commits, or rolls back and raises. aiosqlite runs the
    calls queued on a connection one after another, and the pool hands the connection to
    one unit of work at a time, so nothing else runs on it meanwhile.
    """
    async with engine.connect() as conn:
        thread = await _driver_connection(conn)  # an aiosqlite.Connection
        # `_execute` is how aiosqlite itself queues every call for its thread; there is no
        # public spelling of "run this function there" (aiosqlite is pinned in
        # constraints.txt).
        result: T = await thread._execute(work, thread._conn)
        return result


async def _driver_connection(conn: AsyncConnection) -> Any:
    driver = (await conn.get_raw_connection()).driver_connection
    if driver is None:  # only after the connection was invalidated
        raise RuntimeError("the pooled connection has no driver connection")
    return driver


class Encoders:
    """Column values as the ORM would bind them on this dialect (UTC datetimes, JSON
    text, SQLite's booleans and timestamps), by each column's SQLAlchemy type."""

    def __init__(self, table: Table, dialect: Dialect) -> None:
        self._processors: dict[str, Callable[[Any], Any] | None] = {
            column.name: column.type.dialect_impl(dialect).bind_processor(dialect)
            for column in table.columns
        }
        # For PostgreSQL's `$n::type`: a parameter in a SELECT list has no type to infer.
        self.casts: dict[str, str] = {
            column.name: column.type.dialect_impl(dialect).compile(dialect)
            for column in table.columns
        }

    def encode(self, name: str, value: Any) -> Any:
        processor = self._processors[name]
        return value if processor is None else processor(value)

    def encode_all(self, values: Mapping[str, Any]) -> list[Any]:
        return [self.encode(name, value) for name, value in values.items()]
