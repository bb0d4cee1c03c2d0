"""DB_POOL_SIZE and DB_MAX_OVERFLOW cap every engine a worker opens (the fleet soak: six
workers of 2 × (20 + 20) connections each passed PostgreSQL's default max_connections).

Each cap is checked by what it does: size + overflow connections are handed out, and the
next checkout waits for one to come back."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.resources import build_vault
from tests.conftest import _gateway, gateway_settings

CAPS = {"db_pool_size": 2, "db_max_overflow": 1}


async def assert_capped_at(engine: AsyncEngine, cap: int) -> None:
    async with AsyncExitStack() as held:
        for _ in range(cap):
            conn = await held.enter_async_context(engine.connect())
            assert await conn.scalar(text("SELECT 1")) == 1
        with pytest.raises(TimeoutError):  # one more waits for a connection to come back
            async with asyncio.timeout(0.5):
                await held.enter_async_context(engine.connect())
    async with engine.connect() as conn:  # returned: served again
        assert await conn.scalar(text("SELECT 1")) == 1


@pytest.mark.postgres
async def test_the_database_engine_is_capped(pg_database: str, tmp_path: Path) -> None:
    async for gw in _gateway(pg_database, tmp_path, dict(CAPS)):
        await assert_capped_at(gw.res.engine, 3)


@pytest.mark.postgres
async def test_a_postgresql_key_store_is_capped(pg_database: str, tmp_path: Path) -> None:
    settings = gateway_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}",
        tmp_path / "data",
        data_keys_url=pg_database,
        **CAPS,
    )
    vault = build_vault(settings)
    try:
        await assert_capped_at(vault.keys.engine, 3)
    finally:
        await vault.close()


def test_the_defaults_are_the_former_pools_and_sqlite_keeps_one_connection(
    tmp_path: Path,
) -> None:
    settings = gateway_settings(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", tmp_path)
    assert (settings.storage.db_pool_size, settings.storage.db_max_overflow) == (20, 20)
    capped = gateway_settings(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}", tmp_path, **CAPS)
    vault = build_vault(capped)
    try:
        assert vault.keys.engine.pool.size() == 1  # type: ignore[attr-defined]
    finally:
        asyncio.run(vault.close())
