"""Holds left by a dead worker are released once, even when several workers race."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from image_router.db.session import unit_of_work
from image_router.generation.recovery import ABANDONED, release_expired_holds
from image_router.kit.clock import utcnow
from image_router.ledger import service as ledger
from image_router.usage import service as usage
from tests.conftest import Gateway, processing_row


async def _orphan(gateway: Gateway, account: str, gid: str, held: int, age_s: float) -> None:
    """What a worker killed between hold and settle leaves behind."""
    async with unit_of_work(gateway.res.engine) as conn:
        assert await ledger.hold(conn, account, held, generation_id=gid)
        await usage.start(
            conn,
            processing_row(
                gid,
                account,
                held,
                utcnow() - timedelta(seconds=age_s),
                model="openai/dall-e-2",
                provider="openai",
                quality="auto",
                input_types=["PROMPT"],
            ),
        )


async def test_expired_holds_are_released_exactly_once(any_gateway: Gateway) -> None:
    account, _ = await any_gateway.account("1")
    for i in range(5):
        await _orphan(any_gateway, account, f"00000000-0000-4000-8000-00000000000{i}", 160, 3600)
    # A hold still within its deadline (plus grace) is left alone.
    await _orphan(any_gateway, account, "00000000-0000-4000-8000-0000000000ff", 160, 0)
    assert await any_gateway.balance(account) == 10_000 - 6 * 160

    released = await asyncio.gather(
        *(release_expired_holds(any_gateway.res.engine) for _ in range(4))
    )
    assert sum(released) == 5
    assert await any_gateway.balance(account) == 10_000 - 160
    assert await any_gateway.ledger_sum(account) == await any_gateway.balance(account)
    rows = {r["id"]: r for r in await any_gateway.generations()}
    assert rows["00000000-0000-4000-8000-000000000000"]["error"] == ABANDONED
    assert rows["00000000-0000-4000-8000-000000000000"]["provider"] == "openai"
    assert rows["00000000-0000-4000-8000-0000000000ff"]["status"] == "processing"
    assert await release_expired_holds(any_gateway.res.engine) == 0
