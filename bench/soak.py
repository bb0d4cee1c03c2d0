"""The fleet soak: three gateways behind HAProxy under load while parts of them fail.

    sudo .venv/bin/python bench/soak.py --quick          # about 2 minutes of load
    sudo .venv/bin/python bench/soak.py --minutes 30

See bench/README.md ("The fleet soak") for what runs where, the fault schedule, and what
was substituted (PostgreSQL and S3 are cut through TCP proxies, not restarted). Prints a
markdown report and writes it with every figure as JSON to bench/results/soak-<time>.json.
Exits 1 when a client saw a 500, the books do not balance, or the run could not finish.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

# bench/ for the soak's own modules, the project root for the test suite's fakes
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from soak_fleet import (
    HOSTS,
    PG_DATABASE,
    PG_KEYS_DATABASE,
    TAG,
    Child,
    HAProxy,
    Host,
    Moto,
    Network,
    Postgres,
    Redis,
    TcpProxy,
    free_port,
    run,
    wait_http,
)
from soak_load import (
    CHARGED_KINDS,
    GENERATION_KINDS,
    PAGES,
    Account,
    Clients,
    Sample,
    video_catalog,
)

BENCH_DIR = Path(__file__).resolve().parent
OPENAI_KEY = "sk-fake-openai-0123456789abcdef"  # tests/fakes/openai.py DEFAULT_API_KEY
FAL_KEY = "fal-key-0123:fedcba9876543210"  # tests/fakes/fal.py DEFAULT_API_KEY


def new_key() -> str:
    """32 random bytes, base64: what `image-router vault new-key` prints."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def log(message: str) -> None:
    """Progress for the operator watching the run (stderr; the report goes to stdout)."""
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@dataclass
class Plan:
    """Durations of one run; --quick compresses everything."""

    quick: bool
    load_s: float
    latency_scale: float
    pg_down_s: float
    s3_cut_s: float
    net_cut_s: float
    redis_down_s: float
    image_deadline_s: float
    video_deadline_s: float
    hold_grace_s: float
    reconcile_s: float
    poll_s: float
    webhook_retry_s: float
    clients: int
    accounts: int

    @classmethod
    def make(cls, args: argparse.Namespace) -> Plan:
        if args.quick:
            return cls(
                quick=True,
                load_s=135,
                latency_scale=0.25,
                pg_down_s=8,
                s3_cut_s=10,
                net_cut_s=15,
                redis_down_s=3,
                image_deadline_s=40,
                video_deadline_s=60,
                hold_grace_s=10,
                reconcile_s=5,
                poll_s=1,
                webhook_retry_s=2,
                clients=args.clients,
                accounts=args.accounts,
            )
        return cls(
            quick=False,
            load_s=args.minutes * 60,
            latency_scale=1.0,
            pg_down_s=20,
            s3_cut_s=30,
            net_cut_s=60,
            redis_down_s=5,
            image_deadline_s=120,
            video_deadline_s=300,
            hold_grace_s=30,
            reconcile_s=15,
            poll_s=2,
            webhook_retry_s=5,
            clients=args.clients,
            accounts=args.accounts,
        )


@dataclass
class FaultRecord:
    name: str
    what: str
    began: float  # monotonic
    began_utc: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    restored: float | None = None  # the fault's end: service back / host restarted
    fleet_back: float | None = None  # every host ready and UP in HAProxy again
    note: str = ""


class Fleet:
    """Everything the soak starts, and its teardown (also on Ctrl-C and on failure)."""

    def __init__(self, plan: Plan, logs: Path) -> None:
        self.plan = plan
        self.logs = logs
        self.net: Network | None = None
        self.redis: Redis | None = None
        self.moto: Moto | None = None
        self.vendors: Child | None = None
        self.pg: Postgres | None = None
        self.s3_proxy: TcpProxy | None = None
        self.hosts: list[Host] = []
        self.haproxy: HAProxy | None = None
        self.check_path = "auto"  # HAProxy's health check: /ready, else /health
        self.peak_connections = 0
        self.cli_env: dict[str, str] = {}
        self.hooks_url = ""

    # ------------------------------------------------------------------ set-up

    def up(self) -> None:
        plan = self.plan
        self.net = net = Network.pick()
        log(f"network: bridge {net.bridge} {net.gateway_ip}/24, namespaces {TAG}-h1..h3")
        net.up()
        gw = net.gateway_ip
        self.pg = pg = Postgres(gw, self.logs)
        log(f"PostgreSQL: this run's own cluster on {gw}:{pg.port}")
        pg.init()
        for db in (PG_DATABASE, PG_KEYS_DATABASE):
            pg.psql(f"CREATE DATABASE {db}")
        self.redis = Redis(gw, self.logs)
        self.redis.start()
        self.moto = Moto(self.logs)
        self.moto.start()
        self.s3_proxy = TcpProxy("s3-proxy", (gw, free_port(gw)), ("127.0.0.1", self.moto.port))
        ports = {name: free_port(gw) for name in ("openai", "fal", "hooks")}
        argv = [
            sys.executable,
            str(BENCH_DIR / "soak_vendors.py"),
            f"--host={gw}",
            f"--openai-port={ports['openai']}",
            f"--fal-port={ports['fal']}",
            f"--hooks-port={ports['hooks']}",
            f"--openai-key={OPENAI_KEY}",
            f"--fal-key={FAL_KEY}",
            f"--latency-scale={plan.latency_scale}",
        ]
        self.vendors = Child("vendors", argv, dict(os.environ), self.logs / "vendors.log")
        self.hooks_url = f"http://{gw}:{ports['hooks']}"
        wait_http(f"{self.hooks_url}/_stats", 30, self.vendors)
        catalog = self.logs / "soak-catalog.toml"
        catalog.write_text(video_catalog())

        shared = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "DATABASE_URL": pg.url(PG_DATABASE),
            "DATA_KEYS_URL": pg.url(PG_KEYS_DATABASE),
            "PII_KEK": new_key(),
            "BLIND_INDEX_KEY": new_key(),
            "JWT_SECRET": secrets.token_hex(32),
            "STORAGE_URL": f"s3://{Moto.BUCKET}",
            "S3_ENDPOINT": f"http://{gw}:{self.s3_proxy.listen[1]}",
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY_ID": "testing",
            "S3_SECRET_ACCESS_KEY": "testing",
            "REDIS_URL": self.redis.url,
            "REDIS_NAMESPACE": TAG,
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": f"http://{gw}:{ports['openai']}/v1",
            "FAL_API_KEY": FAL_KEY,
            "FAL_BASE_URL": f"http://{gw}:{ports['fal']}",
            "CATALOG_PATHS": str(catalog),
            # The vendors and the webhook receiver are on the bridge's private address.
            "ALLOW_PRIVATE_UPSTREAMS": "true",
            "LOG_LEVEL": "WARNING",
            "TRUSTED_PROXY_COUNT": "1",
            # Every client comes through HAProxy from one address: the per-IP limit would
            # turn the soak into 429s. The per-account limits (Redis-backed) stay on.
            "RATE_LIMIT_GENERAL": "100000/second",
            "IMAGE_DEADLINE_S": str(plan.image_deadline_s),
            "VIDEO_DEADLINE_S": str(plan.video_deadline_s),
            "HOLD_GRACE_S": str(plan.hold_grace_s),
            "HOLD_RECONCILE_INTERVAL_S": str(plan.reconcile_s),
            "POLL_INTERVAL_S": str(plan.poll_s),
            "WEBHOOK_INTERVAL_S": "1",
            "WEBHOOK_RETRY_FIRST_S": str(plan.webhook_retry_s),
        }
        # The operator CLI runs beside the fleet, in the root namespace.
        cli_dir = self.logs / "cli-data"
        cli_dir.mkdir()
        self.cli_env = shared | {"DATA_DIR": str(cli_dir)}
        log("migrating the database")
        self.cli("db", "upgrade")
        for n in range(len(HOSTS)):
            data = self.logs / f"data-{HOSTS[n]}"
            data.mkdir()
            self.hosts.append(Host(n, net, shared | {"DATA_DIR": str(data)}, self.logs))
        log("starting 3 hosts × `image-router serve --workers 2`")
        # h1 first: on a fresh database every host's first start creates the bootstrap
        # admin after checking that no account exists, and two hosts racing there make
        # one exit ("an account with e-mail admin@localhost already exists"; reported).
        self.hosts[0].start()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda h: h.start(), self.hosts[1:]))
        if self.check_path == "auto":
            probe = httpx.get(f"{self.hosts[0].url}/ready", timeout=10)
            self.check_path = "/ready" if probe.status_code != 404 else "/health"
        log(f"HAProxy health check: GET {self.check_path}")
        self.haproxy = HAProxy(self.hosts, self.check_path, self.logs)
        self.haproxy.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, KeyError):
                if set(self.haproxy.states().values()) == {"UP"}:
                    break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"HAProxy never saw every host UP:\n{self.haproxy.child}")

    def cli(self, *args: str) -> str:
        binary = str(Path(sys.executable).parent / "image-router")
        done = subprocess.run(
            [binary, *args], env=self.cli_env, capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            raise RuntimeError(f"`image-router {' '.join(args)}`: {done.stdout}{done.stderr}")
        return done.stdout

    def make_accounts(self, count: int, seed: int) -> list[Account]:
        """Accounts near their balance limits: $1.50–$4 each, a few minutes of use
        (an edit holds up to gpt-image-1's maximum price, $0.30, until it settles)."""
        import random

        rng = random.Random(seed)
        plan = [
            {"email": f"soak{n}@example.com", "credit_usd": f"{rng.uniform(1.5, 4.0):.2f}"}
            for n in range(count)
        ]
        done = subprocess.run(
            [sys.executable, str(BENCH_DIR / "soak_accounts.py")],
            input=json.dumps(plan),
            env=self.cli_env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"making the accounts failed:\n{done.stderr[-3000:]}")
        accounts = [
            Account(a["email"], a["key"], a["manager"], n)
            for n, a in enumerate(json.loads(done.stdout))
        ]
        assert self.haproxy is not None
        with httpx.Client(base_url=self.haproxy.url, timeout=30) as http:
            for account in accounts:
                reply = http.post(
                    "/v1/webhooks",
                    headers={"Authorization": f"Bearer {account.key}"},
                    json={"url": f"{self.hooks_url}/hook/{account.hook}"},
                )
                if reply.status_code != 201:
                    raise RuntimeError(
                        f"webhook endpoint refused: {reply.status_code} {reply.text}"
                    )
            for page in PAGES:
                reply = http.get(page)
                if reply.status_code != 200:
                    raise RuntimeError(f"page {page} answers {reply.status_code}")
        return accounts

    # ------------------------------------------------------------------ health

    def connections(self) -> int | None:
        """Connections to this run's databases now (None while PostgreSQL is away)."""
        assert self.pg is not None
        try:
            out = self.pg.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'ir_soak%'"
            )
            return int(out.strip())
        except (RuntimeError, ValueError):
            return None

    def fleet_ready(self) -> bool:
        assert self.haproxy is not None
        try:
            if set(self.haproxy.states().values()) != {"UP"}:
                return False
            return all(
                httpx.get(f"{h.url}{self.check_path}", timeout=2).status_code == 200
                for h in self.hosts
            )
        except (OSError, httpx.HTTPError, KeyError):
            return False

    # ------------------------------------------------------------------ teardown

    def down(self) -> None:
        problems: list[str] = []
        steps: list[tuple[str, Any]] = [
            ("haproxy", self.haproxy and self.haproxy.stop),
            *((h.name, h.stop) for h in self.hosts),
            ("vendors", self.vendors and self.vendors.stop),
            ("s3-proxy", self.s3_proxy and self.s3_proxy.close),
            ("redis", self.redis and self.redis.stop),
            ("moto", self.moto and self.moto.stop),
        ]
        for name, stop in steps:
            if not stop:
                continue  # never started
            try:
                stop()
            except Exception as exc:  # teardown goes on: everything else must still go
                problems.append(f"{name}: {exc!r}")
        if self.net is not None:
            problems += self.net.down()
        if self.pg is not None:
            try:
                self.pg.destroy()
            except Exception as exc:
                problems.append(f"postgres: {exc!r}")
        for problem in problems:
            log(f"teardown: {problem}")


# --------------------------------------------------------------------------- faults


class Faults:
    """The fault schedule, run in a thread beside the clients. A fault starts at its
    planned time or GAP_S after the fleet is back from the one before, whichever is
    later, so each is measured alone (a host's restart takes 30–40 s on a busy machine)."""

    GAP_S = 8.0

    def __init__(
        self, fleet: Fleet, plan: Plan, clients: Clients, only: list[str] | None = None
    ) -> None:
        self.only = [o.strip().lower() for o in only or [] if o.strip()]
        self.fleet = fleet
        self.plan = plan
        self.clients = clients
        self.records: list[FaultRecord] = []
        self.error: BaseException | None = None
        self.finished: float | None = None

    def schedule(self) -> list[tuple[float, str, Callable[[FaultRecord], None]]]:
        """(offset from the load's start, name, action): the first at 12% of the load,
        then evenly spaced, leaving the last stretch for steady state again."""
        actions: list[tuple[str, Callable[[FaultRecord], None]]] = [
            ("kill -9 h1", self.kill9),
            ("SIGTERM h2", self.sigterm),
            ("restart Redis", self.redis_restart),
            ("restart PostgreSQL", self.pg_restart),
            ("S3 unreachable", self.s3_cut),
            ("h3 off the network", self.net_cut),
        ]
        if self.only:
            actions = [(n, a) for n, a in actions if any(o in n.lower() for o in self.only)]
        start, end = 0.12 * self.plan.load_s, 0.9 * self.plan.load_s
        slot = (end - start) / len(actions)
        return [(start + i * slot, name, act) for i, (name, act) in enumerate(actions)]

    def run(self, load_began: float, stop: threading.Event) -> None:
        after = load_began  # no fault starts before the fleet is back from the last one
        try:
            for offset, name, act in self.schedule():
                due = max(load_began + offset, after + self.GAP_S)
                if stop.wait(max(0.0, due - time.monotonic())):
                    return
                record = FaultRecord(name, "", time.monotonic())
                self.records.append(record)
                log(f"fault: {name}")
                act(record)
                record.restored = record.restored or time.monotonic()
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not stop.is_set():
                    if self.fleet.fleet_ready():
                        record.fleet_back = time.monotonic()
                        break
                    time.sleep(0.25)
                if record.fleet_back:
                    back = f"fleet ready {record.fleet_back - record.restored:.1f} s after"
                elif stop.is_set():
                    back = "the run is stopping: readiness not waited for"
                else:
                    back = "fleet NOT ready again within 120 s"
                log(f"  {name}: restored; {back}")
                after = record.fleet_back or time.monotonic()
        except BaseException as exc:  # reported by the main thread, which ends the run
            self.error = exc
            log(f"fault thread failed: {exc!r}")
        finally:
            self.finished = time.monotonic()

    def kill9(self, record: FaultRecord) -> None:
        host = self.fleet.hosts[0]
        record.what = "SIGKILL to the server and both workers of h1, restarted 2 s later"
        host.kill9()
        time.sleep(2)
        host.start()
        record.restored = time.monotonic()

    def sigterm(self, record: FaultRecord) -> None:
        host = self.fleet.hosts[1]
        took = host.sigterm(wait_s=self.plan.image_deadline_s + 60)
        record.what = "SIGTERM to h2's server (graceful drain), restarted once it exited"
        record.note = f"exited {took:.1f} s after SIGTERM"
        host.start()
        record.restored = time.monotonic()

    def redis_restart(self, record: FaultRecord) -> None:
        redis = self.fleet.redis
        assert redis is not None
        record.what = f"redis-server stopped, started {self.plan.redis_down_s:g} s later (empty)"
        redis.stop()
        time.sleep(self.plan.redis_down_s)
        redis.start()
        record.restored = time.monotonic()

    def pg_restart(self, record: FaultRecord) -> None:
        pg = self.fleet.pg
        assert pg is not None
        record.what = (
            f"PostgreSQL stopped (`pg_ctl stop -m fast`: every connection closed), "
            f"started {self.plan.pg_down_s:g} s later"
        )
        pg.stop()
        time.sleep(self.plan.pg_down_s)
        pg.start()
        record.restored = time.monotonic()

    def s3_cut(self, record: FaultRecord) -> None:
        proxy = self.fleet.s3_proxy
        assert proxy is not None
        record.what = f"S3 proxy closed (connections reset, refused) for {self.plan.s3_cut_s:g} s"
        proxy.cut()
        time.sleep(self.plan.s3_cut_s)
        proxy.restore()
        record.restored = time.monotonic()

    def net_cut(self, record: FaultRecord) -> None:
        net = self.fleet.net
        assert net is not None
        record.what = f"h3's veth set down for {self.plan.net_cut_s:g} s (packets dropped)"
        net.cut(2)
        time.sleep(self.plan.net_cut_s)
        net.mend(2)
        record.restored = time.monotonic()


# --------------------------------------------------------------------------- report


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def window_stats(samples: list[Sample]) -> dict[str, Any]:
    images = [s.ended - s.started for s in samples if s.kind == "image" and s.ok]
    light = [s.ended - s.started for s in samples if s.kind not in GENERATION_KINDS and s.ok]
    return {
        "requests": len(samples),
        "errors": sum(1 for s in samples if not s.ok),
        "errors_by_kind": dict(Counter(s.error for s in samples if s.error)),
        "image_p50_s": pct(images, 0.5),
        "image_p99_s": pct(images, 0.99),
        "other_p50_ms": None if not light else 1000 * (pct(light, 0.5) or 0),
        "other_p99_ms": None if not light else 1000 * (pct(light, 0.99) or 0),
    }


def windows(
    samples: list[Sample], faults: list[FaultRecord], load_began: float
) -> dict[str, dict[str, Any]]:
    """By when each request ended (when its error, if any, was seen). During a fault: its
    start to the fleet being ready again plus 5 s (or the next fault's start). Steady
    state: every request that ended outside all of them."""
    spans = []
    for i, f in enumerate(faults):
        end = (f.fleet_back or f.restored or f.began) + 5
        if i + 1 < len(faults):
            end = min(end, faults[i + 1].began)
        spans.append((f.name, f.began, end))
    out = {}
    steady = [s for s in samples if not any(b <= s.ended < e for _, b, e in spans)]
    out["steady state"] = window_stats(steady)
    for name, began, end in spans:
        out[name] = window_stats([s for s in samples if began <= s.ended < end])
    return out


async def fetch_all(urls: list[str]) -> list[tuple[str, str]]:
    """Each URL fetched once; the failures as (url, why)."""
    failures: list[tuple[str, str]] = []
    gate = asyncio.Semaphore(16)

    async def one(http: httpx.AsyncClient, url: str) -> None:
        async with gate:
            try:
                reply = await http.get(url)
                if reply.status_code != 200 or not reply.content:
                    failures.append((url, f"status {reply.status_code}"))
            except httpx.HTTPError as exc:
                failures.append((url, repr(exc)))

    async with httpx.AsyncClient(timeout=30) as http:
        await asyncio.gather(*(one(http, u) for u in urls))
    return failures


def settle(fleet: Fleet, plan: Plan) -> dict[str, Any]:
    """Wait until no hold can still be legitimately open, and no webhook is pending."""
    pg = fleet.pg
    assert pg is not None
    limit = time.monotonic() + plan.video_deadline_s + plan.hold_grace_s + 4 * plan.reconcile_s + 60
    while time.monotonic() < limit:
        row = pg.rows(
            "SELECT count(*) AS open, "
            f"extract(epoch FROM max(deadline_at) + interval '{plan.hold_grace_s} seconds'"
            " - now()) AS left_s FROM generations WHERE status = 'processing'",
            PG_DATABASE,
        )[0]
        if not row["open"]:
            break
        left = row["left_s"] or 0
        if left < -3 * plan.reconcile_s:
            break  # past deadline + grace and several reconcile rounds: judged below
        log(f"settling: {row['open']} holds open, the last due in {max(left, 0):.0f} s")
        time.sleep(3)
    # Events go through an outbox (docs/webhooks.md): a closed generation still marked
    # `events_pending` is recorded by the sweeper once it has been closed for 30 s (a hold
    # the reconciler released, a failure after the settle), then delivered like the rest.
    limit = time.monotonic() + 120
    pending = outbox = 0
    while time.monotonic() < limit:
        pending = int(
            pg.psql("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'", PG_DATABASE)
            or 0
        )
        outbox = int(
            pg.psql(
                "SELECT count(*) FROM generations WHERE events_pending IS NOT NULL"
                " AND status <> 'processing'",
                PG_DATABASE,
            )
            or 0
        )
        if not pending and not outbox:
            break
        log(f"settling: {pending} webhook deliveries pending, {outbox} events not recorded yet")
        time.sleep(3)
    return {"webhooks_pending_after_settle": pending, "events_unrecorded_after_settle": outbox}


def books(fleet: Fleet, plan: Plan, samples: list[Sample]) -> dict[str, Any]:
    pg = fleet.pg
    assert pg is not None
    db = PG_DATABASE
    out: dict[str, Any] = {}
    out["balance_not_ledger_sum"] = pg.rows(
        "SELECT a.id, a.balance, coalesce(sum(l.amount), 0) AS ledger FROM accounts a "
        "LEFT JOIN ledger_entries l ON l.account_id = a.id GROUP BY a.id, a.balance "
        "HAVING a.balance <> coalesce(sum(l.amount), 0)",
        db,
    )
    out["negative_balances"] = pg.rows("SELECT id, balance FROM accounts WHERE balance < 0", db)
    out["holds_past_deadline_and_grace"] = pg.rows(
        "SELECT id, model, created_at, deadline_at FROM generations WHERE status = "
        f"'processing' AND deadline_at + interval '{plan.hold_grace_s} seconds' < now()",
        db,
    )
    out["generation_money_wrong"] = pg.rows(
        "SELECT g.id, g.status, g.held, g.cost, sum(l.amount) AS net, "
        "count(*) FILTER (WHERE l.kind = 'hold') AS holds, "
        "count(*) FILTER (WHERE l.kind = 'release') AS releases "
        "FROM generations g JOIN ledger_entries l ON l.generation_id = g.id "
        "GROUP BY g.id, g.status, g.held, g.cost "
        "HAVING count(*) FILTER (WHERE l.kind = 'hold') > 1 "
        "OR count(*) FILTER (WHERE l.kind = 'release') > 1 "
        "OR (g.status = 'success' AND -sum(l.amount) <> g.cost) "
        "OR (g.status = 'error' AND sum(l.amount) <> 0)",
        db,
    )
    statuses = {r["id"]: r["status"] for r in pg.rows("SELECT id, status FROM generations", db)}
    ok_generations = [s for s in samples if s.kind in CHARGED_KINDS and s.ok]
    out["answered_200_not_charged"] = [
        s.generation_id
        for s in ok_generations
        if s.generation_id is None or statuses.get(s.generation_id) != "success"
    ]
    by_key: dict[str, set[str]] = {}
    for s in ok_generations:
        if s.idempotency_key and s.generation_id:
            by_key.setdefault(s.idempotency_key, set()).add(s.generation_id)
    out["idempotency_key_two_generations"] = [k for k, ids in by_key.items() if len(ids) > 1]
    urls = sorted({u for s in ok_generations for u in s.urls})
    out["outputs_checked"] = len(urls)
    out["outputs_missing"] = [{"url": u, "why": why} for u, why in asyncio.run(fetch_all(urls))]
    out["successes_without_output_url"] = [s.generation_id for s in ok_generations if not s.urls]
    received = httpx.get(f"{fleet.hooks_url}/_received", timeout=30).json()
    got_ids = {r.get("webhook_id") for r in received}
    got_generations = {r.get("generation_id") for r in received}
    deliveries = pg.rows(
        "SELECT id, generation_id, status, attempts, last_error FROM webhook_deliveries", db
    )
    out["webhooks_received"] = len(received)
    out["webhook_deliveries"] = len(deliveries)
    out["webhooks_not_delivered"] = [d for d in deliveries if d["id"] not in got_ids]
    finished = pg.rows(
        "SELECT id, status, model, left(error, 160) AS error, created_at, finished_at "
        "FROM generations WHERE status IN ('success', 'error')",
        db,
    )
    out["finished_generations"] = len(finished)
    out["generations_without_webhook"] = [g for g in finished if g["id"] not in got_generations]
    out["malformed_webhooks"] = [r for r in received if "malformed" in r]
    return out


BOOK_CHECKS = (
    ("balance equals ledger sum (every account)", "balance_not_ledger_sum"),
    ("no negative balance", "negative_balances"),
    ("no hold past deadline + grace", "holds_past_deadline_and_grace"),
    ("each generation held once, released once, charged its cost", "generation_money_wrong"),
    ("every 200 generation recorded as a success", "answered_200_not_charged"),
    ("an Idempotency-Key never made two generations", "idempotency_key_two_generations"),
    ("every output URL of a 200 fetches", "outputs_missing"),
    ("every 200 generation has an output URL", "successes_without_output_url"),
    ("every webhook delivery received", "webhooks_not_delivered"),
    ("every finished generation's webhook received", "generations_without_webhook"),
    ("no malformed webhook", "malformed_webhooks"),
)


def fmt(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def render(report: dict[str, Any]) -> str:
    lines = [
        f"## Fleet soak — {report['date']} ({report['mode']})",
        "",
        f"{report['hosts']} hosts × `serve --workers 2` behind HAProxy (check "
        f"`{report['check_path']}`), {report['clients']} clients, {report['accounts']} "
        f"accounts, {report['load_s']:.0f} s of load, vendor latency "
        f"{report['latency']} with {report['vendor_fail_rate']:.0%} failures.",
        "",
        f"Requests: **{report['requests']}** sent, **{report['ok']}** answered "
        f"successfully ({report['generations_ok']} generations). Vendor calls: "
        f"{report['vendor_calls']}. Peak PostgreSQL connections (sampled every 10 s): "
        f"{report['peak_postgres_connections']}.",
        "",
        "### Client-visible errors",
        "",
        "| status and code | count | kinds |",
        "|---|---:|---|",
    ]
    for label, info in report["errors"].items():
        lines.append(f"| {label} | {info['count']} | {', '.join(info['kinds'])} |")
    if not report["errors"]:
        lines.append("| none | 0 | |")
    lines += [
        "",
        "### Latency by window",
        "",
        "| window | requests | errors | image p50 | image p99 | other p50 | other p99 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, w in report["windows"].items():
        lines.append(
            f"| {name} | {w['requests']} | {w['errors']} | {fmt(w['image_p50_s'], ' s')} | "
            f"{fmt(w['image_p99_s'], ' s')} | {fmt(w['other_p50_ms'], ' ms', 0)} | "
            f"{fmt(w['other_p99_ms'], ' ms', 0)} |"
        )
    lines += ["", "Errors by window (402 and 429 are the accounts' own limits):", ""]
    for name, w in report["windows"].items():
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(w["errors_by_kind"].items()))
        lines.append(f"- {name}: {kinds or 'none'}")
    lines += [
        "",
        "### Faults and recovery",
        "",
        "| fault | what | fleet ready after restore | last client error after restore | note |",
        "|---|---|---:|---:|---|",
    ]
    for f in report["faults"]:
        lines.append(
            f"| {f['name']} | {f['what']} | {fmt(f['fleet_ready_after_s'], ' s', 1)} | "
            f"{fmt(f['last_error_after_s'], ' s', 1)} | {f['note']} |"
        )
    lines += ["", "### The books", "", "| check | result |", "|---|---|"]
    for title, key in BOOK_CHECKS:
        bad = report["books"][key]
        lines.append(f"| {title} | {'ok' if not bad else f'**{len(bad)} FAILED**'} |")
    b = report["books"]
    lines += [
        "",
        f"Output URLs fetched: {b['outputs_checked']}; webhook deliveries "
        f"{b['webhook_deliveries']}, received {b['webhooks_received']}, for "
        f"{b['finished_generations']} finished generations.",
        "",
        f"**Verdict: {'PASS' if report['pass'] else 'FAIL'}**"
        + ("" if report["pass"] else f" — {'; '.join(report['why_failed'])}"),
    ]
    return "\n".join(lines)


def attributable(error: str) -> bool:
    """Could this client error come from a fault? Not a 402 or 429 (the account's own
    limits), nor the vendors' deliberate 2 % of 503s (`upstream_unavailable`)."""
    return not error.startswith(("402", "429")) and "upstream_unavailable" not in error


def build_report(
    plan: Plan,
    fleet: Fleet,
    clients: Clients,
    faults: Faults,
    load_began: float,
    load_s: float,
    the_books: dict[str, Any],
    extra: dict[str, Any],
) -> dict[str, Any]:
    samples = clients.samples
    errors: dict[str, dict[str, Any]] = {}
    for s in samples:
        if s.error:
            e = errors.setdefault(s.error, {"count": 0, "kinds": [], "example": s.detail})
            e["count"] += 1
            if s.kind not in e["kinds"]:
                e["kinds"].append(s.kind)
    errors = dict(sorted(errors.items(), key=lambda kv: -kv[1]["count"]))
    fault_rows = []
    records = faults.records
    for i, f in enumerate(records):
        next_began = records[i + 1].began if i + 1 < len(records) else float("inf")
        restored = f.restored or f.began
        late = [
            s.ended
            for s in samples
            if s.error
            and f.began <= s.started
            and s.ended < next_began
            and attributable(s.error)
            and s.ended > restored
        ]
        fault_rows.append(
            {
                "name": f.name,
                "what": f.what,
                "note": f.note,
                "at_s": f.began - load_began,
                "at_utc": f.began_utc,
                "fleet_ready_after_s": None if f.fleet_back is None else f.fleet_back - restored,
                "last_error_after_s": (max(late) - restored) if late else 0.0,
            }
        )
    vendor = httpx.get(f"{fleet.hooks_url}/_stats", timeout=10).json()
    report: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "--quick" if plan.quick else f"--minutes {plan.load_s / 60:g}",
        "hosts": len(fleet.hosts),
        "check_path": fleet.check_path,
        "clients": plan.clients,
        "accounts": plan.accounts,
        "load_s": load_s,
        "latency": f"{1 * plan.latency_scale:g}–{20 * plan.latency_scale:g} s",
        "vendor_fail_rate": 0.02,
        "requests": len(samples),
        "ok": sum(1 for s in samples if s.ok),
        "generations_ok": sum(1 for s in samples if s.ok and s.kind in CHARGED_KINDS),
        "jobs": clients.jobs,
        "by_kind": dict(Counter(s.kind for s in samples)),
        "vendor_calls": vendor,
        "peak_postgres_connections": fleet.peak_connections,
        "errors": errors,
        "windows": windows(samples, records, load_began),
        "faults": fault_rows,
        "books": the_books,
        **extra,
    }
    why = []
    if any(label.startswith("500") for label in errors):
        why.append("a client saw a 500")
    for title, key in BOOK_CHECKS:
        if the_books[key]:
            why.append(f"{title}: {len(the_books[key])} failed")
    if faults.error is not None:
        why.append(f"a fault could not be run: {faults.error!r}")
    planned = len(faults.schedule())
    if len(records) < planned:
        why.append(f"only {len(records)} of {planned} faults ran")
    report["why_failed"] = why
    report["pass"] = not why
    return report


# --------------------------------------------------------------------------- main


TAIL_S = 12.0


def topup(fleet: Fleet, emails: list[str]) -> None:
    """Top the accounts up (the long run). A top-up that lands in a fault (PostgreSQL
    restarting) fails like any client's request: it is skipped, said, and tried again at
    the next top-up, not a reason to stop the run."""
    for email in emails:
        try:
            fleet.cli("credits", "grant", email, "0.50", "--reason", "soak top-up", "--force")
        except RuntimeError as exc:
            log(f"top-up of {email} skipped: {str(exc).splitlines()[-1][:200]}")


async def drive(fleet: Fleet, plan: Plan, clients: Clients, faults: Faults) -> tuple[float, float]:
    stop = threading.Event()
    load_task = asyncio.create_task(clients.run())
    began = time.monotonic()
    fault_thread = threading.Thread(target=faults.run, args=(began, stop), daemon=True)
    fault_thread.start()
    last_topup = began
    last_report = began
    try:
        # The planned length, and while faults still run, until TAIL_S after the last.
        while time.monotonic() - began < plan.load_s or (
            (faults.finished is None or time.monotonic() < faults.finished + TAIL_S)
            and time.monotonic() - began < 3 * plan.load_s
        ):
            await asyncio.sleep(1)
            if load_task.done():
                load_task.result()  # a crashed client task ends the run with its error
            if faults.error is not None:
                raise RuntimeError(f"fault thread failed: {faults.error!r}")
            now = time.monotonic()
            if now - last_report >= 10:
                last_report = now
                conns = await asyncio.to_thread(fleet.connections)
                if conns is not None:
                    fleet.peak_connections = max(fleet.peak_connections, conns)
                recent = [s for s in clients.samples if s.ended > now - 10]
                errs = Counter(s.error for s in recent if s.error)
                log(
                    f"t={now - began:4.0f}s  {len(clients.samples)} requests, "
                    f"{len(recent) / 10:.1f}/s, in flight {clients.in_flight}, "
                    f"PostgreSQL connections {conns if conns is not None else 'n/a'}, "
                    f"errors last 10 s: {dict(errs) or 'none'}"
                )
            if not plan.quick and now - last_topup >= 60 and clients.broke:
                # Longer runs: top the broke accounts up a little, so they go on living
                # near their limit instead of sitting at zero for the rest of the run.
                last_topup = now
                broke, clients.broke = sorted(set(clients.broke)), []
                await asyncio.to_thread(topup, fleet, broke)
                log(f"topped up {len(broke)} accounts by $0.50")
    finally:
        clients.stopping.set()
        load_s = time.monotonic() - began
        log("load stopped; waiting for requests in flight")
        stop.set()
        try:
            await asyncio.wait_for(load_task, plan.video_deadline_s + 60)
        except TimeoutError:
            log("requests still in flight after the deadline; abandoning them")
        await asyncio.to_thread(fault_thread.join, 300)
    return began, load_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--minutes", type=float, help="minutes of load (faults spread over it)")
    mode.add_argument("--quick", action="store_true", help="about two minutes, compressed faults")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--accounts", type=int, default=25)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument(
        "--faults",
        help="only the faults whose names contain one of these words, comma-separated "
        "(kill, sigterm, redis, postgresql, s3, network); the verdict then needs only those",
    )
    parser.add_argument(
        "--check",
        default="auto",
        help="HAProxy's health check path (default: /ready, or /health where /ready is 404)",
    )
    parser.add_argument("--json", type=Path, help="where to write the JSON report")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("the soak makes network namespaces: run it as root")
    plan = Plan.make(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    json_path = args.json or results / f"soak-{stamp}.json"
    logs = Path(tempfile.mkdtemp(prefix=f"{TAG}-", dir=results))
    log(f"run {TAG}: logs in {logs}")
    fleet = Fleet(plan, logs)
    fleet.check_path = args.check

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # the same clean-up as Ctrl-C

    signal.signal(signal.SIGTERM, on_term)
    try:
        fleet.up()
        log(f"creating {plan.accounts} accounts with keys, credit and a webhook endpoint")
        accounts = fleet.make_accounts(plan.accounts, args.seed)
        assert fleet.haproxy is not None
        clients = Clients(
            fleet.haproxy.url, accounts, plan.clients, args.seed, plan.video_deadline_s + 60
        )
        clients.poll_s = plan.poll_s
        probe = httpx.get(
            f"{fleet.haproxy.url}/v1/jobs",
            headers={"Authorization": f"Bearer {accounts[0].key}"},
            timeout=30,
        )
        clients.jobs = probe.status_code == 200
        log(
            "asynchronous jobs (/v1/jobs): "
            + ("in the mix" if clients.jobs else f"not offered ({probe.status_code}), left out")
        )
        faults = Faults(fleet, plan, clients, args.faults.split(",") if args.faults else None)
        log(
            f"load: {plan.clients} clients for {plan.load_s:.0f} s; faults at "
            + ", ".join(f"{o:.0f} s {n}" for o, n, _ in faults.schedule())
        )
        began, load_s = asyncio.run(drive(fleet, plan, clients, faults))
        log("settling: holds and webhooks")
        extra = settle(fleet, plan)
        log("checking the books")
        the_books = books(fleet, plan, clients.samples)
        report = build_report(plan, fleet, clients, faults, began, load_s, the_books, extra)
        report["logs"] = str(logs)
        json_path.write_text(json.dumps(report, indent=2, default=str))
        print(render(report))
        log(f"JSON report: {json_path}")
        gateway_errors = run(
            "grep", "-l", "Traceback", *map(str, logs.glob("gateway-*.log")), check=False
        )
        if gateway_errors.stdout.strip():
            log(f"tracebacks in: {gateway_errors.stdout.split()}")
        return 0 if report["pass"] else 1
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    except Exception as exc:
        log(f"the soak failed: {exc}")
        import traceback

        traceback.print_exc()
        return 1
    finally:
        # Nothing may outlive the run, even on Ctrl-C: a second Ctrl-C during clean-up is
        # ignored so the namespaces and databases still go.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        fleet.down()
        log(f"logs (gateway, HAProxy, vendors, Redis, moto) kept in {logs}")


if __name__ == "__main__":
    sys.exit(main())
