"""A generation's money in two round trips, through the driver (`db.driver`).

Every generation moves money twice: the hold (a conditional debit, its ledger entry, the
usage row opened with what it holds, the key's spend limit checked in the same
transaction) and the close (the usage row finished, what it held but did not cost given
back with its entry). Through SQLAlchemy these were two units of work of three to seven
statements each; here each is ONE round trip:

- PostgreSQL: one statement whose data-modifying CTEs debit, append the entry and insert
  the row, or finish the row, credit and append. It is atomic: all of it happens or none.
  It is sent with the other requests' statements of the moment (`db.group_commit`): one
  round trip and one commit for all of them, each still getting its own outcome. A key
  with a spend limit takes one transaction of two statements instead (BEGIN, debit +
  lock the key, sum + insert, COMMIT), because the sum must see the rows committed by
  whoever held the key's lock before us, and a single statement reads one snapshot,
  taken before it waited for that lock.
- SQLite: one function run on the connection's thread that does the whole unit of work,
  batched the same way (`db.group_commit`: one hand-off and one commit for all the units
  queued meanwhile, each in a savepoint of its own).

The rules are those of the ORM path (`ledger.service.hold`/`release`, `usage.start`/
`finish`, `account.spend_limits.check`, which the reconciler, the fallback extension
and everything else still use), and `tests/integration/test_money_path.py` proves both
leave identical rows:

- the debit is conditional (`balance >= amount` in the same statement): the balance
  never goes below zero and concurrent holds cannot spend the same credit;
- the ledger entry is written with its balance change, so the ledger sums to the balance;
- the close is guarded by `status = 'processing'` and gives back the `held` its own
  statement read, so a row is closed (and its hold given back) exactly once, including
  what a fallback's extension added;
- the key's spend is summed after the debit, with the key's row locked (PostgreSQL) or
  under SQLite's single writer, so concurrent requests of a key cannot pass its limit
  together. The sum is `account.spend_limits`'s: processing rows count what they hold,
  finished ones what they cost, over `spend_limits.bounds`.

Only the ledger writes balances: this module writes the usage row it is handed (column
values built by `usage.opening_values`/`closing_values`) along with them.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db import group_commit
from image_router.db.driver import Encoders, pg_connection
from image_router.db.group_commit import Undo
from image_router.db.tables import GENERATIONS, LEDGER_ENTRIES
from image_router.kit.clock import utcnow

#: [since, until) of a key's current spend window, given its period (None: lifetime).
SpendBounds = Callable[[str | None], tuple[datetime, datetime]]


@dataclass(frozen=True)
class OverLimit:
    """The key's spend limit leaves no room for the hold; nothing was written."""

    limit: int
    period: str | None
    spent: int


def take_hold(
    engine: AsyncEngine,
    account_id: str,
    amount: int,
    *,
    generation_id: str,
    row: Mapping[str, Any],
    limited_key: str | None,
    spend_bounds: SpendBounds,
) -> Awaitable[object]:
    """Hold `amount` credits and insert the usage row `row` (every column), atomically.

    An awaitable of the outcome: truthy when held; falsy (nothing written) when the
    balance cannot cover it; `OverLimit` (nothing written) when `limited_key`'s spend limit
    leaves no room. A free request (`amount` 0) only inserts the row. Where the statement
    goes through the group commit (every case but a spend-limited key on PostgreSQL) it is
    the group commit's future, which a caller can shield without a task.
    """
    codec = _codec(engine.dialect)
    now = utcnow()
    if engine.dialect.driver == "aiosqlite":
        return group_commit.run_in_sqlite(
            engine,
            lambda conn: _take_sqlite(
                conn, codec, account_id, amount, generation_id, row, limited_key, spend_bounds, now
            ),
            order=account_id,
        )
    if limited_key is None or amount <= 0:
        # One statement: grouped with the other requests' (`db.group_commit`).
        columns = tuple(row)
        values = codec.row.encode_all(row)
        if amount <= 0:
            sql, args = _pg_sql("free", codec, columns), values
        else:
            sql = _pg_sql("hold", codec, columns)
            args = [amount, account_id, generation_id, codec.entry_time(now), *values]
        return group_commit.fetchval(engine, sql, args, order=account_id)
    return _take_pg(
        engine, codec, account_id, amount, generation_id, row, limited_key, spend_bounds, now
    )


def close_hold(
    engine: AsyncEngine,
    account_id: str,
    generation_id: str,
    closing: Mapping[str, Any],
    *,
    kept: int,
) -> asyncio.Future[int | None]:
    """Finish the processing row with `closing` (`usage.closing_values`) and give back what
    it held beyond `kept` (the price of a success; 0 for a release).

    The group commit's future (`db.group_commit`): what the row held as it closed (a
    bigint, so an int); None (nothing written) when it was closed already.
    """
    codec = _codec(engine.dialect)
    now = utcnow()
    if engine.dialect.driver == "aiosqlite":
        return group_commit.run_in_sqlite(
            engine,
            lambda conn: _close_sqlite(conn, codec, account_id, generation_id, closing, kept, now),
            order=account_id,
        )
    sql = _close_pg_sql(codec, tuple(closing))
    args = [generation_id, kept, account_id, codec.entry_time(now)]
    args += codec.row.encode_all(closing)
    return group_commit.fetchval(engine, sql, args, order=account_id)


# ----------------------------------------------------------------------------- encoding


@dataclass
class _Codec:
    row: Encoders  # generations
    entries: Encoders  # ledger_entries

    def entry_time(self, now: datetime) -> Any:
        return self.entries.encode("created_at", now)


_CODECS: WeakKeyDictionary[Dialect, _Codec] = WeakKeyDictionary()


def _codec(dialect: Dialect) -> _Codec:
    codec = _CODECS.get(dialect)
    if codec is None:
        codec = _CODECS[dialect] = _Codec(
            Encoders(GENERATIONS, dialect), Encoders(LEDGER_ENTRIES, dialect)
        )
    return codec


# The spend of a key in a window, as `account.spend_limits._SPEND` sums it.
_SPEND = (
    "SELECT coalesce(sum(CASE WHEN status = 'processing' THEN held ELSE cost END), 0)"
    " AS total FROM generations WHERE api_key_id = {key} AND created_at >= {since}"
    " AND created_at < {until}"
)
# A finish as `usage.finish` writes it: None keeps the provider recorded so far.
_COALESCED = frozenset({"provider"})


# ----------------------------------------------------------------------------- PostgreSQL

_PG_DEBIT = (
    "WITH debit AS ("
    " UPDATE accounts SET balance = balance - $1::bigint"
    " WHERE id = $2 AND balance >= $1::bigint RETURNING id"
    "), entry AS ("
    " INSERT INTO ledger_entries (account_id, amount, kind, generation_id, created_at)"
    " SELECT id, -$1::bigint, 'hold', $3::varchar, $4::timestamptz FROM debit"
    ") "
)
_PG_SQL: dict[tuple[str, tuple[str, ...]], str] = {}


def _pg_insert(codec: _Codec, columns: tuple[str, ...], *, first: int, source: str) -> str:
    """INSERT of the usage row from parameters `$first…`, one row per row of `source`
    (a CTE; '' for exactly one row)."""
    values = ", ".join(f"${first + i}::{codec.row.casts[name]}" for i, name in enumerate(columns))
    return f"INSERT INTO generations ({', '.join(columns)}) " + (
        f"SELECT {values} FROM {source}" if source else f"VALUES ({values})"
    )


def _pg_sql(kind: str, codec: _Codec, columns: tuple[str, ...]) -> str:
    sql = _PG_SQL.get((kind, columns))
    if sql is not None:
        return sql
    # `free` and `hold` return exactly one row, as `db.group_commit` needs.
    if kind == "free":
        sql = _pg_insert(codec, columns, first=1, source="") + " RETURNING 1"
    elif kind == "hold":
        # The row is inserted once per debited row: none when the balance fell short.
        opened = _pg_insert(codec, columns, first=5, source="debit")
        sql = f"{_PG_DEBIT}, opened AS ({opened} RETURNING 1) SELECT count(*) FROM opened"
    elif kind == "hold+lock":
        # The key's row is locked after the account's (the order of the ORM path and of
        # a fallback's extension: no deadlock between them), and only once debited.
        sql = _PG_DEBIT + (
            "SELECT k.spend_limit, k.spend_limit_period FROM debit"
            " LEFT JOIN LATERAL (SELECT spend_limit, spend_limit_period FROM api_keys"
            " WHERE id = $5 FOR UPDATE) AS k ON true"
        )
    elif kind == "open-within":
        # The sum and the insert read one snapshot, taken after the key's lock was ours.
        spend = _SPEND.format(key="$1", since="$2", until="$3")
        opened = _pg_insert(codec, columns, first=6, source="spent")
        sql = (
            f"WITH spent AS ({spend}), opened AS ({opened}"
            " WHERE spent.total + $4::bigint <= $5::bigint) SELECT total FROM spent"
        )
    else:
        raise ValueError(kind)
    _PG_SQL[(kind, columns)] = sql
    return sql


async def _take_pg(
    engine: AsyncEngine,
    codec: _Codec,
    account_id: str,
    amount: int,
    generation_id: str,
    row: Mapping[str, Any],
    limited_key: str,
    spend_bounds: SpendBounds,
    now: datetime,
) -> bool | OverLimit:
    """A hold under `limited_key`'s spend limit: one transaction (see the module)."""
    columns = tuple(row)
    values = codec.row.encode_all(row)
    debit = [amount, account_id, generation_id, codec.entry_time(now)]
    try:
        async with pg_connection(engine) as pg, pg.transaction():
            key = await pg.fetchrow(_pg_sql("hold+lock", codec, columns), *debit, limited_key)
            if key is None:
                raise Undo(False)  # the balance fell short: nothing was debited
            limit, period = key[0], key[1]
            if limit is None:  # no limit (any more): open the row as a free one does
                await pg.fetchval(_pg_sql("free", codec, columns), *values)
                return True
            since, until = spend_bounds(period)
            spent = await pg.fetchval(
                _pg_sql("open-within", codec, columns),
                limited_key,
                codec.row.encode("created_at", since),
                codec.row.encode("created_at", until),
                amount,
                int(limit),
                *values,
            )
            if int(spent) + amount > int(limit):
                raise Undo(OverLimit(int(limit), period, int(spent)))
            return True
    except Undo as undo:
        outcome: bool | OverLimit = undo.outcome
        return outcome


def _close_pg_sql(codec: _Codec, columns: tuple[str, ...]) -> str:
    """$1 generation, $2 credits kept, $3 account, $4 entry time, $5… the closing values."""
    sql = _PG_SQL.get(("close", columns))
    if sql is not None:
        return sql
    sets = ", ".join(
        f"{name} = coalesce(${5 + i}::{codec.row.casts[name]}, {name})"
        if name in _COALESCED
        else f"{name} = ${5 + i}::{codec.row.casts[name]}"
        for i, name in enumerate(columns)
    )
    sql = (
        f"WITH closed AS (UPDATE generations SET {sets}"
        " WHERE id = $1 AND status = 'processing' RETURNING held"
        "), back AS (SELECT held - $2::bigint AS amount FROM closed WHERE held > $2::bigint"
        "), credit AS (UPDATE accounts SET balance = accounts.balance + back.amount"
        " FROM back WHERE accounts.id = $3"
        "), entry AS ("
        " INSERT INTO ledger_entries (account_id, amount, kind, generation_id, created_at)"
        " SELECT $3::varchar, amount, 'release', $1::varchar, $4::timestamptz FROM back"
        ") SELECT (SELECT held FROM closed)"  # one row, as `db.group_commit` needs
    )
    _PG_SQL[("close", columns)] = sql
    return sql


# ----------------------------------------------------------------------------- SQLite
# These run on the connection's thread, inside a transaction of `db.group_commit` (a
# savepoint of their own in a batch it commits): they raise `Undo` to take back what they
# wrote, and never commit or roll back themselves.

_SQLITE_DEBIT = "UPDATE accounts SET balance = balance - ? WHERE id = ? AND balance >= ?"
_SQLITE_CREDIT = "UPDATE accounts SET balance = balance + ? WHERE id = ?"
_SQLITE_ENTRY = (
    "INSERT INTO ledger_entries (account_id, amount, kind, generation_id, created_at)"
    " VALUES (?, ?, ?, ?, ?)"
)
_SQLITE_SPEND = _SPEND.format(key="?", since="?", until="?")


def _take_sqlite(
    conn: sqlite3.Connection,
    codec: _Codec,
    account_id: str,
    amount: int,
    generation_id: str,
    row: Mapping[str, Any],
    limited_key: str | None,
    spend_bounds: SpendBounds,
    now: datetime,
) -> bool | OverLimit:
    if amount > 0:
        if conn.execute(_SQLITE_DEBIT, (amount, account_id, amount)).rowcount != 1:
            return False  # nothing was written
        conn.execute(
            _SQLITE_ENTRY, (account_id, -amount, "hold", generation_id, codec.entry_time(now))
        )
        if limited_key is not None:
            refusal = _over_limit_sqlite(conn, codec, limited_key, amount, spend_bounds)
            if refusal is not None:
                raise Undo(refusal)
    columns = ", ".join(row)
    marks = ", ".join("?" * len(row))
    conn.execute(f"INSERT INTO generations ({columns}) VALUES ({marks})", codec.row.encode_all(row))
    return True


def _over_limit_sqlite(
    conn: sqlite3.Connection,
    codec: _Codec,
    key_id: str,
    amount: int,
    spend_bounds: SpendBounds,
) -> OverLimit | None:
    # SQLite has one writer, which this transaction already is since its debit: no other
    # hold can slip in between the sum and the insert.
    key = conn.execute(
        "SELECT spend_limit, spend_limit_period FROM api_keys WHERE id = ?", (key_id,)
    ).fetchone()
    if key is None or key[0] is None:
        return None
    limit, period = int(key[0]), key[1]
    since, until = spend_bounds(period)
    (spent,) = conn.execute(
        _SQLITE_SPEND,
        (key_id, codec.row.encode("created_at", since), codec.row.encode("created_at", until)),
    ).fetchone()
    if int(spent) + amount <= limit:
        return None
    return OverLimit(limit, period, int(spent))


def _close_sqlite(
    conn: sqlite3.Connection,
    codec: _Codec,
    account_id: str,
    generation_id: str,
    closing: Mapping[str, Any],
    kept: int,
    now: datetime,
) -> int | None:
    sets = ", ".join(
        f"{name} = coalesce(?, {name})" if name in _COALESCED else f"{name} = ?" for name in closing
    )
    found = conn.execute(
        f"UPDATE generations SET {sets} WHERE id = ? AND status = 'processing' RETURNING held",
        (*codec.row.encode_all(closing), generation_id),
    ).fetchall()
    if not found:
        return None  # closed already: nothing was written
    held = int(found[0][0])
    if held > kept:
        conn.execute(_SQLITE_CREDIT, (held - kept, account_id))
        conn.execute(
            _SQLITE_ENTRY,
            (account_id, held - kept, "release", generation_id, codec.entry_time(now)),
        )
    return held
