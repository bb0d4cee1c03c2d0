"""`vault reconcile` after a restore (privacy/key_reconcile.py): an older key store's keys
of erased accounts are destroyed again; an older main database's live rows of erased
people are found (their sealed values have no key any more); nothing else is touched."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update

from image_router.account import service as accounts
from image_router.db.session import make_engine, unit_of_work
from image_router.db.tables import Account
from image_router.privacy.erasure import DELETED
from image_router.privacy.key_reconcile import reconcile_keys, stored_key_ids
from tests.conftest import vault_for_tests


async def test_reconcile_destroys_erased_keys_and_lists_keyless_accounts(
    any_db_url: str, tmp_path: Path
) -> None:
    vault = vault_for_tests(tmp_path)
    engine = make_engine(any_db_url)
    try:
        async with unit_of_work(engine) as conn:
            kept, erased, keyless = [
                await accounts.create_account(conn, vault, f"{who}@example.com", name=who)
                for who in ("kept", "erased", "keyless")
            ]
            no_data = await accounts.create_account(conn, vault, "plain@example.com")
        async with unit_of_work(engine) as conn:
            # Erased, as the main database records it; its key back from an older key store.
            await conn.execute(
                update(Account)
                .where(Account.id == erased.id)
                .values(status=DELETED, email_enc=None, name_enc=None, email_bidx=None)
            )
            # Erased after the main database's backup: the row is live, the key is gone.
            await vault.destroy(keyless.id)
            # Nothing sealed at all: no key needed, not listed.
            await conn.execute(
                update(Account)
                .where(Account.id == no_data.id)
                .values(email_enc=None, email_bidx=None, name_enc=None)
            )
            await vault.destroy(no_data.id)
        assert {kept.id, erased.id} <= await stored_key_ids(vault)

        async with unit_of_work(engine) as conn:
            found = await reconcile_keys(conn, vault)
        assert found.destroyed == [erased.id]
        assert found.keyless == [keyless.id]
        assert await stored_key_ids(vault) == {kept.id}
        assert await vault.key_for(erased.id, cached=False) is None

        async with unit_of_work(engine) as conn:
            view = await accounts.get_account(conn, vault, kept.id)
            again = await reconcile_keys(conn, vault)
        assert view is not None and view.name == "kept"  # the others' fate changed nothing
        assert again.destroyed == [] and again.keyless == [keyless.id]
    finally:
        await vault.close()
        await engine.dispose()
