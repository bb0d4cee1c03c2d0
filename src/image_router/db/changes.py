"""Writes that change who may call: noticed as they are made, announced once committed.

The API-key cache (`account/key_cache.py`) must drop what it holds the moment a key is
revoked, disabled or changed, an account is restricted, banned or deleted, or credit moves
in or out of it from outside a generation. Those writes happen in many modules (key
management, privacy, Clerk users, payments, the CLI); rather than each remembering to say
so, every engine of `make_engine` watches its statements, and `unit_of_work`/`autocommit`
call `announce(engine)` after a commit that wrote any of them. Listeners (the cache, and
what tells the other processes) subscribe to an engine with `subscribe`.

Watched: any UPDATE or DELETE of `api_keys` except the `last_used_at` touch; an UPDATE of
`accounts` that sets a column a caller's cached state depends on, and any DELETE of it;
a ledger entry of a kind other than a generation's own hold and release (grants, top-ups,
refunds, disputes, forfeits, deductions). A generation's holds and settles never announce.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.dml import Delete, Insert, Update

log = logging.getLogger(__name__)

Listener = Callable[[], Awaitable[None]]

_FLAG = "image_router.auth_changed"
# Columns of `accounts` that a cached caller reads (status: active, banned, deleted).
_ACCOUNT_COLUMNS = frozenset(
    {"id", "status", "processing_restricted", "store_prompts", "allow_routing_improvement"}
)
_KEY_IGNORED = frozenset({"last_used_at"})
_GENERATION_KINDS = frozenset({"hold", "release"})
_LISTENERS = "image_router_change_listeners"


def watch(engine: AsyncEngine) -> None:
    """Mark a connection that writes something a cached caller depends on."""
    event.listen(engine.sync_engine, "before_execute", _note)


def subscribe(engine: AsyncEngine, listener: Listener) -> Callable[[], None]:
    """Call `listener` after every change committed through `engine`; returns the undo."""
    listeners = _listeners(engine)
    listeners.append(listener)

    def unsubscribe() -> None:
        if listener in listeners:
            listeners.remove(listener)

    return unsubscribe


def _listeners(engine: AsyncEngine) -> list[Listener]:
    found: list[Listener] | None = getattr(engine.sync_engine, _LISTENERS, None)
    if found is None:
        found = []
        setattr(engine.sync_engine, _LISTENERS, found)
    return found


def take(conn: AsyncConnection) -> bool:
    """Whether this connection wrote a watched change since the last call (and forget it).

    A connection that was lost (invalidated by a database outage, or closed) has nothing
    to announce: its transaction is gone with it. Asking it for `info` would raise
    `PendingRollbackError` and hide the outage that lost it (a 500 instead of a 503).
    """
    sync = conn.sync_connection
    if sync is None or sync.closed or sync.invalidated:
        return False
    return bool(sync.info.pop(_FLAG, False))


async def announce(engine: AsyncEngine) -> None:
    """Tell every listener, in order; one failing does not keep the others uninformed.

    Shielded: a caller cancelled now (a client hanging up) has already committed, and the
    other processes must still hear of it.
    """
    listeners = _listeners(engine)
    if listeners:
        await asyncio.shield(_announce(list(listeners)))


async def _announce(listeners: list[Listener]) -> None:
    for listener in listeners:
        try:
            await listener()
        except Exception:
            log.exception("an authentication-change listener failed")


def _note(
    conn: Connection,
    clause: Any,
    multiparams: Any,
    params: Any,
    execution_options: Any,
) -> None:
    table = getattr(clause, "table", None)
    name = getattr(table, "name", None)
    if name not in ("api_keys", "accounts", "ledger_entries"):
        return
    if _matters(name, clause, multiparams, params):
        conn.info[_FLAG] = True


def _matters(name: str, clause: Any, multiparams: Any, params: Any) -> bool:
    if isinstance(clause, Delete):
        return name != "ledger_entries"
    if isinstance(clause, Update):
        if name == "ledger_entries":
            return False
        columns = _set_columns(clause, multiparams, params)
        if name == "api_keys":
            return columns is None or not columns <= _KEY_IGNORED
        return columns is None or bool(columns & _ACCOUNT_COLUMNS)
    if isinstance(clause, Insert) and name == "ledger_entries":
        kinds = _kinds(clause, multiparams, params)
        return kinds is None or not kinds <= _GENERATION_KINDS
    return False


def _set_columns(clause: Update, multiparams: Any, params: Any) -> frozenset[str] | None:
    """The names of the columns an UPDATE sets, or None when they cannot be told."""
    names: set[str] = set()
    values = clause._values  # SQLAlchemy keeps `.values()` here
    if values:
        names.update(k if isinstance(k, str) else str(getattr(k, "key", "")) for k in values)
    for row in _rows(multiparams, params):
        # Bound parameters named after a column (`update(t)` executed with a dict) set it.
        names.update(k for k in row if isinstance(k, str) and k in clause.table.c)
    return frozenset(n for n in names if isinstance(n, str)) or None


def _kinds(clause: Insert, multiparams: Any, params: Any) -> frozenset[str] | None:
    kinds: set[Any] = set()
    values = clause._values
    if values:
        for column, value in values.items():
            if getattr(column, "key", column) == "kind":
                kinds.add(getattr(value, "value", value))
    for row in _rows(multiparams, params):
        if "kind" in row:
            kinds.add(row["kind"])
    if not kinds or not all(isinstance(k, str) for k in kinds):
        return None
    return frozenset(kinds)


def _rows(multiparams: Any, params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for item in (multiparams, params):
        if isinstance(item, dict):
            rows.append(item)
        elif isinstance(item, (list, tuple)):
            rows.extend(r for r in item if isinstance(r, dict))
    return rows
