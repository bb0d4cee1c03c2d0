"""`shielded`: work a cancellation must not cut in half (a hold, a settle, a release)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from image_router.kit.shielding import shielded


class Work:
    """A transaction stand-in that stops half-way until released."""

    def __init__(self, result: int = 7, error: Exception | None = None) -> None:
        self.started = asyncio.Event()
        self.go_on = asyncio.Event()
        self.finished = False
        self.result = result
        self.error = error

    async def run(self) -> int:
        self.started.set()
        await self.go_on.wait()
        self.finished = True
        if self.error is not None:
            raise self.error
        return self.result


async def test_the_result_comes_back_when_nobody_cancels() -> None:
    work = Work(result=42)
    work.go_on.set()
    assert await shielded(work.run()) == 42


async def test_a_cancellation_waits_for_the_work_then_after_cancel_then_goes_on() -> None:
    work = Work(result=5)
    seen: list[tuple[bool, int]] = []

    async def after_cancel(done: asyncio.Future[int]) -> None:
        seen.append((work.finished, done.result()))

    caller = asyncio.ensure_future(shielded(work.run(), after_cancel=after_cancel))
    await work.started.wait()
    caller.cancel()
    await asyncio.sleep(0.01)
    assert not caller.done()  # held back while the work is half-way
    work.go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert seen == [(True, 5)]


async def test_a_second_cancellation_does_not_cut_the_work_either() -> None:
    work = Work()
    caller = asyncio.ensure_future(shielded(work.run()))
    await work.started.wait()
    caller.cancel()
    await asyncio.sleep(0.01)
    caller.cancel()  # the client's task is cancelled again (e.g. at shutdown)
    await asyncio.sleep(0.01)
    assert not caller.done()
    work.go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert work.finished


async def test_a_failure_after_a_cancellation_is_logged_when_nobody_takes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    work = Work(error=RuntimeError("the database went away"))
    caller = asyncio.ensure_future(shielded(work.run()))
    await work.started.wait()
    caller.cancel()
    work.go_on.set()
    with caplog.at_level(logging.ERROR), pytest.raises(asyncio.CancelledError):
        await caller
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and "the database went away" in str(record.exc_info[1])


async def test_a_failure_without_a_cancellation_reaches_the_caller() -> None:
    work = Work(error=RuntimeError("refused"))
    work.go_on.set()
    with pytest.raises(RuntimeError, match="refused"):
        await shielded(work.run())
