"""Group commit on real databases (SQLite and PostgreSQL): concurrent requests' holds and
settles share round trips, each still gets its own outcome, and one request's failing
unit fails only that request (`db.group_commit`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from image_router.db import group_commit
from image_router.generation.holds import Hold
from image_router.kit.clock import utcnow
from image_router.usage import service as usage
from tests.conftest import Gateway, processing_row
from tests.integration.test_money_path import closing


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch sent to the database."""
    sizes: list[int] = []
    real = group_commit.pg_connection
    run_each = group_commit._run_each

    def counting_run_each(conn: Any, units: list[Any]) -> list[Any]:
        sizes.append(len(units))
        return run_each(conn, units)

    @asynccontextmanager
    async def counting(engine: Any) -> AsyncIterator[Any]:
        async with real(engine) as pg:
            fetchmany = pg.fetchmany

            async def counted(sql: str, args: Any) -> Any:
                sizes.append(len(args))
                return await fetchmany(sql, args)

            class Counted:
                def __getattr__(self, name: str) -> Any:
                    return counted if name == "fetchmany" else getattr(pg, name)

            yield Counted()

    monkeypatch.setattr(group_commit, "pg_connection", counting)
    monkeypatch.setattr(group_commit, "_run_each", counting_run_each)
    return sizes


async def take(gw: Gateway, account: str, generation_id: str, amount: int) -> Hold | None:
    async def opening() -> usage.NewGeneration:
        return processing_row(generation_id, account, amount, utcnow() + timedelta(minutes=5))

    return await Hold.take(
        gw.res.engine,
        account,
        generation_id,
        amount,
        limited_key=None,
        opening=opening,
        likely_covered=True,
    )


async def test_concurrent_holds_and_settles_share_round_trips(
    any_gateway: Gateway, batch_sizes: list[int]
) -> None:
    gw = any_gateway
    rich, _ = await gw.account("0.05")  # 500 credits
    poor, _ = await gw.account("0.0030")  # 30 credits: 3 holds of 10 fit
    requests = [(rich, f"r{i}") for i in range(30)] + [(poor, f"p{i}") for i in range(10)]
    holds = await asyncio.gather(*(take(gw, account, gid, 10) for account, gid in requests))

    assert sum(hold is not None for hold in holds[:30]) == 30
    assert sum(hold is not None for hold in holds[30:]) == 3
    assert sum(batch_sizes) == 40
    assert max(batch_sizes) > 1, batch_sizes  # requests did share round trips

    taken = [hold for hold in holds if hold is not None]
    charged = await asyncio.gather(*(hold.settle(4, closing(cost=4)) for hold in taken))
    assert charged == [4] * 33
    assert await gw.balance(rich) == 500 - 30 * 4 == await gw.ledger_sum(rich)
    assert await gw.balance(poor) == 30 - 3 * 4 == await gw.ledger_sum(poor)
    rows = await gw.rows("SELECT status, held, cost FROM generations")
    assert sorted((r["status"], r["held"], r["cost"]) for r in rows) == [("success", 10, 4)] * 33


async def test_one_failing_statement_fails_only_its_own_request(
    any_gateway: Gateway, batch_sizes: list[int]
) -> None:
    gw = any_gateway
    account, _ = await gw.account("0.05")
    assert await take(gw, account, "taken-before", 10) is not None
    # Twenty holds at once, one of them for a generation id that exists already: its
    # insert violates the primary key after its debit. On SQLite its savepoint is rolled
    # back; on PostgreSQL that fails its batch, and the others are sent again one by one.
    ids = [f"g{i}" for i in range(19)] + ["taken-before"]
    outcomes = await asyncio.gather(
        *(take(gw, account, gid, 10) for gid in ids), return_exceptions=True
    )
    assert all(isinstance(o, Hold) for o in outcomes[:19]), outcomes
    assert isinstance(outcomes[19], asyncpg.UniqueViolationError | sqlite3.IntegrityError)
    assert await gw.balance(account) == 500 - 20 * 10 == await gw.ledger_sum(account)
    assert len(await gw.rows("SELECT id FROM generations")) == 20
