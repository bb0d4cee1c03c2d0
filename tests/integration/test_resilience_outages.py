"""The gateway when a part of it goes away (issue #15): PostgreSQL, Redis or S3 cut off
behind a TCP proxy this test controls (the shared servers keep running for everyone else),
and `/ready`, which says so.

Every case checks the books: the balance equals the ledger, and nothing is charged for a
request that failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, PendingRollbackError, SQLAlchemyError

from image_router.account import key_cache
from image_router.db.outage import is_outage
from image_router.db.session import make_engine, unit_of_work
from image_router.generation.recovery import release_expired_holds
from image_router.kit.clock import utcnow
from image_router.kit.ids import hash_secret
from image_router.ledger import service as ledger_service
from image_router.limits.free_tier import FreeTier
from tests.conftest import Gateway, _gateway, _truncate
from tests.fakes.s3 import s3_server
from tests.fakes.tcp_proxy import TcpProxy, tcp_proxy

IMAGE = "/v1/openai/images/generations"
DALLE2 = {"model": "openai/dall-e-2", "prompt": "a lighthouse", "size": "1024x1024"}
BUCKET = "outages"
REDIS = urlsplit(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))


def through(url: str, proxy: TcpProxy) -> str:
    """`url` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    user = f"{netloc[0]}@" if len(netloc) == 2 else ""
    return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))


async def _processing(gw: Gateway) -> None:
    """Wait until a generation holds its credit (the vendor is then working on it)."""
    async with asyncio.timeout(10):
        while not await gw.rows(  # noqa: ASYNC110 - a database row, no event to wait on
            "SELECT id FROM generations WHERE status = 'processing'"
        ):
            await asyncio.sleep(0.05)


async def books(gw: Gateway, account_id: str) -> tuple[int, int]:
    return await gw.balance(account_id), await gw.ledger_sum(account_id)


# ------------------------------------------------------------------------------ /ready


async def test_ready_checks_database_and_storage_and_is_documented(gateway: Gateway) -> None:
    answer = await gateway.client.get("/ready")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["storage"]["ok"] is True
    assert "redis" not in body["checks"]  # not configured
    assert answer.headers["cache-control"] == "no-store"
    operation = (await gateway.client.get("/openapi.json")).json()["paths"]["/ready"]["get"]
    assert {"200", "503"} <= set(operation["responses"])
    assert (await gateway.client.get("/health")).json() == {"status": "ok"}


async def test_ready_answers_503_while_draining_and_health_stays_up(gateway: Gateway) -> None:
    gateway.res.drain.begin()
    answer = await gateway.client.get("/ready")
    assert answer.status_code == 503
    assert answer.json()["status"] == "draining"
    assert answer.json()["checks"]["database"]["ok"] is True  # the reason is the drain
    assert (await gateway.client.get("/health")).status_code == 200


@pytest.mark.parametrize(
    "gateway_overrides", [{"rate_limits_enabled": True, "rate_limit_general": "2/minute"}]
)
async def test_ready_is_not_rate_limited(gateway: Gateway) -> None:
    for _ in range(5):
        assert (await gateway.client.get("/ready")).status_code == 200
    assert (await gateway.client.get("/v1/models")).status_code == 200
    assert (await gateway.client.get("/v1/models")).status_code == 200
    assert (await gateway.client.get("/v1/models")).status_code == 429


# ------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture
def pg_proxy(pg_database: str) -> Iterator[TcpProxy]:
    parts = urlsplit(pg_database)
    with tcp_proxy(parts.hostname or "127.0.0.1", parts.port or 5432) as proxy:
        yield proxy


@pytest.fixture
async def pg_gateway(
    pg_database: str, pg_proxy: TcpProxy, tmp_path: Path
) -> AsyncIterator[Gateway]:
    """The gateway on PostgreSQL reached through `pg_proxy`, on emptied tables."""
    await _truncate(pg_database)
    async for gw in _gateway(through(pg_database, pg_proxy), tmp_path, {}):
        yield gw


@pytest.mark.postgres
async def test_losing_postgresql_answers_503_and_the_pool_recovers(
    pg_gateway: Gateway, pg_proxy: TcpProxy
) -> None:
    gw = pg_gateway
    account_id, key = await gw.account("1")
    assert (await gw.post(IMAGE, key, json=DALLE2)).status_code == 200
    before = await books(gw, account_id)
    assert before[0] == before[1]

    pg_proxy.cut()
    for _ in range(3):  # both the API key lookup and the money path's raw connections
        refused = await gw.post(IMAGE, key, json=DALLE2)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "database_unavailable"
        assert refused.json()["error"]["type"] == "service_unavailable"
        assert int(refused.headers["retry-after"]) > 0
    ready = await gw.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["status"] == "unavailable"
    assert ready.json()["checks"]["database"]["ok"] is False
    assert ready.json()["checks"]["storage"]["ok"] is True

    pg_proxy.restore()
    # No restart: the very next request is served (closed connections are replaced at
    # checkout, before any statement fails on them).
    served = await gw.post(IMAGE, key, json=DALLE2)
    assert served.status_code == 200, served.text
    assert (await gw.client.get("/ready")).status_code == 200
    after = await books(gw, account_id)
    assert after[0] == after[1]
    assert before[0] - after[0] == 160  # one more dall-e-2 charged, nothing for the 503s


@pytest.mark.postgres
async def test_a_hold_that_cannot_be_settled_is_left_for_the_reconciler(
    pg_gateway: Gateway, pg_proxy: TcpProxy, pg_database: str
) -> None:
    gw = pg_gateway
    account_id, key = await gw.account("1")
    start = await books(gw, account_id)
    gw.openai.delay = 1.0
    request = asyncio.ensure_future(gw.post(IMAGE, key, json=DALLE2))
    await _processing(gw)
    pg_proxy.cut()  # the vendor is still working: the settle will find no database
    answer = await request
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "database_unavailable"

    pg_proxy.restore()
    (row,) = await gw.rows("SELECT id, status, held FROM generations")
    assert row["status"] == "processing"  # not stranded: the reconciler owns it now
    assert await gw.balance(account_id) == start[0] - row["held"]
    await gw.execute(  # its deadline passed
        "UPDATE generations SET deadline_at = :at", at=utcnow() - timedelta(minutes=10)
    )
    assert await release_expired_holds(gw.res.engine, grace=timedelta(0)) == 1
    assert await books(gw, account_id) == start
    (row,) = await gw.rows("SELECT status, cost FROM generations")
    assert row["status"] == "error"


# ------------------------------------------------------------------------------ Redis


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    with tcp_proxy(REDIS.hostname or "127.0.0.1", REDIS.port or 6379) as proxy:
        yield proxy


@pytest.fixture
async def redis_gateway(
    db_url: str, tmp_path: Path, redis_proxy: TcpProxy
) -> AsyncIterator[Gateway]:
    overrides: dict[str, Any] = {
        "redis_url": through(REDIS.geturl(), redis_proxy),
        "redis_namespace": f"outage-{os.urandom(4).hex()}",
        "redis_timeout_s": 0.5,
        "rate_limits_enabled": True,
        "rate_limit_general": "4/minute",
    }
    async for gw in _gateway(db_url, tmp_path, overrides):
        yield gw


def redis_up() -> float | None:
    return REGISTRY.get_sample_value("image_router_redis_up")


async def test_losing_redis_falls_back_to_per_process_limits_and_health(
    redis_gateway: Gateway, redis_proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    gw = redis_gateway
    account_id, key = await gw.account("1")
    assert (await gw.post(IMAGE, key, json=DALLE2)).status_code == 200  # 1 of 4, in Redis
    assert redis_up() == 1.0
    assert (await gw.client.get("/ready")).json()["checks"]["redis"]["ok"] is True

    caplog.set_level(logging.INFO, logger="image_router.kit.link")
    redis_proxy.cut()
    started = asyncio.get_running_loop().time()
    # Generations go on (route health in this process), and the limit still holds: the
    # count starts afresh in memory, so four more pass and the fifth is refused.
    for _ in range(4):
        served = await gw.post(IMAGE, key, json=DALLE2)
        assert served.status_code == 200, served.text
    refused = await gw.post(IMAGE, key, json=DALLE2)
    assert refused.status_code == 429
    assert asyncio.get_running_loop().time() - started < 10  # nothing waited on Redis long
    assert redis_up() == 0.0
    ready = await gw.client.get("/ready")
    assert ready.status_code == 200  # Redis is not needed to serve
    assert ready.json()["checks"]["redis"]["ok"] is False
    await asyncio.sleep(2.5)  # the key-change listener retries meanwhile, quietly
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "Redis is unavailable" in w]) == 1, warnings
    assert len([w for w in warnings if "key-change subscription lost" in w]) == 1, warnings

    redis_proxy.restore()
    ready = await gw.client.get("/ready")
    assert ready.json()["checks"]["redis"]["ok"] is True
    assert redis_up() == 1.0
    back = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len([m for m in back if m.startswith("Redis is back")]) == 1, back
    # Counted in Redis again, where the window of the first request is still open.
    for _ in range(3):
        assert (await gw.post(IMAGE, key, json=DALLE2)).status_code == 200
    assert (await gw.post(IMAGE, key, json=DALLE2)).status_code == 429
    balance, entries = await books(gw, account_id)
    assert balance == entries == 10_000 - 8 * 160


# ------------------------------------------------------------------------------ S3


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with s3_server(BUCKET) as url:
        yield url


@pytest.fixture
async def s3_gateway(
    db_url: str, tmp_path: Path, s3_endpoint: str
) -> AsyncIterator[tuple[Gateway, TcpProxy]]:
    parts = urlsplit(s3_endpoint)
    with tcp_proxy(parts.hostname or "127.0.0.1", parts.port or 80) as proxy:
        overrides: dict[str, Any] = {
            "storage_url": f"s3://{BUCKET}",
            "s3_endpoint": through(s3_endpoint, proxy),
            "s3_region": "us-east-1",
            "s3_access_key_id": "testing",
            "s3_secret_access_key": "testing",
        }
        async for gw in _gateway(db_url, tmp_path, overrides):
            yield gw, proxy


async def test_losing_s3_answers_503_storage_unavailable_and_releases_the_hold(
    s3_gateway: tuple[Gateway, TcpProxy],
) -> None:
    gw, proxy = s3_gateway
    account_id, key = await gw.account("1")
    assert (await gw.client.get("/ready")).json()["checks"]["storage"]["ok"] is True
    assert (await gw.post(IMAGE, key, json=DALLE2)).status_code == 200

    proxy.cut()
    refused = await gw.post(IMAGE, key, json=DALLE2)
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "storage_unavailable"
    assert int(refused.headers["retry-after"]) > 0
    ready = await gw.client.get("/ready")
    assert ready.status_code == 503
    assert ready.json()["checks"]["storage"] == {"ok": False, "error": "StorageError"}
    rows = await gw.generations()
    assert rows[-1]["status"] == "error"
    assert rows[-1]["cost"] in (0, None)

    proxy.restore()
    assert (await gw.client.get("/ready")).status_code == 200
    assert (await gw.post(IMAGE, key, json=DALLE2)).status_code == 200
    assert await books(gw, account_id) == (10_000 - 2 * 160, 10_000 - 2 * 160)


# ------------------------------------------------------------------------------ mid-transaction


@pytest.mark.postgres
async def test_a_cut_inside_a_unit_of_work_surfaces_the_outage(
    pg_database: str, pg_proxy: TcpProxy
) -> None:
    """The fleet soak's 500s: the error path of `unit_of_work` asked the lost connection for
    its change flag, which raised `PendingRollbackError` in place of the outage."""
    engine = make_engine(through(pg_database, pg_proxy))

    async def restart_mid_transaction() -> None:
        async with unit_of_work(engine) as conn:
            await conn.execute(text("SELECT 1"))
            pg_proxy.cut()  # PostgreSQL restarts mid-transaction
            await conn.execute(text("SELECT 2"))

    try:
        # The statement's own error, not the PendingRollbackError the clean-up used to raise.
        with pytest.raises(DBAPIError) as raised:
            await restart_mid_transaction()
        assert not isinstance(raised.value, PendingRollbackError), repr(raised.value)
        assert is_outage(raised.value), repr(raised.value)
        pg_proxy.restore()
        async with unit_of_work(engine) as conn:  # the pool recovers by itself
            assert await conn.scalar(text("SELECT 3")) == 3
    finally:
        await engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("by_key", [False, True])
async def test_credits_cut_mid_transaction_answers_503(
    pg_gateway: Gateway, pg_proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch, by_key: bool
) -> None:
    gw = pg_gateway
    account_id, key = await gw.account("1")
    auth = {"Authorization": f"Bearer {key}"}
    # The key is cached now: the cut below falls inside the handler's own transaction.
    assert (await gw.client.get("/v1/credits", headers=auth)).status_code == 200
    real_deposits = ledger_service.deposits

    async def cut_then_deposits(conn: Any, account: str) -> int:
        pg_proxy.cut()  # after the balance was read, inside the same transaction
        return await real_deposits(conn, account)

    monkeypatch.setattr(ledger_service, "deposits", cut_then_deposits)
    path = "/v1/credits?by_api_key=true" if by_key else "/v1/credits"
    answer = await gw.client.get(path, headers=auth)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "database_unavailable"
    assert int(answer.headers["retry-after"]) > 0

    monkeypatch.setattr(ledger_service, "deposits", real_deposits)
    pg_proxy.restore()
    assert (await gw.client.get("/v1/credits", headers=auth)).status_code == 200
    balance, entries = await books(gw, account_id)
    assert balance == entries


async def test_a_job_failed_by_s3_reports_what_the_synchronous_request_is_told(
    s3_gateway: tuple[Gateway, TcpProxy],
) -> None:
    gw, proxy = s3_gateway
    account_id, key = await gw.account("1")
    auth = {"Authorization": f"Bearer {key}"}
    proxy.cut()
    sync = await gw.post(IMAGE, key, json=DALLE2)
    assert sync.status_code == 503, sync.text
    accepted = await gw.post(IMAGE, key, json=DALLE2, headers={"Prefer": "respond-async"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    async with asyncio.timeout(20):
        while True:
            job = (await gw.client.get(f"/v1/jobs/{job_id}", headers=auth)).json()
            if job["status"] not in ("queued", "running"):
                break
            await asyncio.sleep(0.05)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "storage_unavailable"
    assert job["error"] == {k: sync.json()["error"][k] for k in ("message", "type", "code")}
    proxy.restore()
    assert await books(gw, account_id) == (10_000, 10_000)  # neither was charged


@pytest.mark.postgres
async def test_free_tier_count_cut_mid_statement_is_an_outage_not_a_bug(
    pg_database: str, pg_proxy: TcpProxy
) -> None:
    engine = make_engine(through(pg_database, pg_proxy))
    tier = FreeTier(engine)
    try:
        assert (await tier.allowance(account_id=None, funded=False, ip="192.0.2.1")).used == 0

        cuts: list[bool] = []

        def cut_once(*_args: Any) -> None:
            if not cuts:  # the connection was checked out alive; the statement finds it gone
                cuts.append(True)
                pg_proxy.cut()

        event.listen(engine.sync_engine, "before_cursor_execute", cut_once)
        with pytest.raises(SQLAlchemyError) as raised:  # not InternalError: the app says 503
            await tier.allowance(account_id=None, funded=False, ip="192.0.2.1")
        assert is_outage(raised.value), repr(raised.value)
        assert cuts
        pg_proxy.restore()
        assert (await tier.allowance(account_id=None, funded=False, ip="192.0.2.1")).used == 0
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_an_api_key_lookup_cut_mid_statement_answers_503(
    pg_gateway: Gateway, pg_proxy: TcpProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    gw = pg_gateway
    _, key = await gw.account("1")  # never used: its lookup is the request's first statement
    cuts: list[str] = []
    # A cache miss on PostgreSQL reads through asyncpg (account/key_cache.py), which
    # SQLAlchemy's statement events never see: cut the link as that read starts.
    read = key_cache.authenticate_key_hash_pg

    async def cut_once(pg: Any, key_hash: str) -> Any:
        if not cuts:  # the connection was checked out alive; the statement finds it gone
            cuts.append(key_hash)
            pg_proxy.cut()
        return await read(pg, key_hash)

    monkeypatch.setattr(key_cache, "authenticate_key_hash_pg", cut_once)
    try:
        answer = await gw.client.get("/v1/credits", headers={"Authorization": f"Bearer {key}"})
    finally:
        pg_proxy.restore()
    assert cuts == [hash_secret(key)]
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "database_unavailable"
    served = await gw.client.get("/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert served.status_code == 200, served.text
