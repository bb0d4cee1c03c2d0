"""A deliberately cheap OpenAI-compatible image upstream for load benchmarks.

It shares two CPU cores with the gateway under test and the load generator, so
every microsecond it spends is stolen from the gateway's numbers. Hence a bare
`asyncio.Protocol` (on uvloop when installed) with a tiny HTTP/1.1 parser,
keep-alive, and an answer built once per second instead of once per request.
`tests/fakes/` holds the faithful fakes; this one only needs to be fast and
well-formed.

    python bench/fake_upstream.py --port 9100 --delay-ms 500 --answer-bytes 1400000

`POST <any prefix>/images/generations` answers after `--delay-ms` with
`{"created": s, "data": [{"b64_json": ...}]}`, whose decoded image is a valid PNG
of exactly `--answer-bytes` bytes. `GET /_stats` reports what was received,
answered and still pending, so the harness can compare upstream work with what
the gateway charged.

`--fail-model NAME --fail-rate R` makes requests naming upstream model NAME answer
503 with an OpenAI-style `server_error` body (after the same delay) for a fraction R
of them, spread evenly and deterministically: at 0.2 exactly every 5th one. The
gateway should then fail over to the model's next route.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import re
import signal
import struct
import time
import zlib
from collections.abc import Callable
from fractions import Fraction
from typing import cast

DEFAULT_ANSWER_BYTES = 1024
_MAX_HEAD = 64 * 1024
_MAX_BODY = 64 * 1024 * 1024
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Ancillary, private, safe-to-copy: decoders skip it, so the padding stays a valid PNG.
_PADDING_CHUNK = b"bnCh"
_CHUNK_OVERHEAD = 12
# The first "model" key of a JSON body. An escaped quote inside a prompt (\"model\")
# cannot match, so a full JSON parse per request is not needed.
_MODEL = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_payload(size: int, side: int = 16) -> bytes:
    """A decodable grey PNG, padded with a private chunk to exactly `size` bytes."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
    rows = b"".join(b"\x00" + bytes([128]) * side for _ in range(side))
    idat = _chunk(b"IDAT", zlib.compress(rows, 9))
    iend = _chunk(b"IEND", b"")
    bare = _PNG_SIGNATURE + ihdr + idat + iend
    if size == len(bare):
        return bare
    padding = size - len(bare) - _CHUNK_OVERHEAD
    if padding < 0:
        raise ValueError(f"--answer-bytes must be {len(bare)} or at least {len(bare) + 12}")
    # Incompressible filler: nothing between here and the disk can make it cheap.
    filler = random.Random(size).randbytes(padding)
    return _PNG_SIGNATURE + ihdr + idat + _chunk(_PADDING_CHUNK, filler) + iend


class Answers:
    """The raw HTTP responses, rebuilt only when the `created` second changes."""

    def __init__(self, answer_bytes: int) -> None:
        b64 = base64.b64encode(png_payload(answer_bytes)).decode("ascii")
        self._tail = ('"data":[{"b64_json":"' + b64 + '"}]}').encode("ascii")
        self._second = -1
        self._ok = b""

    def ok(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            body = b'{"created":' + str(now).encode() + b"," + self._tail
            self._ok = _head(200, "OK", len(body)) + body
            self._second = now
        return self._ok


def _head(status: int, reason: str, length: int, *, close: bool = False) -> bytes:
    connection = "connection: close\r\n" if close else ""
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n{connection}\r\n"
    ).encode("ascii")


def error_response(
    status: int,
    reason: str,
    message: str,
    *,
    close: bool = False,
    kind: str = "invalid_request_error",
) -> bytes:
    body = json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()
    return _head(status, reason, len(body), close=close) + body


# What OpenAI answers when it is overloaded: a 5xx the gateway must route around.
_UNAVAILABLE = error_response(
    503,
    "Service Unavailable",
    "The server is overloaded or not ready yet (bench fake upstream, deliberate failure)",
    kind="server_error",
)


def json_response(payload: object) -> bytes:
    body = json.dumps(payload).encode()
    return _head(200, "OK", len(body)) + body


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.answered = 0
        self.rejected = 0
        self.abandoned = 0  # the client hung up before its answer was due
        self.failed = 0  # deliberate 503s (--fail-rate)
        # Requests per upstream model name; counted only with --fail-model, the one
        # case where bodies are read at all.
        self.models: dict[str, int] = {}

    def as_dict(self) -> dict[str, int | dict[str, int]]:
        pending = self.received - self.answered - self.rejected - self.abandoned - self.failed
        return {
            "received": self.received,
            "answered": self.answered,
            "rejected": self.rejected,
            "abandoned": self.abandoned,
            "failed": self.failed,
            "pending": pending,
            "models": dict(self.models),
        }


class FailurePlan:
    """Which requests for one upstream model fail: a fraction `rate`, evenly spread.

    The n-th matching request (from 0) fails when floor((n + 1) * rate) passes an
    integer, so any prefix of the run holds floor(count * rate) failures: no seeded
    randomness to clump them, and the same sequence on every run.
    """

    def __init__(self, model: str, rate: Fraction) -> None:
        if not 0 <= rate <= 1:
            raise ValueError("--fail-rate must be between 0 and 1")
        self.model = model.encode()
        self.numerator = rate.numerator
        self.denominator = rate.denominator
        self.seen = 0

    def should_fail(self, model: bytes) -> bool:
        if model != self.model:
            return False
        n = self.seen
        self.seen += 1
        num, den = self.numerator, self.denominator
        return (n + 1) * num // den > n * num // den


class Upstream:
    def __init__(
        self,
        answers: Answers,
        delay_s: float,
        api_key: str | None,
        failures: FailurePlan | None = None,
    ) -> None:
        self.answers = answers
        self.delay_s = delay_s
        self.auth = f"bearer {api_key}".encode() if api_key else None
        self.failures = failures
        self.stats = Stats()

    def should_fail(self, body: bytes) -> bool:
        """Count the body's model; True if this request is to fail (--fail-rate)."""
        if self.failures is None:
            return False
        found = _MODEL.search(body)
        model = found.group(1) if found else b""
        name = model.decode(errors="replace")
        self.stats.models[name] = self.stats.models.get(name, 0) + 1
        return self.failures.should_fail(model)


class Connection(asyncio.Protocol):
    """One keep-alive connection; requests are answered strictly one after another.

    Clients of this server (httpx, wrk) never pipeline, but reading the next request
    only after answering the previous one keeps responses in order if one ever does.
    """

    def __init__(self, upstream: Upstream) -> None:
        self.up = upstream
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
            self.up.stats.abandoned += 1
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        transport = self.transport
        if transport is None:
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_HEAD:
                self._fail(431, "Request Header Fields Too Large", "headers too large")
            return
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            self._fail(400, "Bad Request", "malformed request line")
            return
        method, target, version = parts
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"transfer-encoding" in headers:
            self._fail(501, "Not Implemented", "chunked request bodies are not supported")
            return
        try:
            length = int(headers.get(b"content-length", b"0"))
        except ValueError:
            self._fail(400, "Bad Request", "bad content-length")
            return
        if length > _MAX_BODY:
            self._fail(413, "Content Too Large", "body too large")
            return
        if len(self.buffer) < end + 4 + length:
            return
        # Only failure injection needs the body; otherwise it is never copied.
        body = bytes(self.buffer[end + 4 : end + 4 + length]) if self.up.failures else b""
        del self.buffer[: end + 4 + length]
        keep_alive = headers.get(b"connection", b"").lower() != b"close" and version == b"HTTP/1.1"
        self.busy = True
        self._route(method, target.split(b"?", 1)[0], headers, body, keep_alive)

    def _route(
        self, method: bytes, path: bytes, headers: dict[bytes, bytes], body: bytes, keep: bool
    ) -> None:
        stats = self.up.stats
        if method == b"POST" and path.endswith(b"/images/generations"):
            stats.received += 1
            auth = self.up.auth
            if auth is not None and headers.get(b"authorization", b"").lower() != auth:
                stats.rejected += 1
                self._send(
                    error_response(401, "Unauthorized", "Incorrect API key provided"),
                    keep,
                )
                return
            fail = self.up.should_fail(body)
            if self.up.delay_s > 0:
                loop = asyncio.get_running_loop()
                self.timer = loop.call_later(self.up.delay_s, self._answer, keep, fail)
            else:
                self._answer(keep, fail)
        elif method == b"GET" and path == b"/_stats":
            self._send(json_response(stats.as_dict()), keep)
        else:
            self._send(error_response(404, "Not Found", "no such route"), keep)

    def _answer(self, keep: bool, fail: bool) -> None:
        self.timer = None
        if fail:
            self.up.stats.failed += 1
            self._send(_UNAVAILABLE, keep)
            return
        self.up.stats.answered += 1
        self._send(self.up.answers.ok(), keep)

    def _send(self, raw: bytes, keep: bool) -> None:
        transport = self.transport
        if transport is None:
            return
        transport.write(raw)
        self.busy = False
        if keep:
            if self.buffer:
                self._next()
        else:
            transport.close()

    def _fail(self, status: int, reason: str, message: str) -> None:
        if self.transport is not None:
            self.transport.write(error_response(status, reason, message, close=True))
            self.transport.close()


async def serve(host: str, port: int, upstream: Upstream) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Connection(upstream), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake upstream listening on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="wait before each answer")
    parser.add_argument(
        "--answer-bytes",
        type=int,
        default=DEFAULT_ANSWER_BYTES,
        help="decoded PNG size",
    )
    parser.add_argument("--api-key", help="if set, answer 401 unless this bearer key is sent")
    parser.add_argument("--fail-model", help="upstream model name whose requests may fail")
    parser.add_argument(
        "--fail-rate",
        type=_fraction,
        default=Fraction(0),
        help="fraction of --fail-model requests answered 503, e.g. 0.2 (every 5th)",
    )
    args = parser.parse_args(argv)
    if args.fail_rate and not args.fail_model:
        parser.error("--fail-rate needs --fail-model")
    try:
        answers = Answers(args.answer_bytes)
        failures = FailurePlan(args.fail_model, args.fail_rate) if args.fail_model else None
    except ValueError as exc:
        parser.error(str(exc))
    upstream = Upstream(answers, args.delay_ms / 1000, args.api_key, failures)
    try:
        import uvloop

        runner: Callable[..., None] = uvloop.run
    except ImportError:
        runner = asyncio.run
    runner(serve(args.host, args.port, upstream))


def _fraction(text: str) -> Fraction:
    # Exact: 0.2 must mean one in five, not a float that drifts over a long run.
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc


if __name__ == "__main__":
    main()
