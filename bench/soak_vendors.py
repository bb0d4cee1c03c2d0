"""The soak's outside world in one process: the vendors and a webhook receiver.

    python bench/soak_vendors.py --host 10.231.7.1 --openai-port 9101 --fal-port 9102 \
        --hooks-port 9103 --latency 1:20 --fail-rate 0.02

- OpenAI (`tests/fakes/openai.py`: images and edits in OpenAI's wire format, with its
  validation) and fal's queue API (`tests/fakes/fal.py`: submit, poll, result; its
  `fal-ai/fake-video/text-to-video` endpoint serves the soak's video model). These are the
  faithful fakes the test suite uses, served over real HTTP here.
- Each generation call waits a random latency first (`--latency MIN:MAX` seconds, uniform;
  `--latency-scale` shrinks it for the quick mode) and fails with the vendor's own 503 body
  for a fraction `--fail-rate` of calls (seeded, so two runs fail alike). For fal the wait is
  on submit and the job then takes `--fal-polls` status checks to finish.
- `/hook/{n}` records every webhook delivery (its `webhook-id`, event type and generation
  id) and answers 200; `GET /_received` returns them, `GET /_stats` the vendors' counters.

The fakes keep what they record in memory; `requests` (which holds upload bodies) is
cleared every few seconds so a 30-minute soak does not grow without bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import signal
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# The fakes live in the test tree; the soak runs from the repository root's venv.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.fal import FakeFal
from tests.fakes.openai import FakeOpenAI
from tests.fakes.upstream import FakeVendor

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# fal's status, result and cancel calls of a running job: not generation calls.
_FAL_JOB_CALL = re.compile(r"/requests/[^/]+(/status|/cancel)?$")


class Flaky:
    """ASGI middleware: a vendor's latency and its occasional 503 on generation calls."""

    def __init__(
        self,
        fake: FakeVendor,
        is_generation: Callable[[str, str], bool],
        latency: tuple[float, float],
        fail_rate: float,
        seed: int,
    ) -> None:
        self.fake = fake
        self.is_generation = is_generation
        self.latency = latency
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)
        self.stats = {"calls": 0, "failed": 0, "in_flight": 0}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.is_generation(scope["method"], scope["path"]):
            await self.fake.app(scope, receive, send)
            return
        self.stats["calls"] += 1
        self.stats["in_flight"] += 1
        try:
            await asyncio.sleep(self.rng.uniform(*self.latency))
            if self.rng.random() < self.fail_rate:
                self.stats["failed"] += 1
                # The vendor's own 503 body (FakeVendor.error_body): what it sends when
                # overloaded, so the gateway's error mapping is exercised as in production.
                await self.fake._failure(503, None)(scope, receive, send)
                return
            await self.fake.app(scope, receive, send)
        finally:
            self.stats["in_flight"] -= 1


class Hooks:
    """The webhook receiver: every delivery, answered 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/hook/{n}", self._hook, methods=["POST"]),
                Route("/_received", self._list, methods=["GET"]),
            ]
        )

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            event = json.loads(body)
            data = event.get("data") or {}
            record = {
                "webhook_id": request.headers.get("webhook-id"),
                "endpoint": request.path_params["n"],
                "type": event.get("type"),
                "generation_id": data.get("id"),
                "status": data.get("status"),
            }
        except (ValueError, AttributeError) as exc:
            # Recorded, not dropped: the soak reports a malformed delivery as a finding.
            record = {"webhook_id": request.headers.get("webhook-id"), "malformed": repr(exc)}
        self.received.append(record)
        return Response("ok", media_type="text/plain")

    async def _list(self, request: Request) -> Response:
        return JSONResponse(self.received)


def _server(app: Any, host: str, port: int) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        backlog=4096,
    )
    server = uvicorn.Server(config)
    # The soak stops this process with SIGTERM, handled by main_async for all three
    # servers; uvicorn would otherwise take the signal for whichever server runs last.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    return server


async def _trim(fakes: list[FakeVendor]) -> None:
    while True:
        await asyncio.sleep(5)
        for fake in fakes:
            fake.requests.clear()


async def main_async(args: argparse.Namespace) -> None:
    lo, hi = (float(x) * args.latency_scale for x in args.latency.split(":"))
    openai = FakeOpenAI(args.openai_key)
    fal = FakeFal(args.fal_key, polls_before_done=args.fal_polls)
    flaky_openai = Flaky(
        openai,
        lambda method, path: method == "POST" and path.startswith("/v1/images/"),
        (lo, hi),
        args.fail_rate,
        seed=1,
    )
    # fal: the submit carries the vendor's latency; the job's polls then add a few more.
    flaky_fal = Flaky(
        fal,
        lambda method, path: method == "POST" and not _FAL_JOB_CALL.search(path),
        (lo / 4, hi / 4),
        args.fail_rate,
        seed=2,
    )
    hooks = Hooks()

    async def stats(request: Request) -> Response:
        return JSONResponse({"openai": flaky_openai.stats, "fal": flaky_fal.stats})

    hooks.app.router.routes.append(Route("/_stats", stats, methods=["GET"]))
    servers = [
        _server(flaky_openai, args.host, args.openai_port),
        _server(flaky_fal, args.host, args.fal_port),
        _server(hooks.app, args.host, args.hooks_port),
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(s.serve()) for s in servers]
    trim = asyncio.create_task(_trim([openai, fal]))
    print(f"soak vendors on {args.host}", flush=True)
    done, _ = await asyncio.wait(
        [*tasks, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    for task in done:
        if task in tasks and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    trim.cancel()
    for server in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", required=True)
    parser.add_argument("--openai-port", type=int, required=True)
    parser.add_argument("--fal-port", type=int, required=True)
    parser.add_argument("--hooks-port", type=int, required=True)
    parser.add_argument("--openai-key", required=True)
    parser.add_argument("--fal-key", required=True)
    parser.add_argument("--latency", default="1:20", help="MIN:MAX seconds per generation call")
    parser.add_argument("--latency-scale", type=float, default=1.0)
    parser.add_argument("--fail-rate", type=float, default=0.02)
    parser.add_argument("--fal-polls", type=int, default=2)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
