"""The drain cuts off only the work that registered with it; the Redis link logs each change
once and tries a dead Redis only once per retry period."""

from __future__ import annotations

import asyncio
import logging

import pytest

from image_router.kit.drain import Drain
from image_router.kit.link import Link


async def test_the_drain_cuts_off_tracked_work_and_leaves_other_tasks_alone() -> None:
    drain = Drain()
    hooks: list[str] = []
    drain.on_drain.append(lambda: hooks.append("stop claiming"))
    seen: list[bool] = []

    async def generation() -> str:
        with drain.track():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                seen.append(drain.was_cut())  # what the generation asks before releasing
                drain.released(160)
                raise
        return "done"

    async def background() -> str:  # a job resumer, say: not the drain's to cancel
        await asyncio.sleep(0.2)
        return "kept running"

    work = asyncio.create_task(generation())
    other = asyncio.create_task(background())
    await asyncio.sleep(0.01)
    assert drain.in_flight == 1
    drain.begin()
    drain.begin()  # once only
    assert drain.draining and hooks == ["stop claiming"]
    assert drain.cut_off() == 1
    assert await drain.wait_for_cut(5)
    assert work.cancelled() and seen == [True]
    assert await other == "kept running"
    assert drain.in_flight == 0
    assert "1 generation(s) cut off, 1 hold(s) released (160 credits)" in drain.summary()


async def test_a_task_cancelled_by_its_client_is_not_taken_for_a_cut() -> None:
    drain = Drain()
    seen: list[bool] = []

    async def generation() -> None:
        with drain.track():
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                seen.append(drain.was_cut())
                raise

    task = asyncio.create_task(generation())
    await asyncio.sleep(0.01)
    task.cancel()  # the client hung up
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [False]


def test_the_link_logs_each_change_once_and_retries_a_dead_service_sparingly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    link = Link("Redis", retry_s=5, clock=lambda: now[0])
    changes: list[bool] = []
    link.on_change.append(changes.append)
    caplog.set_level(logging.INFO, logger="image_router.kit.link")

    assert link.should_try()
    link.failed(ConnectionError("refused"))
    link.failed(ConnectionError("refused"))
    assert not link.should_try()  # within the retry period: the fallback, no wait
    now[0] = 5.0
    assert link.should_try()  # one caller probes...
    assert not link.should_try()  # ...the others keep to the fallback meanwhile
    link.worked()
    link.worked()
    assert link.should_try()
    assert changes == [False, True]
    messages = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == ["WARNING", "INFO"]
    assert "Redis is unavailable (ConnectionError: refused)" in messages[0][1]
    assert messages[1][1].startswith("Redis is back")
