"""Work that a cancellation must not cut in half.

A client that hangs up cancels the task serving it. A database transaction running in that
task (taking a hold, settling, releasing) must then neither stop half-way nor be left
running unobserved: `shielded` lets it finish, gives the caller a chance to act on how it
ended (give back what it took, log), and only then lets the cancellation go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


async def shielded(
    work: Awaitable[T],
    *,
    after_cancel: Callable[[asyncio.Future[T]], Awaitable[None]] | None = None,
) -> T:
    """Run `work` to its end even when the caller is cancelled meanwhile, and return its result.

    On a cancellation the caller waits until `work` is done (further cancellations are held
    back too), then `after_cancel` receives the finished work, then the cancellation is
    raised. Without `after_cancel`, a failure of the work is logged: nobody is left to
    receive it.

    A coroutine runs in a task of its own; a future (a group commit's answer) is shielded
    as it is, which costs no task and two fewer trips through the event loop.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if after_cancel is not None:
            await after_cancel(task)
        elif not task.cancelled() and task.exception() is not None:
            log.error("shielded work failed after a cancellation", exc_info=task.exception())
        raise
