"""The ban list: configured networks always, stored ones re-read every few seconds."""

from __future__ import annotations

import asyncio
import logging

import pytest

from image_router.kit.networks import parse_network
from image_router.limits.bans import BanList


class Store:
    def __init__(self, *rows: str) -> None:
        self.rows = list(rows)
        self.loads = 0

    async def load(self) -> list[str]:
        self.loads += 1
        await asyncio.sleep(0)
        return list(self.rows)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_configured_and_stored_bans_both_apply() -> None:
    store = Store("2600:6c42::/32")
    bans = BanList([parse_network("209.46.124.162")], store.load, refresh_s=5)
    assert await bans.is_banned("209.46.124.162")
    assert await bans.is_banned("2600:6c42:4b40:160a::b1")
    assert not await bans.is_banned("209.46.124.163")
    assert not await bans.is_banned(None)
    assert not await bans.is_banned("testclient")


async def test_stored_bans_are_reread_after_the_refresh_interval_only() -> None:
    store, clock = Store(), Clock()
    bans = BanList([], store.load, refresh_s=5, clock=clock)
    assert not await bans.is_banned("203.0.113.9")
    store.rows.append("203.0.113.0/24")
    clock.now += 4.9
    assert not await bans.is_banned("203.0.113.9")  # cached: at most 5 s stale
    clock.now += 0.2
    assert await bans.is_banned("203.0.113.9")
    assert store.loads == 2
    store.rows.clear()
    clock.now += 5
    assert not await bans.is_banned("203.0.113.9")  # a lifted ban is lifted everywhere


async def test_concurrent_requests_share_one_reload() -> None:
    store = Store("203.0.113.0/24")
    bans = BanList([], store.load, refresh_s=5)
    results = await asyncio.gather(*(bans.is_banned("203.0.113.1") for _ in range(20)))
    assert all(results)
    assert store.loads == 1


async def test_a_bad_stored_row_is_reported_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    bans = BanList([], Store("garbage", "203.0.113.0/24").load)
    with caplog.at_level(logging.WARNING, logger="image_router.limits.bans"):
        assert await bans.is_banned("203.0.113.1")
    assert "garbage" in caplog.text
