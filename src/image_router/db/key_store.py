"""The key store: each account's wrapped data key, in a database of its own.

Why not a table of the main database: a backup of the main database must not carry the
keys that open it. Erasure deletes the account's key here, so every copy of the main
database, backups included, keeps only values nobody can open any more (crypto-shredding).
Back the key store up separately, with a retention shorter than the erasure deadline.

By default a SQLite file under DATA_DIR/keys; `DATA_KEYS_URL` names another database
(a separate PostgreSQL database when several machines serve). The table is created on
first use; it never changes shape, so it needs no migrations.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Column,
    DateTime,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db.session import make_engine

_metadata = MetaData()
DATA_KEYS = Table(
    "data_keys",
    _metadata,
    Column("account_id", String(36), primary_key=True),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("kek_id", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


class KeyStoreBusy(RuntimeError):
    """A destroyed key could not yet be scrubbed from the key store's files."""


class KeyStore:
    def __init__(self, url: str, *, pool_size: int = 20, max_overflow: int = 20) -> None:
        self.url = url
        # Its own pool (DB_POOL_SIZE, DB_MAX_OVERFLOW): on PostgreSQL it counts against
        # the key store server's max_connections like the main engine does against its own.
        self.engine: AsyncEngine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self._ready = False

    async def _setup(self) -> None:
        if not self._ready:
            async with self.engine.begin() as conn:
                await conn.run_sync(_metadata.create_all)
            self._ready = True

    async def get(self, account_id: str) -> tuple[bytes, str] | None:
        await self._setup()
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(DATA_KEYS.c.wrapped_key, DATA_KEYS.c.kek_id).where(
                        DATA_KEYS.c.account_id == account_id
                    )
                )
            ).first()
        return None if row is None else (bytes(row.wrapped_key), str(row.kek_id))

    async def add(self, account_id: str, wrapped: bytes, kek_id: str, now: datetime) -> None:
        """Store a new key; an existing key of the account is kept (first writer wins)."""
        await self._setup()
        insert = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(DATA_KEYS)
                .values(account_id=account_id, wrapped_key=wrapped, kek_id=kek_id, created_at=now)
                .on_conflict_do_nothing(index_elements=["account_id"])
            )

    async def wrapped_keys(self, *, after: str = "", limit: int = 500) -> list[tuple[str, bytes]]:
        """(account id, wrapped key) pairs in account id order, from `after` on."""
        await self._setup()
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(DATA_KEYS.c.account_id, DATA_KEYS.c.wrapped_key)
                    .where(DATA_KEYS.c.account_id > after)
                    .order_by(DATA_KEYS.c.account_id)
                    .limit(limit)
                )
            ).all()
        return [(str(r.account_id), bytes(r.wrapped_key)) for r in rows]

    async def replace(self, account_id: str, old: bytes, new: bytes, kek_id: str) -> bool:
        """Swap a wrapped key for its re-wrapped self, unless it changed meanwhile."""
        await self._setup()
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(DATA_KEYS)
                .where(DATA_KEYS.c.account_id == account_id, DATA_KEYS.c.wrapped_key == old)
                .values(wrapped_key=new, kek_id=kek_id)
            )
        return result.rowcount == 1

    async def delete(self, account_id: str) -> None:
        """Destroy the account's key, and the bytes it left behind in the store's files."""
        await self._setup()
        async with self.engine.begin() as conn:
            await conn.execute(delete(DATA_KEYS).where(DATA_KEYS.c.account_id == account_id))
        await self._scrub()

    async def _scrub(self) -> None:
        """Leave the deleted key in no file of the key store.

        SQLite in WAL mode: the DELETE is only a new page image appended to the `-wal`
        file; the old page (key included) stays in the main file and in earlier WAL frames
        until a checkpoint. A TRUNCATE checkpoint copies the overwritten page
        (`secure_delete`) into the main file and empties the WAL. PostgreSQL: a plain
        VACUUM only marks the dead row's space reusable, so VACUUM FULL rewrites the (small:
        one row per account) table into a new file; it must run outside a transaction.
        """
        if self.engine.dialect.name == "sqlite":
            async with self.engine.connect() as conn:
                busy = (await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")).first()
            if busy is not None and busy[0]:
                # Another process was reading the store throughout the busy timeout.
                raise KeyStoreBusy("the key store's WAL could not be checkpointed; retry")
        elif self.engine.dialect.name == "postgresql":
            async with self.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql(f"VACUUM FULL {DATA_KEYS.name}")

    async def close(self) -> None:
        await self.engine.dispose()
