"""The base of every vendor fake: a Starlette app that records and misbehaves on cue.

A vendor fake subclasses `FakeVendor`, registers its routes with `add_route`, and
answers in the vendor's real wire format. Every fake gets the same test controls:

- `requests`: everything received, parsed (JSON body, or multipart fields and files);
- `fail_next`, `garbage_next`, `hang_next`, `delay`: scripted misbehaviour, consumed in
  order by the next requests that reach a scripted route;
- `fail_polls`, `hang_polls`: the same for the status checks of a running job only (routes
  added with `poll=True`), which leave the job running; `cancelled_jobs()`;
- `reset()`.

The same object serves three tiers: in-process through `fake.client()` (an
`httpx.ASGITransport` that also enforces the client's read timeout, which plain
`ASGITransport` ignores), and over real loopback HTTP via `serve_in_thread(fake.app)`.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

GARBAGE_BODY = b"<html><body><h1>502 Bad Gateway</h1><p>upstream proxy error</p></body></html>"


@dataclass(frozen=True)
class RecordedFile:
    """One file part of a multipart request."""

    name: str  # the multipart field name, e.g. "image[]"
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass(frozen=True)
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    base_url: str  # "http://host:port/" as the client addressed us
    json: Any = None  # parsed body when it was valid JSON
    form: dict[str, list[str]] = field(default_factory=dict)
    files: list[RecordedFile] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def field_value(self, name: str) -> str | None:
        """The first multipart text value named `name`."""
        values = self.form.get(name)
        return values[0] if values else None

    def files_named(self, *names: str) -> list[RecordedFile]:
        return [f for f in self.files if f.name in names]


Handler = Callable[[Request, Recorded], Awaitable[Response]]


@dataclass(frozen=True)
class _Action:
    kind: str  # "fail" | "garbage" | "hang"
    status: int = 200
    body: object | None = None
    seconds: float = 0.0
    headers: tuple[tuple[str, str], ...] = ()


class FakeVendor:
    """Base class of the vendor fakes. Subclasses call `add_route` in `__init__`."""

    def __init__(self) -> None:
        self.app = Starlette()
        self.requests: list[Recorded] = []
        self.delay = 0.0
        self._script: deque[_Action] = deque()
        self._poll_script: deque[_Action] = deque()

    # ------------------------------------------------------------------ wiring

    def add_route(
        self,
        path: str,
        handler: Handler,
        methods: list[str],
        *,
        scripted: bool = True,
        poll: bool = False,
    ) -> None:
        """Serve `handler` at `path`. Unscripted routes (downloads) never misbehave; `poll`
        routes (a running job's status) also take the `fail_polls`/`hang_polls` script."""

        async def endpoint(request: Request) -> Response:
            recorded = await _record(request)
            self.requests.append(recorded)
            if self.delay:
                await asyncio.sleep(self.delay)
            answer = await self.poll_misbehaviour() if poll else None
            if answer is None and scripted:
                answer = await self._act(self._script)
            if answer is not None:
                return answer
            return await handler(request, recorded)

        self.app.router.routes.append(Route(path, endpoint, methods=methods))

    def client(
        self, base_url: str = "http://fake.test", *, timeout: float = 10.0
    ) -> httpx.AsyncClient:
        """An in-process client for this fake; honours `timeout` like a socket would."""
        return httpx.AsyncClient(
            transport=TimedASGITransport(app=self.app),
            base_url=base_url,
            timeout=timeout,
        )

    # ------------------------------------------------------------------ test controls

    def fail_next(
        self,
        status: int,
        body: object | None = None,
        times: int = 1,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next `times` requests with `status` and `body` (and `headers`).

        `body=None` uses the vendor's own error body for that status (`error_body`); a
        `str` or `bytes` body is sent verbatim, anything else as JSON.
        """
        extra = tuple((headers or {}).items())
        self._script.extend(
            _Action("fail", status=status, body=body, headers=extra) for _ in range(times)
        )

    def fail_polls(self, status: int, body: object | None = None, times: int = 1) -> None:
        """Answer the next `times` status checks of a running job with `status` (the body as
        in `fail_next`); the job itself runs on, as at a vendor whose edge misbehaves."""
        self._poll_script.extend(_Action("fail", status=status, body=body) for _ in range(times))

    def hang_polls(self, seconds: float, times: int = 1) -> None:
        """Stall the next `times` status checks for `seconds` (a read timeout for the caller)."""
        self._poll_script.extend(_Action("hang", seconds=seconds) for _ in range(times))

    async def poll_misbehaviour(self) -> Response | None:
        """Play the next scripted poll failure, if any: for fakes whose status checks share
        a route with other calls (Runware's task array), to call from their handler."""
        return await self._act(self._poll_script)

    @property
    def poll_failures_left(self) -> int:
        """Scripted poll failures not yet served."""
        return len(self._poll_script)

    def cancelled_jobs(self) -> list[str]:
        """Ids of the jobs a client asked to cancel (fakes of vendors that can cancel)."""
        return []

    def garbage_next(self, times: int = 1) -> None:
        """Answer the next `times` requests with 200 and HTML, like a broken proxy."""
        self._script.extend(_Action("garbage") for _ in range(times))

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """Stall the next `times` requests for `seconds`, then answer normally."""
        self._script.extend(_Action("hang", seconds=seconds) for _ in range(times))

    def reset(self) -> None:
        self.requests.clear()
        self._script.clear()
        self._poll_script.clear()
        self.delay = 0.0

    @property
    def last(self) -> Recorded:
        if not self.requests:
            raise AssertionError("the fake received no request")
        return self.requests[-1]

    # ------------------------------------------------------------------ vendor hooks

    def error_body(self, status: int) -> object:
        """The vendor's error body for `status`; subclasses give the real shape."""
        return {"error": f"fake upstream error {status}"}

    async def _act(self, script: deque[_Action]) -> Response | None:
        """Play the next action of `script`: an answer to send instead, or None to go on."""
        if not script:
            return None
        action = script.popleft()
        if action.kind == "fail":
            failure = self._failure(action.status, action.body)
            failure.headers.update(dict(action.headers))
            return failure
        if action.kind == "garbage":
            return Response(GARBAGE_BODY, status_code=200, media_type="text/html")
        await asyncio.sleep(action.seconds)
        return None

    def _failure(self, status: int, body: object | None) -> Response:
        if body is None:
            body = self.error_body(status)
        if isinstance(body, str | bytes):
            return Response(body, status_code=status, media_type="text/plain")
        return JSONResponse(body, status_code=status)


async def _record(request: Request) -> Recorded:
    body = await request.body()
    parsed: Any = None
    form: dict[str, list[str]] = {}
    files: list[RecordedFile] = []
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        # Starlette replays the cached body, so reading the form after `body()` is safe.
        async with request.form() as data:
            for name, value in data.multi_items():
                if isinstance(value, UploadFile):
                    payload = await value.read()
                    files.append(RecordedFile(name, value.filename, value.content_type, payload))
                else:
                    form.setdefault(name, []).append(value)
    elif body:
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
    return Recorded(
        method=request.method,
        path=request.url.path,
        query=dict(request.query_params),
        headers={k.lower(): v for k, v in request.headers.items()},
        body=body,
        # Starlette's base_url leaves out a Mount's prefix; fakes mounted under /<vendor>
        # must hand out URLs that come back to them.
        base_url=str(request.base_url).rstrip("/") + request.scope.get("root_path", "") + "/",
        json=parsed,
        form=form,
        files=files,
    )


class TimedASGITransport(httpx.ASGITransport):
    """`httpx.ASGITransport` that raises `httpx.ReadTimeout` like a socket would.

    Plain `ASGITransport` ignores the client's timeouts, so a stalled fake would stall
    the test instead of exercising the caller's timeout handling.
    """

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        limits = request.extensions.get("timeout", {})
        read = limits.get("read")
        if read is None:
            return await super().handle_async_request(request)
        try:
            async with asyncio.timeout(read):
                return await super().handle_async_request(request)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(
                "fake upstream did not answer in time", request=request
            ) from exc


@contextmanager
def serve_in_thread(app: Any, *, startup_timeout: float = 10.0) -> Iterator[str]:
    """Run `app` with uvicorn on 127.0.0.1 in a background thread; yield its base URL.

    The socket is bound before the server starts, so the port is known without a race,
    and the context exits only after the server has shut down.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        ws="none",
        log_config=None,
        log_level="warning",
        access_log=False,
        # A hung handler must not hold shutdown hostage.
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run,
        kwargs={"sockets": [sock]},
        name=f"fake-upstream-{port}",
        daemon=True,
    )
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the fake upstream server stopped during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("the fake upstream server did not start in time")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=startup_timeout)
        sock.close()
