"""After a restore: bring the key store and the main database back into agreement.

The two are backed up apart (docs/deployment.md "Backups"), so a restore puts one of them
back to an earlier moment than the other:

- **An older key store** (restored from its backup) holds again the data keys of accounts
  erased since that backup. The main database still records those erasures (the account is
  a tombstone), so every such key is destroyed again here: erasure must stay final.
- **An older main database** brings back, as live accounts, people erased since that
  backup. Their sealed values stay unreadable (the current key store no longer has their
  keys: crypto-shredding at work), but their API keys, sessions and balance came back with
  the rows. They are found here as accounts holding sealed values without a data key, and
  erased again on the operator's word (`image-router vault reconcile --erase`). The same
  list also names accounts created after an older key store's backup, whose sealed values
  that restore lost; the operator reads the list before erasing anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account.personal_data import Vault
from image_router.db.tables import Account, Generation
from image_router.privacy.erasure import DELETED

_BATCH = 1000


@dataclass(frozen=True)
class KeyReconciliation:
    #: Erased accounts whose data key was still (again) in the key store, now destroyed.
    destroyed: list[str]
    #: Live accounts whose sealed values have no data key: nothing of theirs opens.
    keyless: list[str]


async def stored_key_ids(vault: Vault) -> set[str]:
    """Every account id the key store holds a data key for."""
    found: set[str] = set()
    after = ""
    while batch := await vault.keys.wrapped_keys(after=after, limit=_BATCH):
        found.update(account_id for account_id, _ in batch)
        after = batch[-1][0]
    return found


async def reconcile_keys(conn: AsyncConnection, vault: Vault) -> KeyReconciliation:
    """Destroy the keys of erased accounts; list live accounts whose keys are gone."""
    keys = await stored_key_ids(vault)
    erased = set((await conn.scalars(select(Account.id).where(Account.status == DELETED))).all())
    destroyed = sorted(keys & erased)
    for account_id in destroyed:
        await vault.destroy(account_id)
    sealed = or_(
        Account.email_enc.is_not(None),
        Account.name_enc.is_not(None),
        Account.image_url_enc.is_not(None),
        Account.restricted_reason_enc.is_not(None),
        exists().where(Generation.account_id == Account.id, Generation.prompt_enc.is_not(None)),
    )
    holders = (
        await conn.scalars(select(Account.id).where(Account.status != DELETED, sealed))
    ).all()
    keyless = sorted(set(holders) - keys)
    return KeyReconciliation(destroyed=destroyed, keyless=keyless)
