"""Running wrk with bench/post.lua and reading back what it measured."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

POST_LUA = Path(__file__).with_name("post.lua")
GENERATIONS_PATH = "/v1/openai/images/generations"
_MARKER = "BENCH_JSON "


class WrkMissingError(RuntimeError):
    pass


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissingError(
            "wrk is not installed: run `apt-get install -y wrk` (Debian/Ubuntu) "
            "or build it from https://github.com/wg/wrk"
        )
    return path


def wrk_ready() -> bool:
    """Whether wrk is installed; if not, says how to install it on stderr."""
    try:
        wrk_binary()
    except WrkMissingError as exc:
        print(exc, file=sys.stderr)
        return False
    return True


def pinned(cpus: str | None) -> list[str]:
    """The `taskset` prefix that keeps a command on `cpus` (e.g. "0" or "1,2"), if any."""
    if cpus is None:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("taskset not found (util-linux): install it or pass --pin none")
    return [taskset, "-c", cpus]


@dataclass(frozen=True)
class LoadResult:
    duration_s: float
    completed: int
    statuses: dict[int, int]
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    sample: str | None = None
    raw: str = field(default="", repr=False)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.duration_s if self.duration_s else 0.0


def parse_wrk_output(stdout: str) -> LoadResult:
    """The result line post.lua's done() prints; ValueError if wrk never got there."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(_MARKER):
            data = json.loads(line[len(_MARKER) :])
            break
    else:
        raise ValueError("wrk printed no BENCH_JSON line:\n" + stdout[-2000:])
    errors = data["errors"]
    latency = data["latency_us"]
    completed = int(data["requests"])

    def ms(name: str) -> float:
        # wrk reports min as INT64_MIN when nothing completed.
        return latency[name] / 1000 if completed else 0.0

    return LoadResult(
        duration_s=data["duration_us"] / 1e6,
        completed=completed,
        statuses={int(code): int(n) for code, n in data["statuses"].items()},
        connect_errors=int(errors["connect"]),
        read_errors=int(errors["read"]),
        write_errors=int(errors["write"]),
        timeouts=int(errors["timeout"]),
        mean_ms=ms("mean"),
        p50_ms=ms("p50"),
        p90_ms=ms("p90"),
        p99_ms=ms("p99"),
        max_ms=ms("max"),
        sample=data.get("sample"),
        raw=stdout,
    )


@dataclass(frozen=True)
class Load:
    """One wrk run: `connections` closed-loop clients for `duration_s` seconds."""

    url: str
    api_key: str
    connections: int
    duration_s: float
    timeout_s: float = 120.0
    threads: int = 1
    body: str | None = None
    # Requests per connection; then it idles, so nothing is in flight when wrk stops.
    budget: int | None = None
    # A file of API keys, one a line: each request picks one at random (post.lua).
    keys_file: Path | None = None
    # CPUs wrk may run on (`taskset -c`), None for any.
    cpus: str | None = None

    def command(self) -> list[str]:
        threads = max(1, min(self.threads, self.connections))
        return [
            *pinned(self.cpus),
            wrk_binary(),
            f"-t{threads}",
            f"-c{self.connections}",
            f"-d{self.duration_s:g}s",
            f"--timeout={self.timeout_s:g}s",
            "--latency",
            "-s",
            str(POST_LUA),
            self.url.rstrip("/") + "/",
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ, BENCH_KEY=self.api_key, BENCH_PATH=GENERATIONS_PATH)
        if self.body is not None:
            env["BENCH_BODY"] = self.body
        if self.keys_file is not None:
            env["BENCH_KEYS_FILE"] = str(self.keys_file)
        if self.budget is not None:
            threads = max(1, min(self.threads, self.connections))
            env["BENCH_BUDGET"] = str(self.budget)
            env["BENCH_THREAD_CONNECTIONS"] = str(self.connections // threads)
        return env

    def run(self) -> LoadResult:
        done = subprocess.run(
            self.command(),
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=self.duration_s + self.timeout_s + 60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"wrk exited with {done.returncode}: {done.stderr.strip()}\n{done.stdout}"
            )
        return parse_wrk_output(done.stdout)
