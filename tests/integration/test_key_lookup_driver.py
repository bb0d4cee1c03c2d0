"""A key cache miss on PostgreSQL reads through asyncpg (`authenticate_key_hash_pg`): it
must admit exactly the keys the SQLAlchemy path admits, with the same caller, and touch
`last_used_at` the same way."""

from __future__ import annotations

from datetime import timedelta

import pytest

from image_router.account import service as accounts
from image_router.account.key_cache import KeyCache, authenticate
from image_router.db.driver import pg_connection
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.kit.ids import hash_secret
from tests.conftest import Gateway

pytestmark = pytest.mark.postgres


async def both_paths(gw: Gateway, secret: str) -> tuple[object, object]:
    key_hash = hash_secret(secret)
    async with unit_of_work(gw.res.engine) as conn:
        orm = await accounts.authenticate_key_hash(conn, key_hash)
    async with pg_connection(gw.res.engine) as pg:
        driver = await accounts.authenticate_key_hash_pg(pg, key_hash)
    return orm, driver


async def test_the_driver_admits_exactly_what_the_orm_admits(pg_gateway: Gateway) -> None:
    gw = pg_gateway
    account, plain = await gw.account("1.5")
    now = utcnow()
    async with unit_of_work(gw.res.engine) as conn:
        _, limited = await accounts.create_key(
            conn, account, "limited", spend_limit=300, spend_limit_period="day"
        )
        _, management = await accounts.create_key(conn, account, "mgmt", management=True)
        _, expiring = await accounts.create_key(
            conn, account, "expiring", expires_at=now + timedelta(hours=1)
        )
        _, expired = await accounts.create_key(
            conn, account, "expired", expires_at=now - timedelta(seconds=1)
        )
        revoked_view, revoked = await accounts.create_key(conn, account, "revoked")
        await accounts.revoke_key(conn, revoked_view.id)
    restricted_account, restricted = await gw.account("0.2")
    disabled_account, disabled = await gw.account("0.2")
    await gw.execute(
        "UPDATE accounts SET processing_restricted = true, store_prompts = false,"
        " allow_routing_improvement = false WHERE id = :a",
        a=restricted_account,
    )
    await gw.execute("UPDATE accounts SET status = 'disabled' WHERE id = :a", a=disabled_account)

    admitted = {plain, limited, management, expiring, restricted}
    for secret in (plain, limited, management, expiring, expired, revoked, restricted, disabled):
        orm, driver = await both_paths(gw, secret)
        assert driver == orm, secret[:8]
        assert (driver is not None) == (secret in admitted), secret[:8]
    _, caller = await both_paths(gw, restricted)
    assert caller is not None and caller[0].restricted and not caller[0].store_prompts  # type: ignore[index]
    _, caller = await both_paths(gw, limited)
    assert caller is not None and caller[0].spend_limit == 300  # type: ignore[index]
    _, caller = await both_paths(gw, expiring)
    assert caller is not None and caller[1] == now + timedelta(hours=1)  # type: ignore[index]


async def test_a_miss_touches_last_used_at_at_most_once_a_minute(pg_gateway: Gateway) -> None:
    gw = pg_gateway
    _, secret = await gw.account("0.1")
    cache = KeyCache(0)  # every lookup misses
    key_hash = hash_secret(secret)

    async def last_used() -> object:
        rows = await gw.rows("SELECT last_used_at FROM api_keys WHERE key_hash = :h", h=key_hash)
        return rows[0]["last_used_at"]

    assert await last_used() is None
    assert await authenticate(cache, gw.res.engine, secret) is not None
    first = await last_used()
    assert first is not None
    assert await authenticate(cache, gw.res.engine, secret) is not None
    assert await last_used() == first  # within the minute: not written again
    await gw.execute(
        "UPDATE api_keys SET last_used_at = last_used_at - interval '61 seconds'"
        " WHERE key_hash = :h",
        h=key_hash,
    )
    assert await authenticate(cache, gw.res.engine, secret) is not None
    assert await last_used() > first  # type: ignore[operator]
    assert await authenticate(cache, gw.res.engine, "ir-not-a-key") is None
