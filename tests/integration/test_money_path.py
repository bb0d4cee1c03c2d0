"""The money path through the driver (ledger/direct.py) against the same units of work
through SQLAlchemy: the same rows (ledger entries, balances, usage rows, stored byte for
byte alike), the same refusals, and the same guarantees under concurrency, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta
from typing import Any

import pytest

from image_router.account import service as accounts
from image_router.account.spend_limits import KeySpendLimitExceeded
from image_router.db.session import unit_of_work
from image_router.generation.holds import Hold
from image_router.generation.recovery import release_expired_holds
from image_router.kit.clock import utcnow
from image_router.usage import service as usage
from tests.conftest import Gateway

PATHS = ("orm", "driver")


def new_row(
    account: str, generation_id: str, held: int, *, key: str | None = None, past: bool = False
) -> usage.NewGeneration:
    now = utcnow()
    return usage.NewGeneration(
        id=generation_id,
        account_id=account,
        api_key_id=key,
        via_web_token=False,
        modality="image",
        model="openai/dall-e-2",
        provider="openai",
        prompt_enc=b"\x00sealed\xff",
        content_expires_at=now + timedelta(days=30),
        size="1024x1024",
        quality="high",
        seconds=None,
        input_types=["image/png"],
        held=held,
        ip="203.0.113.9",
        deadline_at=now + (timedelta(hours=-2) if past else timedelta(minutes=5)),
    )


async def take(
    gw: Gateway,
    path: str,
    account: str,
    generation_id: str,
    amount: int,
    *,
    key: str | None = None,
    past: bool = False,
) -> Hold | None:
    async def opening() -> usage.NewGeneration:
        return new_row(account, generation_id, amount, key=key, past=past)

    hold = await Hold.take(
        gw.res.engine,
        account,
        generation_id,
        amount,
        limited_key=key,
        opening=opening,
        likely_covered=path == "driver",
    )
    if hold is not None:
        hold.through_driver = path == "driver"
    return hold


def closing(cost: int = 0, error: str | None = None) -> usage.Finish:
    return usage.Finish(
        provider="openai",
        cost=cost,
        latency_ms=1234,
        output_urls=["https://example.test/files/a.png"],
        attempts=[{"provider": "openai", "ok": error is None, "ms": 12}],
        error=error,
        output_keys=["a.png"] if error is None else [],
        outputs_expire_at=utcnow() + timedelta(hours=1) if error is None else None,
    )


async def story(gw: Gateway, path: str) -> tuple[str, dict[str, str], str]:
    """Every step of the money path once, on a fresh account; returns it, the generation
    ids by role and the spend limit's refusal."""
    account, _ = await gw.account("0.05")  # 500 credits
    async with unit_of_work(gw.res.engine) as conn:
        limited, _ = await accounts.create_key(conn, account, "limited", spend_limit=300)
    ids = {role: f"{role}-{path}" for role in ("settled", "released", "free", "limited", "late")}

    settled = await take(gw, path, account, ids["settled"], 80)
    assert settled is not None
    assert await settled.settle(30, closing(cost=30)) == 30
    assert await settled.settle(30, closing(cost=30)) == 0  # closed once

    released = await take(gw, path, account, ids["released"], 70)
    assert released is not None
    assert await released.cover(90) is None  # a dearer fallback (the ORM extension)
    assert await released.release(closing(error="vendor down")) == 90
    assert await released.release(closing(error="again")) == 0

    free = await take(gw, path, account, ids["free"], 0)
    assert free is not None
    assert await free.settle(0, closing()) == 0

    # 450 left. The key may spend 300: 200 fits, 101 more does not, nor does 451 credits.
    first = await take(gw, path, account, ids["limited"], 200, key=limited.id)
    assert first is not None
    with pytest.raises(KeySpendLimitExceeded) as refused:
        await take(gw, path, account, f"over-limit-{path}", 101, key=limited.id)
    assert await take(gw, path, account, f"over-balance-{path}", 451) is None
    assert await first.settle(150, closing(cost=150)) == 150

    # A worker died: the reconciler closes the row the hold opened.
    assert await take(gw, path, account, ids["late"], 25, past=True) is not None
    return account, ids, str(refused.value)


_RAW_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")
_TIMES = ("created_at", "deadline_at", "finished_at", "content_expires_at", "outputs_expire_at")


def _shape(value: Any) -> Any:
    """A timestamp as what is stored: SQLAlchemy's text on SQLite, aware on PostgreSQL."""
    if isinstance(value, str) and _RAW_TIME.fullmatch(value):
        return "text"
    if isinstance(value, datetime) and value.tzinfo is not None:
        return "aware"
    return value


def _plain(row: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A row with ids replaced by their role and timestamps by their stored shape."""
    out = {}
    for column, value in row.items():
        if column == "id" and isinstance(value, int):
            continue  # ledger entry ids follow insertion order across both accounts
        if column in _TIMES:
            value = _shape(value)
        if isinstance(value, memoryview):
            value = bytes(value)
        out[column] = names.get(value, value) if isinstance(value, str) else value
    return out


async def books(gw: Gateway, account: str, ids: dict[str, str]) -> dict[str, Any]:
    """The account's rows as stored (no ORM decoding: raw text on SQLite)."""
    names = {account: "account", **{gid: role for role, gid in ids.items()}}
    key_ids = await gw.rows("SELECT id, name FROM api_keys WHERE account_id = :a", a=account)
    names.update({k["id"]: f"key:{k['name']}" for k in key_ids})
    entries = await gw.rows(
        "SELECT * FROM ledger_entries WHERE account_id = :a ORDER BY id", a=account
    )
    rows = await gw.rows("SELECT * FROM generations WHERE account_id = :a ORDER BY id", a=account)
    [balance] = await gw.rows("SELECT balance FROM accounts WHERE id = :a", a=account)
    return {
        "balance": balance["balance"],
        "ledger_sum": sum(int(e["amount"]) for e in entries),
        "entries": [_plain(e, names) for e in entries if e["kind"] != "grant"],
        "generations": sorted((_plain(r, names) for r in rows), key=lambda r: str(r["id"])),
    }


async def test_the_driver_and_the_orm_leave_identical_rows(any_gateway: Gateway) -> None:
    gw = any_gateway
    seen = {path: await story(gw, path) for path in PATHS}
    assert await release_expired_holds(gw.res.engine, grace=timedelta(0)) == 2

    orm, driver = [await books(gw, *seen[path][:2]) for path in PATHS]
    assert driver == orm
    assert seen["driver"][2] == seen["orm"][2]
    assert "spend limit of $0.0300 would be exceeded: $0.0200 spent" in seen["orm"][2]
    # 500 - 30 (settled) - 150 (limited) = 320; everything else went back.
    assert orm["balance"] == orm["ledger_sum"] == 320
    assert [e["kind"] for e in orm["entries"]] == [
        *("hold", "release"),  # settled: 80 held, 50 back
        *("hold", "hold", "release"),  # released: 70, 20 more, 90 back
        *("hold", "release"),  # limited: 200 held, 50 back
        *("hold", "release"),  # late: the reconciler gave 25 back
    ]
    assert [r["status"] for r in orm["generations"]] == [
        "success",  # free
        "error",  # late
        "success",  # limited
        "error",  # released
        "success",  # settled
    ]


@pytest.mark.parametrize("path", PATHS)
async def test_concurrent_holds_never_overspend(any_gateway: Gateway, path: str) -> None:
    gw = any_gateway
    account, _ = await gw.account("0.0010")  # 10 credits
    holds = await asyncio.gather(*(take(gw, path, account, f"g{i}", 1) for i in range(50)))
    assert sum(h is not None for h in holds) == 10
    assert await gw.balance(account) == 0 == await gw.ledger_sum(account)
    assert len(await gw.rows("SELECT id FROM generations")) == 10


@pytest.mark.parametrize("path", PATHS)
async def test_concurrent_holds_of_a_limited_key_stay_within_its_limit(
    any_gateway: Gateway, path: str
) -> None:
    gw = any_gateway
    account, _ = await gw.account("1")
    async with unit_of_work(gw.res.engine) as conn:
        key, _ = await accounts.create_key(conn, account, "k", spend_limit=30)

    async def one(i: int) -> Hold | KeySpendLimitExceeded | None:
        try:
            return await take(gw, path, account, f"k{i}", 10, key=key.id)
        except KeySpendLimitExceeded as refusal:
            return refusal

    outcomes = await asyncio.gather(*(one(i) for i in range(12)))
    assert sum(isinstance(o, Hold) for o in outcomes) == 3
    assert sum(isinstance(o, KeySpendLimitExceeded) for o in outcomes) == 9
    assert await gw.balance(account) == 10_000 - 30 == await gw.ledger_sum(account)


async def test_a_refused_hold_through_the_driver_writes_nothing(any_gateway: Gateway) -> None:
    gw = any_gateway
    account, _ = await gw.account("0.01")
    assert await take(gw, "driver", account, "too-dear", 101) is None
    assert await gw.rows("SELECT id FROM generations") == []
    assert await gw.balance(account) == 100 == await gw.ledger_sum(account)
