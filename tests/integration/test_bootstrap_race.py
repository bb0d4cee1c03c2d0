"""Two hosts starting at once on a fresh PostgreSQL database (the fleet soak): both count no
account and both create the bootstrap admin. The second must take the first's admin as
"already there" and start, not exit with "already exists"."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from image_router.account import service as accounts
from image_router.cli import common
from image_router.cli.main import _bootstrap_admin
from image_router.db.session import make_engine, unit_of_work
from tests.conftest import _truncate


@pytest.fixture
def fresh_host_env(
    pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    asyncio.run(_truncate(pg_database))
    monkeypatch.setenv("DATABASE_URL", pg_database)
    monkeypatch.setenv("DATA_DIR", str(tmp_path))  # the hosts share their keys, as they must
    monkeypatch.setenv("PUBLIC_URL", "http://gateway.test")
    common.settings.cache_clear()
    common.vault.cache_clear()
    yield pg_database
    common.settings.cache_clear()
    common.vault.cache_clear()


@pytest.mark.postgres
async def test_two_hosts_bootstrapping_at_once_both_start_with_one_admin(
    fresh_host_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    both_counted = asyncio.Barrier(2)
    real_create = accounts.create_account

    async def create_after_both_counted(*args: Any, **kwargs: Any) -> accounts.AccountView:
        # Both hosts have found no account before either inserts: the race, every time.
        await both_counted.wait()
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(accounts, "create_account", create_after_both_counted)
    engine = make_engine(fresh_host_env)

    async def host() -> tuple[str, str, str | None] | None:
        async with unit_of_work(engine) as conn:
            return await _bootstrap_admin(conn)

    try:
        results = await asyncio.wait_for(asyncio.gather(host(), host()), timeout=30)
        async with unit_of_work(engine) as conn:
            roles = (await conn.execute(text("SELECT role FROM accounts"))).scalars().all()
            keys = await conn.scalar(text("SELECT count(*) FROM api_keys"))
    finally:
        await engine.dispose()
        await common.vault().close()
    created = [r for r in results if r is not None]
    assert len(created) == 1, results  # one host made (and printed) the admin and its key
    assert roles == ["admin"]
    assert keys == 1
