"""The hold of one generation, step by step (generation/holds.py): taken with its usage
row in one transaction, or refused without a trace; settled (the price kept, the rest given
back) or released (all given back); the ledger always equal to the balance."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest

from image_router.generation.holds import Hold
from image_router.kit.clock import utcnow
from image_router.usage import service as usage
from tests.conftest import Gateway, processing_row

GENERATION = "gen-lifecycle"


def opening_for(account: str, held: int, opened: list[str]) -> usage.NewGeneration:
    opened.append(account)
    return processing_row(GENERATION, account, held, utcnow() + timedelta(hours=1))


async def take(gw: Gateway, account: str, amount: int, opened: list[str]) -> Hold | None:
    async def opening() -> usage.NewGeneration:
        return opening_for(account, amount, opened)

    return await Hold.take(
        gw.res.engine, account, GENERATION, amount, limited_key=None, opening=opening
    )


async def test_a_hold_the_balance_cannot_cover_takes_nothing_and_opens_no_row(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    account, _ = await gw.account("0.01")  # 100 credits
    opened: list[str] = []

    assert await take(gw, account, 101, opened) is None

    assert opened == []  # the row (and a sealed prompt) is built only once credit is held
    assert await gw.generations() == []
    assert await gw.balance(account) == 100 == await gw.ledger_sum(account)


async def test_a_settled_hold_keeps_the_price_and_gives_the_rest_back(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    account, _ = await gw.account("0.01")
    hold = await take(gw, account, 80, [])
    assert hold is not None and hold.amount == 80
    assert await gw.balance(account) == 20

    charged = await hold.settle(30, usage.Finish(provider="test", cost=30))

    assert charged == 30
    [row] = await gw.generations()
    assert (row["status"], row["cost"]) == ("success", 30)
    assert await gw.balance(account) == 70 == await gw.ledger_sum(account)
    # Closed once: a late release finds nothing left to give back.
    assert await hold.release(usage.Finish(provider="test", error="late")) == 0
    assert await gw.balance(account) == 70


async def test_a_released_hold_gives_everything_back(any_gateway: Gateway) -> None:
    gw = any_gateway
    account, _ = await gw.account("0.01")
    hold = await take(gw, account, 80, [])
    assert hold is not None

    released = await hold.release(usage.Finish(provider="test", error="vendor down"))

    assert released == 80
    [row] = await gw.generations()
    assert row["status"] == "error"
    assert await gw.balance(account) == 100 == await gw.ledger_sum(account)


async def test_a_settle_cut_off_by_a_hang_up_still_charges_once_and_says_so(
    any_gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = any_gateway
    account, _ = await gw.account("0.01")
    hold = await take(gw, account, 80, [])
    assert hold is not None
    caplog.set_level(logging.INFO, logger="image_router.generation.holds")

    settling = asyncio.ensure_future(hold.settle(30, usage.Finish(provider="test", cost=30)))
    await asyncio.sleep(0)  # the close is queued for the group commit
    settling.cancel()  # the client hangs up before the database answers
    with pytest.raises(asyncio.CancelledError):
        await settling

    # The close ran to its end before the cancellation went on: charged, once.
    [row] = await gw.generations()
    assert (row["status"], row["cost"]) == ("success", 30)
    assert await gw.balance(account) == 70 == await gw.ledger_sum(account)
    assert "client disconnected during the settle; charged 30 credits" in caplog.text


async def test_a_hold_cut_off_by_a_hang_up_is_handed_over_to_be_given_back(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    account, _ = await gw.account("0.01")
    handed: list[Hold | None] = []

    async def give_back(taking: asyncio.Future[Hold | None]) -> None:
        hold = taking.result()
        handed.append(hold)
        assert hold is not None
        await hold.release(usage.Finish(provider="test", error="client gone"))

    async def opening() -> usage.NewGeneration:
        return opening_for(account, 80, [])

    taking = asyncio.ensure_future(
        Hold.take(
            gw.res.engine,
            account,
            GENERATION,
            80,
            limited_key=None,
            opening=opening,
            likely_covered=True,  # the request path's: one round trip, through the driver
            after_cancel=give_back,
        )
    )
    await asyncio.sleep(0)  # the row is built and the statement queued for the group commit
    taking.cancel()  # the client hangs up before the database answers
    with pytest.raises(asyncio.CancelledError):
        await taking

    # The hold ran to its end and was handed over before the cancellation went on.
    assert [h.amount if h else None for h in handed] == [80]
    [row] = await gw.generations()
    assert row["status"] == "error"
    assert await gw.balance(account) == 100 == await gw.ledger_sum(account)
