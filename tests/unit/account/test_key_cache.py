"""The API-key cache: what it remembers, for how long, and what makes it forget at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, update
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account import service as accounts
from image_router.account.key_cache import KeyCache, authenticate
from image_router.account.key_changes import ChangeFile, KeyChanges
from image_router.account.service import Caller
from image_router.db import changes
from image_router.db.session import autocommit, make_engine, unit_of_work
from image_router.db.tables import Account, ApiKey
from image_router.kit.clock import utcnow
from image_router.ledger import service as ledger
from tests.conftest import vault_for_tests

CALLER = Caller(account_id="a", balance=100, api_key_id="k")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_stored_key_is_served_until_its_ttl_counted_from_before_the_read() -> None:
    clock = Clock()
    cache = KeyCache(5, clock=clock)
    assert cache.lookup("h", utcnow()) is None
    started = cache.begin()
    clock.now += 1  # the database read took a second
    cache.store("h", CALLER, None, started)
    assert cache.lookup("h", utcnow()) is CALLER
    clock.now += 3.9
    assert cache.lookup("h", utcnow()) is CALLER
    clock.now += 0.2  # 5.1 s after the read began
    assert cache.lookup("h", utcnow()) is None
    assert len(cache) == 0


def test_the_keys_own_expiry_ends_the_entry_whatever_the_ttl() -> None:
    cache = KeyCache(5, clock=Clock())
    now = utcnow()
    cache.store("h", CALLER, now + timedelta(seconds=1), cache.begin())
    assert cache.lookup("h", now) is CALLER
    assert cache.lookup("h", now + timedelta(seconds=1)) is None


def test_a_read_that_raced_a_clear_is_not_remembered() -> None:
    cache = KeyCache(5, clock=Clock())
    started = cache.begin()  # read begins: the key is still valid in its snapshot
    cache.clear()  # the key is revoked meanwhile
    cache.store("h", CALLER, None, started)
    assert cache.lookup("h", utcnow()) is None
    cache.store("h", CALLER, None, cache.begin())  # a read after the clear is kept
    assert cache.lookup("h", utcnow()) is CALLER


def test_a_changed_signal_clears_everything() -> None:
    version = [1]
    cache = KeyCache(5, signal=lambda: version[0], clock=Clock())
    cache.store("h", CALLER, None, cache.begin())
    assert cache.lookup("h", utcnow()) is CALLER
    version[0] = 2  # another process committed a change
    assert cache.lookup("h", utcnow()) is None
    cache.store("h", CALLER, None, cache.begin())
    assert cache.lookup("h", utcnow()) is CALLER


def test_off_suspended_and_full() -> None:
    off = KeyCache(0, clock=Clock())
    off.store("h", CALLER, None, off.begin())
    assert off.lookup("h", utcnow()) is None
    cache = KeyCache(5, max_entries=2, clock=Clock())
    cache.suspend()  # cannot hear changes: serves nothing
    cache.store("h", CALLER, None, cache.begin())
    assert cache.lookup("h", utcnow()) is None
    cache.resume()
    for name in ("a", "b", "c"):
        cache.store(name, CALLER, None, cache.begin())
    assert len(cache) == 2
    assert cache.lookup("a", utcnow()) is None  # the oldest went first
    assert cache.lookup("c", utcnow()) is CALLER


async def test_the_change_file_grows_on_every_bump(tmp_path: Path) -> None:
    file = ChangeFile(tmp_path / "key-changes")
    assert file.version() is None
    seen = set()
    for _ in range(5):  # as fast as they come: every version differs
        await file.bump()
        seen.add(file.version())
    assert len(seen) == 5


# ------------------------------------------------------------- against a real database


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def announced(engine: AsyncEngine) -> AsyncIterator[list[int]]:
    """How many committed changes the engine announced."""
    heard: list[int] = []

    async def listener() -> None:
        heard.append(1)

    undo = changes.subscribe(engine, listener)
    yield heard
    undo()


async def _account_and_key(engine: AsyncEngine, tmp_path: Path) -> tuple[str, str, str]:
    vault = vault_for_tests(tmp_path / "vault")
    async with unit_of_work(engine) as conn:
        account = await accounts.create_account(conn, vault, "ada@example.com")
        view, secret = await accounts.create_key(conn, account.id, "k")
    await vault.close()
    return account.id, view.id, secret


async def _revoke_then_fail(engine: AsyncEngine, key_id: str) -> None:
    async with unit_of_work(engine) as conn:
        await accounts.revoke_key(conn, key_id)
        raise RuntimeError


async def test_what_is_announced_and_what_is_not(
    engine: AsyncEngine, tmp_path: Path, announced: list[int]
) -> None:
    account, key_id, _ = await _account_and_key(engine, tmp_path)
    announced.clear()
    # A generation's hold and release, and the key's last-used touch: silent.
    async with unit_of_work(engine) as conn:
        assert await ledger.grant(conn, account, 1000, reason="test")
    assert len(announced) == 1  # credit from outside a generation is announced
    async with unit_of_work(engine) as conn:
        assert await ledger.hold(conn, account, 10, generation_id="g")
        await ledger.release(conn, account, 10, generation_id="g")
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))
        await conn.execute(update(Account).where(Account.id == account).values(name_enc=None))
    assert len(announced) == 1
    # Rolled back: nothing to announce.
    with pytest.raises(RuntimeError):
        await _revoke_then_fail(engine, key_id)
    assert len(announced) == 1
    for values in ({"processing_restricted": True}, {"status": "banned"}):
        async with unit_of_work(engine) as conn:
            await conn.execute(update(Account).where(Account.id == account).values(**values))
    async with autocommit(engine) as conn:  # each statement its own commit
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(is_active=False))
    async with unit_of_work(engine) as conn:
        await accounts.revoke_key(conn, key_id)
    assert len(announced) == 5


async def test_a_hit_skips_the_database_and_a_revocation_ends_it_at_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    _, key_id, secret = await _account_and_key(engine, tmp_path)
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    file = ChangeFile(tmp_path / "key-changes")
    keys = KeyChanges(KeyCache(5, signal=file.version), file).attach(engine)
    try:
        first = await authenticate(keys.cache, engine, secret)
        assert first is not None and first.api_key_id == key_id
        reads = len(statements)
        assert await authenticate(keys.cache, engine, secret) == first
        assert len(statements) == reads  # served from the cache
        async with unit_of_work(engine) as conn:
            await accounts.revoke_key(conn, key_id)
        assert await authenticate(keys.cache, engine, secret) is None
        assert file.version() is not None  # the other processes were told too
    finally:
        await keys.close()


async def test_another_process_change_is_seen_through_the_file(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    _, key_id, secret = await _account_and_key(engine, tmp_path)
    file = ChangeFile(tmp_path / "key-changes")
    cache = KeyCache(5, signal=file.version)  # not subscribed: as in another process
    assert await authenticate(cache, engine, secret) is not None
    # The change is written as another process would: not announced here, but the file.
    async with engine.begin() as conn:
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(is_active=False))
    assert await authenticate(cache, engine, secret) is not None  # nobody told this cache
    await file.bump()
    assert await authenticate(cache, engine, secret) is None
