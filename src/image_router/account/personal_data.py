"""The vault: per-account data keys, and sealing personal data and prompts under them.

A data key is made with the account and kept wrapped by the KEK in the key store
(`db/key_store.py`), a database apart from the main one. Values are sealed with the
account id as associated data. `destroy` deletes the data key: the crypto-shredding step
of erasure, after which nothing sealed for the account opens, in the live database or in
any backup of it. Unwrapped keys are cached briefly per process, so sealing a prompt costs
no extra query on the hot path.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from image_router.db.key_store import KeyStore
from image_router.kit import crypto
from image_router.kit.clock import utcnow

_CACHE_TTL_S = 300.0
_CACHE_SIZE = 10_000


class UnknownKeyEncryptionKey(RuntimeError):
    """A data key wrapped by another KEK than the configured one."""


def email_index(index_key: bytes, email: str) -> str:
    """The blind index of an e-mail: equal for equal addresses, whatever their case."""
    return crypto.blind_index(index_key, "email:" + email.strip().lower())


@dataclass
class Vault:
    kek: bytes
    index_key: bytes
    keys: KeyStore
    previous: tuple[bytes, ...] = ()  # earlier KEKs, still accepted while rotating
    _cache: OrderedDict[str, tuple[bytes, float]] = field(default_factory=OrderedDict)

    @property
    def kek_id(self) -> str:
        return crypto.key_id(self.kek)

    def email_index(self, email: str) -> str:
        return email_index(self.index_key, email)

    def subject_index(self, subject: str) -> str:
        """The HMAC kept of an identity provider's user id after erasure (SVX-3)."""
        return crypto.blind_index(self.index_key, "subject:" + subject)

    async def create_key(self, account_id: str) -> bytes:
        """A new data key for the account (or the one a concurrent call stored first)."""
        dek = crypto.new_key()
        await self.keys.add(account_id, self.wrap(account_id, dek), self.kek_id, utcnow())
        stored = await self.key_for(account_id, cached=False)
        assert stored is not None, "a data key vanished while it was being created"
        return stored

    def wrap(self, account_id: str, dek: bytes) -> bytes:
        return crypto.seal(self.kek, dek, "dek:" + account_id)

    async def key_for(self, account_id: str, *, cached: bool = True) -> bytes | None:
        """The account's data key, or None once it has been destroyed."""
        hit = self._cache.get(account_id) if cached else None
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        found = await self.keys.get(account_id)
        if found is None:
            self._cache.pop(account_id, None)
            return None
        wrapped, kek_id = found
        known = {crypto.key_id(k) for k in (self.kek, *self.previous)}
        if kek_id not in known:
            raise UnknownKeyEncryptionKey(
                f"the data key of account {account_id} was wrapped by key {kek_id}, "
                f"not by the configured PII_KEK ({self.kek_id}) or PII_KEK_PREVIOUS"
            )
        dek, _ = self._unwrap_any(account_id, wrapped)
        self._remember(account_id, dek)
        return dek

    async def ensure_key(self, account_id: str) -> bytes:
        return await self.key_for(account_id) or await self.create_key(account_id)

    async def rewrap(self) -> int:
        """Re-wrap under the current KEK every data key still wrapped by a previous one.

        KEK rotation: serve with the new `PII_KEK` and the old one in `PII_KEK_PREVIOUS`
        (both open keys meanwhile), run this, then drop the old KEK. Sealed values are not
        touched. Resumable; returns how many keys were re-wrapped.
        """
        rewrapped, after = 0, ""
        while batch := await self.keys.wrapped_keys(after=after):
            for account_id, wrapped in batch:
                after = account_id
                dek, kek = self._unwrap_any(account_id, wrapped)
                if kek is not self.kek:
                    again = self.wrap(account_id, dek)
                    rewrapped += await self.keys.replace(account_id, wrapped, again, self.kek_id)
        return rewrapped

    def _unwrap_any(self, account_id: str, wrapped: bytes) -> tuple[bytes, bytes]:
        for kek in (self.kek, *self.previous):
            try:
                return crypto.open_sealed(kek, wrapped, "dek:" + account_id), kek
            except crypto.SealError:
                continue
        raise UnknownKeyEncryptionKey(
            f"the data key of account {account_id} opens with neither PII_KEK nor PII_KEK_PREVIOUS"
        )

    async def destroy(self, account_id: str) -> None:
        await self.keys.delete(account_id)
        self._cache.pop(account_id, None)

    async def seal(self, account_id: str, text: str | None) -> bytes | None:
        if text is None:
            return None
        return crypto.seal(await self.ensure_key(account_id), text.encode(), account_id)

    async def open(self, account_id: str, sealed: bytes | None) -> str | None:
        """The plaintext, or None when nothing is stored or the data key is gone."""
        if sealed is None:
            return None
        dek = await self.key_for(account_id)
        return None if dek is None else self.open_with(dek, account_id, sealed)

    @staticmethod
    def open_with(dek: bytes, account_id: str, sealed: bytes | None) -> str | None:
        if sealed is None:
            return None
        return crypto.open_sealed(dek, bytes(sealed), account_id).decode()

    def _remember(self, account_id: str, dek: bytes) -> None:
        self._cache[account_id] = (dek, time.monotonic() + _CACHE_TTL_S)
        self._cache.move_to_end(account_id)
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    async def close(self) -> None:
        await self.keys.close()
