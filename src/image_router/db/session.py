"""Engines and units of work.

SQLite (the embedded default) gets one connection: SQLite serialises writers anyway, and a
single connection turns lock contention ("database is locked") into an orderly queue.
PostgreSQL gets a real pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from image_router.db import changes, outage


def make_engine(url: str, *, pool_size: int = 20, max_overflow: int = 20) -> AsyncEngine:
    """An engine for `url`. On PostgreSQL it holds up to `pool_size + max_overflow`
    connections (DB_POOL_SIZE, DB_MAX_OVERFLOW): each worker has one such engine per
    database it reaches, and their sum must fit the server's `max_connections`."""
    if url.startswith("sqlite"):
        # The pool's rollback on return stays: should a unit of work ever be interrupted, it
        # must not leave half a transaction on the one shared connection for the next.
        engine = create_async_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_timeout=600,
            connect_args={"timeout": 30},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    else:
        # No pre-ping: it costs a round trip per checkout. Its equivalent for free: a
        # connection whose socket the server closed (a restart, a cut network) is replaced
        # at checkout (`_replace_closed`), and a connection that dies under a statement
        # makes SQLAlchemy recycle every older connection of the pool. So the pool
        # recovers by itself once the database is back; meanwhile `db/outage.py` turns
        # the errors into 503s.
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=600,
            pool_recycle=1800,
            connect_args={"timeout": outage.CONNECT_TIMEOUT_S},
        )
        if engine.dialect.driver == "asyncpg":
            event.listen(engine.sync_engine, "do_connect", _connect_or_unreachable)
            event.listen(engine.sync_engine, "checkout", _replace_closed)
    changes.watch(engine)  # writes that invalidate cached API keys (db/changes.py)
    return engine


def _connect_or_unreachable(
    dialect: Any, _record: Any, cargs: tuple[Any, ...], cparams: dict[str, Any]
) -> Any:
    """Connect as SQLAlchemy would; a refused, unreachable or slow server is an outage."""
    try:
        return dialect.loaded_dbapi.connect(*cargs, **cparams)
    except (OSError, TimeoutError) as exc:
        raise outage.DatabaseUnreachable(f"cannot connect to the database: {exc}") from exc
    except Exception as exc:
        if outage.is_outage(exc):
            raise outage.DatabaseUnreachable(f"the database refused to connect: {exc}") from exc
        raise


def _replace_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """A pooled connection whose socket is already closed is thrown away at checkout
    (SQLAlchemy then connects afresh): a local check, no round trip."""
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("the pooled connection was closed by the server")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    # Erased personal data and purged prompts are overwritten, not left in free pages of
    # the database file (PostgreSQL's VACUUM does the same for its tables).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


@asynccontextmanager
async def unit_of_work(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One short transaction: commits on success, rolls back on any exception.

    A committed change to keys or accounts is announced (`db/changes.py`) before the
    unit of work returns, so whoever made it knows every cache has heard of it.
    """
    async with engine.begin() as connection:
        try:
            yield connection
        except BaseException:
            changes.take(connection)  # rolled back: nothing to announce
            raise
        changed = changes.take(connection)
    if changed:
        await changes.announce(engine)


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection without a transaction, for single reads (and idempotent single writes):
    it saves the BEGIN and COMMIT round trips of a unit of work."""
    if engine.dialect.name == "sqlite":
        # Switching aiosqlite's isolation level costs more thread round trips than the
        # BEGIN/COMMIT it saves (which are local calls for SQLite anyway).
        async with unit_of_work(engine) as connection:
            yield connection
        return
    async with engine.connect() as connection:
        try:
            yield await connection.execution_options(isolation_level="AUTOCOMMIT")
        finally:
            changed = changes.take(connection)  # each statement committed as it ran
    if changed:
        await changes.announce(engine)
