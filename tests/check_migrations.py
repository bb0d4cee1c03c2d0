"""Migrations and models never drift: upgrade an empty database, then `alembic check`.

Run by scripts/test on SQLite and, when reachable, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

import asyncpg
from alembic import command

from image_router.db.migrate import alembic_config, upgrade_sync

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _recreate_pg(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def check(url: str) -> None:
    upgrade_sync(url)
    command.check(alembic_config(url))
    print(f"migrations match the models on {url.split(':')[0]}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        check(f"sqlite+aiosqlite:///{Path(tmp) / 'check.db'}")
    asyncio.run(_recreate_pg("ir_migration_check"))
    check(
        PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
        + "/ir_migration_check"
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # report, then fail the test command
        print(f"migration check failed: {exc}", file=sys.stderr)
        raise
