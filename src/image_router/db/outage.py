"""Telling "the database is away" from every other database error.

While PostgreSQL restarts, or the network to it is cut, a request cannot be served and
must say so honestly (503 `database_unavailable` with `Retry-After`), not 500. Three
shapes of error mean that:

- connecting failed (refused, unreachable, timed out, or the server is starting or
  shutting down): `make_engine`'s connect hook raises `DatabaseUnreachable`;
- a pooled connection died under a statement: SQLAlchemy marks it `connection_invalidated`
  (and recycles every connection of the pool that is older);
- the same on the money path's raw asyncpg connection (`driver.pg_connection`), which
  SQLAlchemy does not see: asyncpg's own connection errors, or its connection closed.

`is_outage` looks along the exception's causes, so a use case that wrapped the error
(or failed in its clean-up) is still recognised.
"""

from __future__ import annotations

import logging

import asyncpg  # type: ignore[import-untyped]  # no stubs; only its exception classes
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

# How long a connection attempt may take before the database counts as unreachable:
# asyncpg's default (60 s) would hold every request for a minute behind a dead address.
CONNECT_TIMEOUT_S = 5.0
# What a client is told to wait before retrying.
RETRY_AFTER_S = 5


class DatabaseUnreachable(Exception):
    """No connection to the database could be made (or kept)."""


_GONE = (
    DatabaseUnreachable,
    DisconnectionError,
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.CannotConnectNowError,  # 57P03: starting up or shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminated by a restart
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` (or an error it was raised from) means the database is unreachable."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _GONE):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, asyncpg.InterfaceError) and "connection is closed" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def log_failed_pass(log: logging.Logger, what: str, exc: Exception) -> None:
    """A background loop's pass failed and will be retried: one line while the database
    is away (it comes back by itself, and a traceback per loop per worker every few
    seconds would bury the lines that matter), the traceback for anything else."""
    if is_outage(exc):
        log.warning("%s: the database is unavailable (%s); will retry", what, exc)
    else:
        log.error("%s; will retry", what, exc_info=exc)


async def ping(engine: AsyncEngine) -> None:
    """One trivial statement on a pooled connection (`/ready`); raises when it fails."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


#: The exception classes under which an outage reaches the edge unwrapped (the app maps
#: each through `is_outage`: 503 when it is one, 500 when not).
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    DBAPIError,
    DatabaseUnreachable,
    DisconnectionError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
