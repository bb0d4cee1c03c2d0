"""A destroyed data key leaves no bytes behind in the key store's files.

The probe that found this: a copy of the key-store file (and its `-wal`), an older dump of
the main database and the KEK gave back the e-mails and prompts of erased accounts,
because SQLite in WAL mode keeps the deleted page in the main file and in earlier WAL
frames until a checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import text

from image_router.db.key_store import KeyStore
from image_router.kit.clock import utcnow


def files_holding(path: Path, needle: bytes) -> list[str]:
    """Which of the store's files (main, -wal) contain `needle`."""
    return [
        f.name
        for f in (path, path.with_name(path.name + "-wal"))
        if f.exists() and needle in f.read_bytes()
    ]


@pytest.mark.parametrize("checkpointed", [False, True], ids=["in-wal", "in-main-file"])
async def test_a_destroyed_key_is_in_neither_file(tmp_path: Path, checkpointed: bool) -> None:
    path = tmp_path / "data-keys.db"
    store = KeyStore(f"sqlite+aiosqlite:///{path}")
    try:
        wrapped = os.urandom(60)  # the size of a wrapped 32-byte key
        kept = os.urandom(60)
        await store.add("account-erased", wrapped, "kek1", utcnow())
        await store.add("account-kept", kept, "kek1", utcnow())
        if checkpointed:
            # As after a restart: the key page moved into the main file.
            async with store.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        assert files_holding(path, wrapped), "the test must see the key before it is deleted"

        await store.delete("account-erased")

        assert files_holding(path, wrapped) == []
        assert await store.get("account-erased") is None
        assert await store.get("account-kept") == (kept, "kek1")
    finally:
        await store.close()
    # A fresh process (as after a restart, or a copy of the files) finds the same.
    reopened = KeyStore(f"sqlite+aiosqlite:///{path}")
    try:
        assert await reopened.get("account-erased") is None
        assert await reopened.get("account-kept") == (kept, "kek1")
    finally:
        await reopened.close()


@pytest.mark.postgres
async def test_on_postgresql_the_key_table_is_rewritten_after_a_destruction(
    pg_database: str,
) -> None:
    """VACUUM FULL writes the table into a new file: the dead row's bytes do not go along."""
    store = KeyStore(pg_database)
    try:
        await store.add("account-erased", os.urandom(60), "kek1", utcnow())
        await store.add("account-kept", b"kept", "kek1", utcnow())
        node = "SELECT relfilenode FROM pg_class WHERE relname = 'data_keys'"
        async with store.engine.connect() as conn:
            before = await conn.scalar(text(node))

        await store.delete("account-erased")

        async with store.engine.connect() as conn:
            after = await conn.scalar(text(node))
        assert after != before
        assert await store.get("account-erased") is None
        assert await store.get("account-kept") == (b"kept", "kek1")
    finally:
        async with store.engine.begin() as conn:
            await conn.execute(text("DROP TABLE IF EXISTS data_keys"))
        await store.close()
