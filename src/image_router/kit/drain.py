"""A graceful stop: what a serving process does between SIGTERM and its exit.

`begin()` (on SIGTERM) marks the process as draining: `/ready` answers 503 so a load
balancer stops sending it work, and the `on_drain` hooks run (a background runner may stop
claiming new work there). The server meanwhile stops accepting connections and lets the
requests in flight finish. Whatever generation is still running when the drain time is up
is cut off by `cut_off()`: only the work that registered itself with `track()` (the
generations, whose holds must go back) is cancelled, never every task on the loop, so a
background task (a job resumer, the webhook sender) is left to stop its own way.

A cut-off generation recognises its cancellation (`was_cut`), gives its hold back, answers
its client an honest 503 and reports the release here (`released`), so the drain can log a
summary. Nothing here knows about HTTP or the database.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


class Drain:
    """One process's drain: started once, by the signal or by a test."""

    def __init__(self) -> None:
        self.draining = False
        self.cutting = False
        # Called (no arguments, on the event loop) when the drain begins; an exception in
        # one is logged and does not stop the others.
        self.on_drain: list[Callable[[], object]] = []
        self.started_at: float | None = None
        self._work: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()
        self.holds_released = 0
        self.credits_released = 0

    def begin(self) -> None:
        """Stop taking work: `/ready` turns 503 and the hooks run. Idempotent."""
        if self.started_at is not None:
            return
        self.draining = True
        self.started_at = time.monotonic()
        log.info("draining: %d generation(s) in flight", len(self._work))
        for hook in self.on_drain:
            try:
                hook()
            except Exception:
                log.exception("a drain hook failed")

    @contextmanager
    def track(self) -> Iterator[None]:
        """Register the running task as work the drain may cut off (a generation)."""
        task = asyncio.current_task()
        if task is None:  # not in a task (cannot happen under a server): nothing to cut
            yield
            return
        self._work.add(task)
        try:
            yield
        finally:
            self._work.discard(task)

    @property
    def in_flight(self) -> int:
        return len(self._work)

    def cut_off(self) -> int:
        """Cancel every tracked generation still running; returns how many."""
        self.begin()
        self.cutting = True
        cut = 0
        for task in list(self._work):
            if not task.done():
                self._cut.add(task)
                task.cancel()
                cut += 1
        if cut:
            log.info("drain time is up: cutting off %d generation(s)", cut)
        return cut

    def was_cut(self) -> bool:
        """Whether the running task was cancelled by `cut_off` (not by its client leaving)."""
        task = asyncio.current_task()
        return task is not None and task in self._cut

    def released(self, credits: int) -> None:
        """A cut-off generation gave its hold back."""
        self.holds_released += 1
        self.credits_released += credits

    async def wait_for_cut(self, timeout_s: float) -> bool:
        """Wait until the cut-off generations have finished their clean-up (their holds
        released); False when some are still running after `timeout_s`."""
        pending = {t for t in self._cut if not t.done()}
        if pending:
            _, pending = await asyncio.wait(pending, timeout=timeout_s)
        return not pending

    def summary(self) -> str:
        took = 0.0 if self.started_at is None else time.monotonic() - self.started_at
        return (
            f"drain finished after {took:.1f} s: {len(self._cut)} generation(s) cut off, "
            f"{self.holds_released} hold(s) released ({self.credits_released} credits)"
        )


def on_sigterm(drain: Drain, drain_s: float) -> Callable[[], None]:
    """Begin `drain` when the process gets SIGTERM, and cut off what still runs after
    `drain_s`; returns the function that undoes this.

    The server (uvicorn) owns SIGTERM: its handler stops accepting and waits for the
    requests. Ours runs first and then calls it, so the server's stop goes on unchanged.
    Nothing is installed outside the main thread or when no Python handler is in place
    (an app driven by a test rather than by a server).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    if not callable(previous):
        return lambda: None
    loop = asyncio.get_running_loop()
    server_handler: Callable[[int, FrameType | None], object] = previous

    def start() -> None:
        drain.begin()
        loop.call_later(drain_s, drain.cut_off)

    def handler(signum: int, frame: FrameType | None) -> None:
        # A signal handler runs between two bytecodes of the loop's own thread: only
        # hand the work to the loop from here.
        drain.draining = True  # /ready answers 503 from this instant
        loop.call_soon_threadsafe(start)
        server_handler(signum, frame)

    signal.signal(signal.SIGTERM, handler)

    def undo() -> None:
        if signal.getsignal(signal.SIGTERM) is handler:
            signal.signal(signal.SIGTERM, previous)

    return undo
