"""The shared polling machinery: `poll_once`'s retries and `InFlight`'s cancels."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from image_router.providers.contract import Job
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from image_router.providers.inflight import InFlight
from image_router.providers.polling import PollRetry, is_transient, poll_once

JOB = Job(modality="video", model="m", prompt="p", job_id="gen-1")


def failing(errors: list[BaseException], answer: object = "done") -> Callable[[], Any]:
    """A check that raises `errors` in turn, then answers `answer`."""
    calls = iter(errors)

    async def check() -> object:
        error = next(calls, None)
        if error is not None:
            raise error
        return answer

    return check


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (UpstreamUnavailableError("x", provider="v", status=500), True),
        (UpstreamUnavailableError("x", provider="v", status=503), True),
        (UpstreamUnavailableError("x", provider="v"), True),  # connection reset
        (UpstreamTimeoutError("x", provider="v"), True),  # read timeout
        (UpstreamRateLimitedError("x", provider="v", status=429), True),
        (UpstreamProtocolError("x", provider="v", status=200), True),  # a proxy's page
        (UpstreamRateLimitedError("x", provider="v", status=402), False),  # out of funds
        (UpstreamUnavailableError("x", provider="v", status=404), False),  # the job vanished
        (UpstreamMisconfiguredError("x", provider="v", status=401), False),
        (UpstreamRejectedError("x", provider="v", status=400), False),
    ],
)
def test_which_failed_checks_are_transient(error: UpstreamError, transient: bool) -> None:
    assert is_transient(error) is transient


async def test_transient_failures_are_retried_with_capped_jittered_back_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("image_router.providers.polling.random.uniform", lambda a, b: b)
    retry = PollRetry(cap_s=10.0, max_failures=6)
    errors: list[BaseException] = [httpx.ReadTimeout("slow")] + [
        UpstreamUnavailableError("x", provider="v", status=503) for _ in range(4)
    ]

    answer = await poll_once(failing(errors), provider="v", interval=2.0, retry=retry, sleep=sleep)

    assert answer == "done"
    assert waits == [4.0, 8.0, 10.0, 10.0, 10.0]  # doubling from the interval, capped


async def test_jitter_spreads_the_wait_below_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("image_router.providers.polling.random.uniform", lambda a, b: a)
    assert PollRetry(cap_s=16.0).delay(1, 2.0) == 2.0  # half of the 4 s step


async def test_too_many_failures_in_a_row_raise_the_last() -> None:
    retry = PollRetry(max_failures=3)
    errors: list[BaseException] = [
        UpstreamUnavailableError(f"down {n}", provider="v", status=502) for n in range(5)
    ]

    with pytest.raises(UpstreamUnavailableError, match="down 2"):
        await poll_once(failing(errors), provider="v", interval=0, retry=retry)


async def test_a_final_failure_is_raised_at_once() -> None:
    errors: list[BaseException] = [UpstreamMisconfiguredError("key", provider="v", status=401)]
    calls = 0

    async def check() -> object:
        nonlocal calls
        calls += 1
        return await failing(errors[calls - 1 :])()

    with pytest.raises(UpstreamMisconfiguredError):
        await poll_once(check, provider="v", interval=0)
    assert calls == 1


# ---------------------------------------------------------------------------- InFlight


class Stops:
    def __init__(self, fail: bool = False) -> None:
        self.urls: list[str] = []
        self.fail = fail

    async def __call__(self, url: str) -> None:
        self.urls.append(url)
        if self.fail:
            raise UpstreamUnavailableError("cancel refused", provider="v", status=500)


async def test_giving_up_on_a_running_job_cancels_it_and_says_so() -> None:
    stops = Stops()
    in_flight = InFlight(stops, vendor="V")

    with pytest.raises(UpstreamUnavailableError) as caught:
        async with in_flight.running(JOB, "https://v/cancel/1"):
            raise UpstreamUnavailableError("polls keep failing", provider="v", status=503)

    assert stops.urls == ["https://v/cancel/1"]
    assert caught.value.vendor_job_cancelled is True
    assert caught.value.record()["vendor_job_cancelled"] is True
    assert in_flight.urls == {}


async def test_a_refused_cancel_is_not_reported_as_done() -> None:
    stops = Stops(fail=True)
    in_flight = InFlight(stops, vendor="V")

    with pytest.raises(UpstreamUnavailableError) as caught:
        async with in_flight.running(JOB, "https://v/cancel/1"):
            raise UpstreamUnavailableError("polls keep failing", provider="v", status=503)

    assert stops.urls == ["https://v/cancel/1"]
    assert caught.value.vendor_job_cancelled is False
    assert "vendor_job_cancelled" not in caught.value.record()


async def test_a_job_the_gateway_cancelled_is_stopped_once() -> None:
    """The gateway's deadline: `cancel` then the polling task's cancellation."""
    stops = Stops()
    in_flight = InFlight(stops, vendor="V")
    entered = asyncio.Event()

    async def wait() -> None:
        async with in_flight.running(JOB, "https://v/cancel/1"):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.ensure_future(wait())
    await entered.wait()
    task.cancel()
    assert await in_flight.cancel(JOB) is True
    with pytest.raises(asyncio.CancelledError):
        await task

    assert stops.urls == ["https://v/cancel/1"]
    assert await in_flight.cancel(JOB) is False  # nothing running any more
