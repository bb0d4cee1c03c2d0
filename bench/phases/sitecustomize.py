"""The phase probe: where a generation's wall time goes inside the gateway (bench/run.py
--phases). Python imports this module at start-up when its directory is on PYTHONPATH; it
does nothing unless IR_PHASES_OUT names a file.

It wraps a few of the gateway's own steps (the request middleware, `Generator.generate`,
the vendor call, the output store, the settle) and records, per generation request, the
monotonic time at which each began and ended; at exit it writes them to IR_PHASES_OUT as
JSON, for `bench/phases/summary.py`. Wall time, not CPU: a phase that waits (for the
database, a thread, its turn on the event loop) shows here and not in a profile. The
wrappers cost CPU of their own, so a probed run's req/s is not a figure to report.
"""

from __future__ import annotations

import atexit
import contextvars
import importlib.abc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

OUT = os.environ.get("IR_PHASES_OUT")
_records: list[dict[str, float]] = []
_current: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "ir_phases", default=None
)


def _timed(owner: Any, name: str, began: str, ended: str) -> None:
    """Replace `owner.name`, a coroutine function, by one stamping `began` and `ended` into
    the current request's record (the context is inherited by the request's tasks)."""
    original: Callable[..., Any] = getattr(owner, name)

    async def stamped(*args: Any, **kwargs: Any) -> Any:
        record = _current.get()
        if record is not None:
            record[began] = time.monotonic()
        try:
            return await original(*args, **kwargs)
        finally:
            if record is not None:
                record[ended] = time.monotonic()

    setattr(owner, name, stamped)


def _install() -> None:
    from image_router.generation import service
    from image_router.observability import middleware
    from image_router.providers import direct

    entry = middleware.RequestObservability.__call__

    async def observed(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await entry(self, scope, receive, send)
            return
        record = {"received": time.monotonic()}
        _current.set(record)
        try:
            await entry(self, scope, receive, send)
        finally:
            record["answered"] = time.monotonic()
            _records.append(record)

    middleware.RequestObservability.__call__ = observed  # type: ignore[method-assign]
    _timed(service.Generator, "generate", "generate", "generated")
    _timed(direct.DirectLane, "request", "vendor", "vendor_done")
    _timed(service, "store_outputs", "store", "stored")
    _timed(service.Generator, "_settle", "settle", "settled")


class _InstallOnImport(importlib.abc.MetaPathFinder):
    """Installs the wrappers when the app module is first imported (the classes exist by
    then, and nothing has bound the originals yet)."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> None:
        if name == "image_router.app":
            sys.meta_path.remove(self)
            _install()
        return None


def _write() -> None:
    assert OUT is not None
    with open(OUT, "w") as out:
        json.dump(_records, out)


if OUT:
    sys.meta_path.insert(0, _InstallOnImport())
    atexit.register(_write)
