"""Rotating the key-encryption key (SEC-1): data keys are re-wrapped under the new KEK and
every sealed value still opens; the old KEK is then useless, and nothing was re-encrypted."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from image_router.account import service as accounts
from image_router.account.personal_data import UnknownKeyEncryptionKey, Vault
from image_router.db.session import make_engine, unit_of_work
from image_router.kit.crypto import new_key
from tests.conftest import vault_for_tests
from tests.integration.test_audit_cli import Cli


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


async def test_the_vault_rewraps_every_key_and_values_still_open(
    db_url: str, tmp_path: Path
) -> None:
    old = vault_for_tests(tmp_path)
    engine = make_engine(db_url)
    try:
        sealed = {}
        async with unit_of_work(engine) as conn:
            for n in range(3):
                account = await accounts.create_account(conn, old, f"user{n}@example.com")
                sealed[account.id] = await old.seal(account.id, f"prompt {n}")
        rotating = Vault(new_key(), old.index_key, old.keys, previous=(old.kek,))
        # Both KEKs open keys while rotating, so servers keep working throughout.
        some_id = next(iter(sealed))
        assert await rotating.open(some_id, sealed[some_id]) == "prompt 0"

        assert await rotating.rewrap() == 3
        assert await rotating.rewrap() == 0  # resumable: nothing left to do

        done = Vault(rotating.kek, old.index_key, old.keys)  # the old KEK is gone
        for n, (account_id, value) in enumerate(sealed.items()):
            assert await done.open(account_id, value) == f"prompt {n}"
        stale = Vault(old.kek, old.index_key, old.keys)
        with pytest.raises(UnknownKeyEncryptionKey):
            await stale.open(some_id, sealed[some_id])
    finally:
        await old.close()
        await engine.dispose()


def test_the_operator_rotates_with_the_cli(db_url: str, tmp_path: Path) -> None:
    old_kek, new_kek, index = new_key(), new_key(), new_key()
    cli = Cli(db_url, tmp_path)
    cli.env.update(PII_KEK=b64(old_kek), BLIND_INDEX_KEY=b64(index))
    cli("users", "create", "rotate@example.com", "--name", "Rota Tion")

    refused = cli("vault", "rewrap", ok=False)
    assert "PII_KEK_PREVIOUS" in refused.stderr

    cli.env.update(PII_KEK=b64(new_kek), PII_KEK_PREVIOUS=b64(old_kek))
    assert "re-wrapped 1 data key(s)" in cli("vault", "rewrap").stdout

    cli.env.update(PII_KEK_PREVIOUS=None)
    shown = cli("users", "show", "rotate@example.com", "--reason", "rotation check").stdout
    assert "Rota Tion" in shown
    assert "kek_rotation" in cli("audit", "list", "--action", "kek_rotation").stdout
    assert len(base64.b64decode(cli("vault", "new-key").stdout.strip())) == 32
