"""The processes a benchmark needs: a database, the fake upstream, the gateway, its CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import httpx

from load import pinned

BENCH_DIR = Path(__file__).resolve().parent
FAKE_UPSTREAM = BENCH_DIR / "fake_upstream.py"
# One database per run (this process's id): two runs at once on a shared machine must not
# drop each other's database.
PG_DATABASE = f"bench_ir_{os.getpid()}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def gateway_binary() -> Path:
    beside = Path(sys.executable).parent / "image-router"
    if beside.exists():
        return beside
    found = shutil.which("image-router")
    if found is None:
        raise RuntimeError(
            "image-router not found next to this Python or on PATH; "
            "run with the project's venv (.venv/bin/python bench/run.py)"
        )
    return Path(found)


class Process:
    """A child in its own session, so stopping it also stops anything it spawned."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._log_file: IO[bytes] = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, grace_s: float = 10.0) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        self._log_file.close()


def wait_until_ready(process: Process, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(
                f"{process.name} exited with {process.popen.returncode} before it was "
                f"ready; last log lines:\n{process.log_tail()}"
            )
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
            last_error = "not 200 yet"
        except httpx.TransportError as exc:
            last_error = repr(exc)
        time.sleep(0.2)
    raise RuntimeError(
        f"{process.name} not ready at {url} after {timeout_s:g} s ({last_error}); "
        f"last log lines:\n{process.log_tail()}"
    )


@dataclass(frozen=True)
class UpstreamShape:
    delay_ms: float
    answer_bytes: int
    # Requests naming this upstream model answer 503 at `fail_rate` (fake --fail-*).
    fail_model: str | None = None
    fail_rate: float = 0.0


class FakeUpstream:
    """bench/fake_upstream.py on a fixed port, restarted whenever its shape changes."""

    def __init__(self, port: int, api_key: str, logs: Path, cpus: str | None = None) -> None:
        self.port = port
        self.api_key = api_key
        self.logs = logs
        self.cpus = cpus  # `taskset -c` CPUs, None for any
        self.shape: UpstreamShape | None = None
        self._process: Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def ensure(self, shape: UpstreamShape) -> None:
        if self.shape == shape and self._process is not None and self._process.alive():
            return
        self.stop()
        argv = [
            *pinned(self.cpus),
            sys.executable,
            str(FAKE_UPSTREAM),
            f"--port={self.port}",
            f"--delay-ms={shape.delay_ms:g}",
            f"--answer-bytes={shape.answer_bytes}",
            f"--api-key={self.api_key}",
        ]
        if shape.fail_model is not None:
            argv += [f"--fail-model={shape.fail_model}", f"--fail-rate={shape.fail_rate!r}"]
        process = Process("fake upstream", argv, dict(os.environ), self.logs / "upstream.log")
        self._process = process
        wait_until_ready(process, f"http://127.0.0.1:{self.port}/_stats", 15)
        self.shape = shape

    def stats(self) -> dict[str, Any]:
        """Counters (ints) and, with failure injection, `models`: requests per model."""
        reply = httpx.get(f"http://127.0.0.1:{self.port}/_stats", timeout=10)
        reply.raise_for_status()
        data: dict[str, Any] = reply.json()
        return data

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
            self.shape = None


def prepare_database(db: str, data_dir: Path, name: str = PG_DATABASE) -> str | None:
    """A fresh database; returns DATABASE_URL, or None for the default SQLite file."""
    if db == "sqlite":
        return None
    if shutil.which("psql") is None:
        raise RuntimeError("psql not found: install postgresql-client")
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _psql(f"CREATE DATABASE {name}")
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


def drop_database(db: str, name: str = PG_DATABASE) -> None:
    """Drop this run's PostgreSQL database (after the gateway has stopped)."""
    if db == "postgres":
        _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc", sql],
        check=True,
        capture_output=True,
        text=True,
    )


class Gateway:
    def __init__(
        self,
        port: int,
        env: dict[str, str],
        logs: Path,
        *,
        workers: str = "1",
        cpus: str | None = None,
    ) -> None:
        self.port = port
        self.env = env
        self.logs = logs
        self.workers = workers  # `serve --workers`: a number or "auto"
        self.cpus = cpus  # `taskset -c` CPUs of the server (and its workers), None for any
        self.binary = gateway_binary()
        self._process: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90.0) -> None:
        argv = [*pinned(self.cpus), str(self.binary), "serve", "--host", "127.0.0.1"]
        argv += ["--port", str(self.port), "--workers", self.workers]
        process = Process("gateway", argv, self.env, self.logs / "gateway.log")
        self._process = process
        wait_until_ready(process, f"{self.url}/health", timeout_s)

    def cpu_seconds(self) -> float | None:
        """CPU time (utime + stime) the gateway's processes have used: the server and,
        with several workers, each worker (Linux /proc); None where unavailable.

        Unlike req/s it hardly depends on what else the machine runs, so it still
        compares scenarios when other processes compete for the cores.
        """
        if self._process is None:
            return None
        stats = _proc_stats()
        if self._process.popen.pid not in stats:
            return None
        tree = {self._process.popen.pid}
        grew = True
        while grew:  # the workers, their helpers (uvicorn's multiprocessing tracker)
            children = {pid for pid, (ppid, _) in stats.items() if ppid in tree} - tree
            tree |= children
            grew = bool(children)
        ticks = sum(stats[pid][1] for pid in tree)
        return ticks / os.sysconf("SC_CLK_TCK")

    def check_alive(self) -> None:
        if self._process is None or not self._process.alive():
            tail = self._process.log_tail() if self._process else ""
            raise RuntimeError(f"the gateway is not running; last log lines:\n{tail}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"`image-router {' '.join(args)}` exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def create_account(self, email: str, credit_usd: Decimal) -> str:
        """A user with `credit_usd` of credit; returns a fresh API key for it."""
        self.cli("users", "create", email)
        out = self.cli("keys", "create", email, "--name", "bench")
        lines = [line.strip() for line in out.splitlines() if line.strip()]
        if not lines or not re.fullmatch(r"\S{20,}", lines[-1]):
            raise RuntimeError(f"no API key on the last line of `keys create`:\n{out}")
        self.cli("credits", "grant", email, f"{credit_usd}", "--reason", "benchmark", "--force")
        return lines[-1]

    def create_keys(self, email: str, count: int) -> list[str]:
        """`count` more API keys of `email`'s account, made through the management API
        (`POST /v1/api-keys`) with one management key: the CLI would start a process each."""
        out = self.cli("keys", "create", email, "--name", "bench-manager", "--management")
        manager = out.strip().splitlines()[-1].strip()
        keys = []
        with httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {manager}"}, timeout=60
        ) as client:
            for n in range(count):
                reply = client.post("/v1/api-keys", json={"name": f"bench-{n}"})
                if reply.status_code != 201:
                    raise RuntimeError(
                        f"creating key {n} failed: {reply.status_code} {reply.text[:300]}"
                    )
                keys.append(str(reply.json()["key"]))
        return keys

    def balance_usd(self, email: str) -> tuple[Decimal, str]:
        out = self.cli("credits", "show", email)
        return parse_balance(out), out


def _proc_stats() -> dict[int, tuple[int, int]]:
    """Every process's parent and CPU ticks (utime + stime), from /proc."""
    stats: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # Fields after the parenthesised command name: state, ppid, …, utime, stime.
        fields = stat.rsplit(")", 1)[1].split()
        stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return stats


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def parse_balance(text: str) -> Decimal:
    """The USD balance in `credits show` output (JSON, `$` amounts or a balance line)."""
    stripped = text.strip()
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        for key in ("balance_usd", "balance", "credits_usd", "usd", "credits"):
            if key in data:
                return _decimal(str(data[key]), text)
    if isinstance(data, int | float | str):
        return _decimal(str(data), text)
    lines = stripped.splitlines()
    scope = [line for line in lines if "balance" in line.lower()] or lines
    for line in scope:
        dollar = re.search(r"\$\s*(" + _NUMBER.pattern + ")", line)
        if dollar:
            return _decimal(dollar.group(1), text)
    for line in scope:
        plain = _NUMBER.search(line.split(":", 1)[-1])
        if plain:
            return _decimal(plain.group(0), text)
    raise ValueError(f"no balance in `credits show` output:\n{text}")


def _decimal(value: str, text: str) -> Decimal:
    try:
        return Decimal(value.replace(",", "").replace("$", "").strip())
    except InvalidOperation as exc:
        raise ValueError(f"no balance in `credits show` output:\n{text}") from exc
