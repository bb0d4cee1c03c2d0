"""The soak's fleet on one machine: network namespaces, shared services, gateways, HAProxy.

Layout (every name carries this run's tag, `irs<pid>`, so parallel runs never meet):

    root namespace                         bridge irs<pid>br  10.231.K.1/24
      ├─ HAProxy  127.0.0.1:P  ──────────►  10.231.K.2:8000  netns irs<pid>-h1  (gateway)
      │                                      10.231.K.3:8000  netns irs<pid>-h2  (gateway)
      │                                      10.231.K.4:8000  netns irs<pid>-h3  (gateway)
      ├─ PostgreSQL       10.231.K.1:…  (this run's own cluster; restarted as a fault)
      ├─ S3 proxy         10.231.K.1:… → moto server 127.0.0.1:…
      ├─ redis-server     10.231.K.1:…  (this run's own; restarted as a fault)
      └─ vendors + webhook receiver 10.231.K.1:… (bench/soak_vendors.py)

Each host is a namespace joined to the bridge by a veth pair; "cut off the network" sets
its veth down. The gateways reach S3 only through a TCP proxy in this process, which the
S3 fault closes (listening socket and every open connection) and later reopens: moto
keeps its objects in memory, so stopping it would lose the outputs the books check.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
TAG = f"irs{os.getpid() % 100000}"
PG_DATABASE = "ir_soak"
PG_KEYS_DATABASE = "ir_soak_keys"
GATEWAY_PORT = 8000
HOSTS = ("h1", "h2", "h3")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` exited with {done.returncode}: {done.stderr}")
    return done


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class Child:
    """A child process in its own session (stopping it stops what it spawned), logging
    to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self._file: IO[bytes] = log.open("ab")
        self.popen = subprocess.Popen(
            argv,
            env=env,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.popen.wait()
        # A SIGKILLed server leaves its workers orphaned in its group: reap them too.
        self.signal_group(signal.SIGKILL)
        self._file.close()


def wait_http(url: str, timeout_s: float, child: Child | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while time.monotonic() < deadline:
        if child is not None and not child.alive():
            raise RuntimeError(f"{child.name} exited before {url} answered:\n{child.tail()}")
        try:
            status = httpx.get(url, timeout=2.0).status_code
            if status == 200:
                return
            last = f"status {status}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.3)
    tail = child.tail() if child else ""
    raise RuntimeError(f"{url} did not answer 200 in {timeout_s:g} s ({last})\n{tail}")


# --------------------------------------------------------------------------- network


@dataclass
class Network:
    subnet: int  # K in 10.231.K.0/24
    made: list[str] = field(default_factory=list)  # what teardown must remove

    @property
    def bridge(self) -> str:
        return f"{TAG}br"

    @property
    def gateway_ip(self) -> str:
        return f"10.231.{self.subnet}.1"

    def host_ip(self, n: int) -> str:
        return f"10.231.{self.subnet}.{n + 2}"

    def netns(self, name: str) -> str:
        return f"{TAG}-{name}"

    def veth(self, n: int) -> str:
        return f"{TAG}h{n + 1}"

    @classmethod
    def pick(cls) -> Network:
        used = run("ip", "-4", "-o", "addr").stdout
        for k in [os.getpid() % 200 + 20, *range(20, 250)]:
            if f"10.231.{k}." not in used:
                return cls(k)
        raise RuntimeError("no free 10.231.K.0/24 subnet for the soak's bridge")

    def up(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        self.made.append("bridge")
        run("ip", "addr", "add", f"{self.gateway_ip}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")
        for n, name in enumerate(HOSTS):
            ns, veth = self.netns(name), self.veth(n)
            run("ip", "netns", "add", ns)
            self.made.append(f"netns:{ns}")
            run("ip", "link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            run("ip", "link", "set", f"{veth}p", "netns", ns)
            run("ip", "link", "set", veth, "master", self.bridge)
            run("ip", "link", "set", veth, "up")
            inside = ("ip", "netns", "exec", ns, "ip")
            run(*inside, "link", "set", f"{veth}p", "name", "eth0")
            run(*inside, "addr", "add", f"{self.host_ip(n)}/24", "dev", "eth0")
            run(*inside, "link", "set", "eth0", "up")
            run(*inside, "link", "set", "lo", "up")

    def cut(self, n: int) -> None:
        run("ip", "link", "set", self.veth(n), "down")

    def mend(self, n: int) -> None:
        run("ip", "link", "set", self.veth(n), "up")

    def down(self) -> list[str]:
        problems = []
        for item in reversed(self.made):
            if item == "bridge":
                done = run("ip", "link", "del", self.bridge, check=False)
            else:
                ns = item.split(":", 1)[1]
                # Deleting the namespace deletes its veth end and so the pair.
                done = run("ip", "netns", "del", ns, check=False)
            if done.returncode != 0:
                problems.append(f"{item}: {done.stderr.strip()}")
        self.made.clear()
        return problems


# --------------------------------------------------------------------------- TCP proxy


class TcpProxy:
    """A TCP forwarder that a fault can cut: closing it stops listening (new connections
    are refused) and aborts every open connection, as a restarted or unreachable server
    would look to its clients. Runs on its own event loop thread, so a busy load
    generator cannot delay the gateways' database traffic."""

    def __init__(self, name: str, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.name = name
        self.listen = listen
        self.target = target
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self.thread.start()
        self._call(self._open())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _open(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, *self.listen, reuse_address=True, backlog=1024
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                # One side ended: end the other, as a socket-level proxy would.
                with contextlib.suppress(Exception):
                    dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def cut(self) -> None:
        self._call(self._cut())

    def restore(self) -> None:
        self._call(self._open())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# --------------------------------------------------------------------------- services


class Postgres:
    """This run's own PostgreSQL cluster (initdb in a temporary directory, run as the
    `postgres` user), so the "restart PostgreSQL" fault is a real restart, and a fleet
    whose pools outgrow a server's `max_connections` does not starve the shared server
    at 127.0.0.1:5432 that other people's tests use."""

    def __init__(self, host: str, logs: Path) -> None:
        self.host = host
        self.port = free_port()
        self.logs = logs
        self.dir = Path(f"/tmp/{TAG}-pg")
        self.bin = self._bindir()
        self.running = False

    @staticmethod
    def _bindir() -> Path:
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
        if not found:
            raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql")
        return found[-1].parent

    def _as_postgres(self, *argv: str) -> None:
        run("runuser", "-u", "postgres", "--", *argv)

    def init(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(mode=0o700)
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-instructions",
        )  # fmt: skip
        # initdb trusts loopback only; the gateways come from their namespaces.
        with (self.dir / "data" / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 10.231.0.0/16 trust\n")
        self.start()

    def start(self) -> None:
        # fsync off: a benchmark's data need not survive a power cut, and the machine's
        # disk is shared. max_connections: room for every worker's pools (see the report).
        options = (
            f"-c listen_addresses={self.host},127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.dir} -c max_connections=400 "
            "-c fsync=off -c shared_buffers=64MB"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
            str(self.dir / "server.log"), "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """`fast`: every client's connection is closed at once, as in a restart."""
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "stop"
        )
        self.running = False

    def url(self, db: str, host: str | None = None) -> str:
        return f"postgresql+asyncpg://postgres@{host or self.host}:{self.port}/{db}"

    def psql(self, sql: str, db: str = "postgres") -> str:
        argv = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db]
        return run(*argv, "-AtXqc", sql).stdout

    def rows(self, sql: str, db: str) -> list[dict[str, Any]]:
        """Rows of `sql` as dicts (PostgreSQL builds the JSON, so no driver is needed)."""
        out = self.psql(f"SELECT coalesce(json_agg(q), '[]') FROM ({sql}) q", db)
        rows: list[dict[str, Any]] = json.loads(out or "[]")
        return rows

    def destroy(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):
                self.stop("immediate")
        log = self.dir / "server.log"
        if log.exists():
            shutil.copy(log, self.logs / "postgres.log")
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    def __init__(self, host: str, logs: Path) -> None:
        self.host = host
        self.port = free_port(host)
        self.logs = logs
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        argv = [
            "redis-server",
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]
        self.child = Child("redis", argv, dict(os.environ), self.logs / "redis.log")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 1):
                return
            time.sleep(0.1)
        raise RuntimeError(f"redis-server did not start:\n{self.child.tail()}")

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None


class Moto:
    """moto's S3 server with one public-read bucket (as tests/fakes/s3.py sets it up)."""

    BUCKET = "soak-outputs"

    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.logs = logs
        self.child: Child | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.child = Child("moto", argv, env, self.logs / "moto.log")
        url = f"http://127.0.0.1:{self.port}"
        wait_http(f"{url}/moto-api/", 60, self.child)
        sys.path.insert(0, str(ROOT))
        from tests.fakes.s3 import admin_client

        admin = admin_client(url)
        admin.create_bucket(Bucket=self.BUCKET)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": "s3:GetObject",
                    "Resource": f"arn:aws:s3:::{self.BUCKET}/*",
                }
            ],
        }
        admin.put_bucket_policy(Bucket=self.BUCKET, Policy=json.dumps(policy))

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None


# --------------------------------------------------------------------------- gateways


class Host:
    """One machine of the fleet: `image-router serve --workers 2` in its namespace."""

    def __init__(self, n: int, net: Network, env: dict[str, str], logs: Path) -> None:
        self.n = n
        self.name = HOSTS[n]
        self.net = net
        self.env = env
        self.logs = logs
        self.child: Child | None = None
        self.binary = str(Path(sys.executable).parent / "image-router")

    @property
    def ip(self) -> str:
        return self.net.host_ip(self.n)

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{GATEWAY_PORT}"

    def start(self, wait_s: float = 120.0) -> None:
        argv = ["ip", "netns", "exec", self.net.netns(self.name), self.binary, "serve"]
        argv += ["--host", "0.0.0.0", "--port", str(GATEWAY_PORT), "--workers", "2"]
        self.child = Child(self.name, argv, self.env, self.logs / f"gateway-{self.name}.log")
        try:
            wait_http(f"{self.url}/health", wait_s, self.child)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{self.diagnose()}") from None

    def diagnose(self) -> str:
        """What the host's processes are doing: for a start that never answers."""
        if self.child is None:
            return ""
        pgid = str(self.child.pid)
        ps = run("ps", "-o", "pid,ppid,stat,wchan:20,etime,cmd", "-g", pgid, check=False)
        ss = run("ip", "netns", "exec", self.net.netns(self.name), "ss", "-tanp", check=False)
        return f"processes of {self.name}:\n{ps.stdout}\nsockets in its namespace:\n{ss.stdout}"

    def kill9(self) -> None:
        """SIGKILL the server and all its workers at once: a crashed machine's service."""
        if self.child is not None:
            self.child.signal_group(signal.SIGKILL)
            self.child.popen.wait(10)

    def sigterm(self, wait_s: float) -> float:
        """SIGTERM the server (uvicorn passes it on to its workers); seconds until it
        exited. Raises if it outlives `wait_s`."""
        assert self.child is not None
        began = time.monotonic()
        os.kill(self.child.pid, signal.SIGTERM)
        try:
            self.child.popen.wait(wait_s)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{self.name} still running {wait_s:g} s after SIGTERM") from exc
        return time.monotonic() - began

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(15)
            self.child = None


class HAProxy:
    def __init__(self, hosts: list[Host], check_path: str, logs: Path) -> None:
        self.port = free_port()
        self.socket = logs / "haproxy.sock"
        self.config = logs / "haproxy.cfg"
        servers = "\n".join(f"  server {h.name} {h.ip}:{GATEWAY_PORT} check" for h in hosts)
        self.config.write_text(
            f"""# Written by bench/soak.py.
global
  maxconn 8192
  stats socket {self.socket} mode 600 level admin

defaults
  mode http
  option httplog
  timeout connect 2s
  # Generations take up to the vendor's latency (and videos longer); the gateway's
  # keep-alive mode writes a byte every few seconds on slow ones.
  timeout client 600s
  timeout server 600s
  timeout http-request 30s
  # Connection failures only: retrying a request a server may have received could run a
  # generation twice at the vendor.
  retries 2
  retry-on conn-failure
  option redispatch
  option forwardfor
{self.error_pages(logs)}

frontend soak
  bind 127.0.0.1:{self.port}
  default_backend gateways

backend gateways
  balance leastconn
  option httpchk GET {check_path}
  http-check expect status 200
  default-server inter 1s fastinter 500ms downinter 1s fall 2 rise 2
{servers}
"""
        )
        self.logs = logs
        self.child: Child | None = None

    @staticmethod
    def error_pages(logs: Path) -> str:
        """`errorfile` lines for HAProxy's own 502/503/504, marked so the clients can tell
        them from a gateway's answer (soak_load.HAPROXY_MARK)."""
        lines = []
        reasons = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
        for status, reason in reasons.items():
            page = logs / f"haproxy-{status}.http"
            body = (
                f"<html><body><h1>{status} {reason}</h1>\nsoak-haproxy: {reason}\n</body></html>\n"
            )
            page.write_text(
                f"HTTP/1.0 {status} {reason}\r\nCache-Control: no-cache\r\n"
                f"Connection: close\r\nContent-Type: text/html\r\n\r\n{body}"
            )
            lines.append(f"  errorfile {status} {page}")
        return "\n".join(lines)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        haproxy = shutil.which("haproxy")
        if haproxy is None:
            raise RuntimeError("haproxy not found: apt-get install -y haproxy")
        run(haproxy, "-c", "-f", str(self.config))
        argv = [haproxy, "-db", "-f", str(self.config)]
        self.child = Child("haproxy", argv, dict(os.environ), self.logs / "haproxy.log")

    def states(self) -> dict[str, str]:
        """Each server's state (UP, DOWN, …) from the stats socket."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {
            r["svname"]: r["status"].split()[0]
            for r in rows
            if r["pxname"] == "gateways" and r["svname"] not in ("FRONTEND", "BACKEND")
        }

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None
