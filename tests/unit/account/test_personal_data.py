"""Envelope encryption of personal data: what a stolen database or backup can and cannot show."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
from sqlalchemy import select, text

from image_router.account import service as accounts
from image_router.account.personal_data import UnknownKeyEncryptionKey, Vault, email_index
from image_router.config import Settings
from image_router.db.session import make_engine, unit_of_work
from image_router.db.tables import Account
from image_router.kit import crypto
from image_router.resources import build_vault
from tests.conftest import vault_for_tests


def test_a_value_opens_only_for_its_own_account_and_key() -> None:
    key = crypto.new_key()
    sealed = crypto.seal(key, b"ada@example.com", "account-1")
    assert b"ada" not in sealed
    assert crypto.open_sealed(key, sealed, "account-1") == b"ada@example.com"
    with pytest.raises(crypto.SealError):  # copied onto another account's row
        crypto.open_sealed(key, sealed, "account-2")
    with pytest.raises(crypto.SealError):
        crypto.open_sealed(crypto.new_key(), sealed, "account-1")
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    with pytest.raises(crypto.SealError):
        crypto.open_sealed(key, tampered, "account-1")
    # Two seals of one value differ (random nonce), so equal e-mails are not visible.
    assert crypto.seal(key, b"x", "a") != crypto.seal(key, b"x", "a")


def test_the_blind_index_finds_an_email_whatever_its_case() -> None:
    key = crypto.new_key()
    assert email_index(key, " Ada@Example.com ") == email_index(key, "ada@example.com")
    assert email_index(key, "ada@example.com") != email_index(key, "bob@example.com")
    other = crypto.new_key()  # another deployment's index key
    assert email_index(other, "ada@example.com") != email_index(key, "ada@example.com")


def test_keys_come_from_settings_or_from_files_created_once(tmp_path: Path) -> None:
    first = build_vault(Settings(data_dir=tmp_path))
    again = build_vault(Settings(data_dir=tmp_path))
    assert (first.kek, first.index_key) == (again.kek, again.index_key)
    assert (tmp_path / "keys" / "pii-kek.key").stat().st_mode & 0o777 == 0o600
    kek = base64.b64encode(b"k" * 32).decode()
    configured = build_vault(Settings(data_dir=tmp_path, pii_kek=kek))
    assert configured.kek == b"k" * 32
    with pytest.raises(ValueError, match="PII_KEK must be 32 bytes"):
        build_vault(Settings(data_dir=tmp_path, pii_kek=base64.b64encode(b"short").decode()))
    with pytest.raises(ValueError, match="must differ"):
        build_vault(Settings(data_dir=tmp_path, pii_kek=kek, blind_index_key=kek))
    same = f"sqlite+aiosqlite:///{tmp_path / 'one.db'}"
    with pytest.raises(ValueError, match="another database"):
        build_vault(Settings(data_dir=tmp_path, database_url=same, data_keys_url=same))


async def test_nothing_personal_is_stored_in_clear_and_shredding_is_final(
    db_url: str, tmp_path: Path
) -> None:
    vault = vault_for_tests(tmp_path / "keys")
    engine = make_engine(db_url)
    try:
        async with unit_of_work(engine) as conn:
            account = await accounts.create_account(
                conn, vault, "Grace@Example.com", name="Grace Hopper"
            )
        async with unit_of_work(engine) as conn:
            raw = (await conn.execute(text("SELECT * FROM accounts"))).mappings().one()
            dump = repr(dict(raw))
            assert "grace" not in dump.lower() and "Hopper" not in dump
            found = await accounts.find_account(conn, vault, "grace@example.com")
            assert found is not None and (found.email, found.name) == (
                "grace@example.com",
                "Grace Hopper",
            )
            sealed = await conn.scalar(select(Account.name_enc).where(Account.id == account.id))
        # The data key lives in the key store, never in the main database (or its backups).
        wrapped = await vault.keys.get(account.id)
        assert wrapped is not None
        main_database = await asyncio.to_thread(Path(db_url.split("///", 1)[1]).read_bytes)
        assert wrapped[0] not in main_database

        # A process with another KEK refuses loudly rather than returning garbage.
        stranger = Vault(crypto.new_key(), vault.index_key, vault.keys)
        with pytest.raises(UnknownKeyEncryptionKey):
            await stranger.open(account.id, sealed)

        await vault.destroy(account.id)
        fresh = Vault(vault.kek, vault.index_key, vault.keys)  # no cached key: a restore
        assert await fresh.open(account.id, sealed) is None
    finally:
        await vault.close()
        await engine.dispose()
