"""Upgrading a database from before encryption at rest seals what it held, losing nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic import command

from image_router.account import service as accounts
from image_router.config import Settings
from image_router.db.migrate import alembic_config, upgrade
from image_router.db.session import make_engine, unit_of_work
from image_router.resources import build_vault

BEFORE_SEALING = "d3fc81bf9b11"


async def test_plain_emails_names_and_prompts_are_sealed_by_the_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    path = tmp_path / "old.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(command.upgrade, alembic_config(url), BEFORE_SEALING)
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO accounts (id, email, name, role, balance, created_at) "
            "VALUES ('a1', 'old@example.com', 'Old Timer', 'user', 0, '2026-01-01 00:00:00')"
        )
        db.execute(
            "INSERT INTO generations (id, account_id, via_web_token, modality, model, provider,"
            " prompt, size, input_types, status, held, cost, output_urls, attempts, created_at,"
            " deadline_at) VALUES ('g1', 'a1', 0, 'image', 'test/test', 'test', 'a sentinel"
            " lighthouse', 'auto', '[]', 'success', 0, 0, '[]', '[]', '2026-01-01 00:00:00',"
            " '2026-01-01 00:05:00')"
        )

    await upgrade(url)

    raw = path.read_bytes()
    assert b"old@example.com" not in raw and b"sentinel" not in raw and b"Old Timer" not in raw
    vault = build_vault(Settings(data_dir=tmp_path))
    engine = make_engine(url)
    try:
        async with unit_of_work(engine) as conn:
            account = await accounts.find_account(conn, vault, "old@example.com")
            assert account is not None and account.name == "Old Timer"
            sealed = (
                await conn.exec_driver_sql("SELECT prompt_enc FROM generations WHERE id = 'g1'")
            ).scalar_one()
        assert await vault.open("a1", sealed) == "a sentinel lighthouse"
        assert await vault.keys.get("a1") is not None  # in the key store, not in old.db
    finally:
        await vault.close()
        await engine.dispose()
