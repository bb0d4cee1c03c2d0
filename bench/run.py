"""Load-test a real gateway process against bench/fake_upstream.py with wrk.

    .venv/bin/python bench/run.py --db sqlite
    .venv/bin/python bench/run.py --db postgres --scenarios overhead,inflight
    .venv/bin/python bench/run.py --quick          # 3 s per scenario: checks the harness

See bench/README.md for what each scenario measures and the bars it is held to.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import httpx

import failover
from load import Load, LoadResult, wrk_binary, wrk_ready
from phases.summary import summarise as summarise_phases
from report import Row, render
from services import (
    BENCH_DIR,
    PG_DATABASE,
    FakeUpstream,
    Gateway,
    UpstreamShape,
    drop_database,
    free_port,
    prepare_database,
)
from settle import EMAIL, PRICE_USD, check_charges, quiesce, settled_balance

BIG_B64_BODY = json.dumps(
    {
        "model": "openai/dall-e-2",
        "prompt": "a lighthouse at dusk",
        "size": "1024x1024",
        "response_format": "b64_json",
    }
)
SCENARIOS = ("overhead", "keys1000", "slow", "big", "big64", "inflight", "failover")
# The many-keys scenario: each request names one of this many distinct API keys.
MANY_KEYS = 1000
SMALL = 1024
BIG = 1_400_000
# Enough for every scenario even against a gateway answering ~10k req/s.
CREDIT_USD = Decimal(100_000)
Bar = Callable[[LoadResult], bool]


@dataclass(frozen=True)
class Scenario:
    group: str
    label: str
    connections: int
    shape: UpstreamShape
    duration_s: float
    warmup_s: float = 0.0
    budget: int | None = None
    bar: Bar | None = None
    bar_text: str = ""
    body: str | None = None  # wrk's request body; None = post.lua's dall-e-2 default
    many_keys: bool = False  # each request carries one of MANY_KEYS keys (post.lua)
    # Failover: a budgeted run after the measurement checks every request is charged once.
    charge_check: bool = False
    baseline: str | None = None  # label of the run whose req/s this one must keep


def plan(args: argparse.Namespace) -> list[Scenario]:
    quick: bool = args.quick
    dur = args.duration or (3.0 if quick else 10.0)
    # All 256 clients of the slow scenario move in lockstep, 0.5 s per round, and wrk
    # drops the round still in flight when it stops: 10 s could never show more than
    # 19 of 20 rounds (486 req/s), so it runs longer to make that loss small.
    slow_dur = args.duration or (3.0 if quick else 30.0)
    warm = 1.0 if quick else 2.0
    fast = UpstreamShape(delay_ms=0, answer_bytes=SMALL)
    # Issue #12's targets for one worker on one core: PostgreSQL >= 1,200 req/s with
    # p99 <= 50 ms at 16 connections, SQLite (one writer) >= 800.
    overhead_bar, overhead_text = (
        (_overhead_bar_postgres, "≥1200/s p99≤50")
        if args.db == "postgres"
        else (_overhead_bar_sqlite, "≥800/s")
    )
    plans = [
        Scenario(
            group="overhead",
            label="overhead (0 ms)",
            connections=c,
            shape=fast,
            duration_s=dur,
            warmup_s=warm,
            bar=overhead_bar if c == 16 else None,
            bar_text=overhead_text if c == 16 else "",
        )
        for c in args.overhead_concurrency
    ]
    plans.append(
        Scenario(
            group="keys1000",
            label=f"{MANY_KEYS:,} keys (0 ms)",
            connections=16,
            shape=fast,
            duration_s=dur,
            warmup_s=warm,
            bar=overhead_bar,
            bar_text=overhead_text,
            many_keys=True,
        )
    )
    plans.append(
        Scenario(
            group="slow",
            label="slow upstream (500 ms)",
            connections=256,
            shape=UpstreamShape(delay_ms=500, answer_bytes=SMALL),
            duration_s=slow_dur,
            warmup_s=warm,
            bar=lambda r: r.ok_per_s >= 460 and r.p99_ms <= 700,
            bar_text="≥460/s p99≤700",
        )
    )
    # 1.4 MB images as `url` (decoded and stored), and as `b64_json` (issue #12's own case:
    # decoded, stored, encoded again, so the 1.4 MB travel both ways). None = post.lua's
    # default body, which asks for `url`.
    big_bodies = {
        "big": ("big answers (1.4 MB)", None),
        "big64": ("big answers (1.4 MB, b64_json)", BIG_B64_BODY),
    }
    for group, (label, body) in big_bodies.items():
        plans.append(
            Scenario(
                group=group,
                label=label,
                connections=16,
                shape=UpstreamShape(delay_ms=0, answer_bytes=BIG),
                duration_s=dur,
                warmup_s=warm,
                bar=lambda r: r.ok_per_s >= 110,
                bar_text="≥110/s",
                body=body,
            )
        )
    # Every connection sends `budget` requests and then idles, and the run lasts long
    # enough for all of them to finish: nothing is cut off, so each 200 must show up
    # in the balance exactly once.
    delay_s, budget, slack_s = (1.0, 1, 2.0) if quick else (10.0, 2, 10.0)
    plans.append(
        Scenario(
            group="inflight",
            label=f"in-flight ({delay_s:g} s upstream)",
            connections=args.inflight_connections,
            shape=UpstreamShape(delay_ms=delay_s * 1000, answer_bytes=SMALL),
            duration_s=budget * delay_s + slack_s,
            budget=budget,
        )
    )
    # Both failover runs have the fake read every body for its model name, so they
    # differ only in the 503s.
    for label, rate in ((failover.BASELINE, 0.0), ("failover-20", failover.RATE)):
        plans.append(
            Scenario(
                group="failover",
                label=label,
                connections=failover.CONNECTIONS,
                shape=UpstreamShape(
                    delay_ms=0, answer_bytes=SMALL, fail_model=failover.FLAKY, fail_rate=rate
                ),
                duration_s=dur,
                warmup_s=warm,
                body=failover.BODY,
                charge_check=True,
                baseline=failover.BASELINE if rate else None,
            )
        )
    chosen = set(args.scenarios)
    return [s for s in plans if s.group in chosen]


def _overhead_bar_postgres(r: LoadResult) -> bool:
    return r.ok_per_s >= 1200 and r.p99_ms <= 50


def _overhead_bar_sqlite(r: LoadResult) -> bool:
    return r.ok_per_s >= 800


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        print(f"warning: open-file limit {target} < {needed}; raise the hard limit (ulimit -Hn)")


def preflight(gateway: Gateway, key: str, models: list[str]) -> None:
    for model in models:
        body = {
            "model": model,
            "prompt": "preflight",
            "size": "1024x1024",
            "response_format": "url",
        }
        reply = httpx.post(
            f"{gateway.url}/v1/openai/images/generations",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=60,
        )
        if reply.status_code != 200:
            raise RuntimeError(
                f"a single generation of {model} failed: {reply.status_code} {reply.text[:500]}"
            )
        print(f"preflight {model} ok: {reply.text[:200]}")


def run_scenario(
    s: Scenario,
    args: argparse.Namespace,
    gateway: Gateway,
    upstream: FakeUpstream,
    key: str,
    done: list[Row],
    keys_file: Path | None = None,
) -> Row:
    upstream.ensure(s.shape)
    gateway.check_alive()
    drain_s = 120 + 2 * s.shape.delay_ms / 1000
    keys = keys_file if s.many_keys else None
    if s.warmup_s:
        warmup = Load(
            gateway.url,
            key,
            s.connections,
            s.warmup_s,
            threads=args.wrk_threads,
            body=s.body,
            keys_file=keys,
            cpus=args.load_cpus,
        )
        warmup.run()
        quiesce(upstream, drain_s)
    before_usd = Decimal(0)
    if s.budget is not None:
        before_usd = settled_balance(gateway, upstream, drain_s)
    stats_before = upstream.stats()
    print(f"running {s.label} × {s.connections} for {s.duration_s:g} s …", flush=True)
    load = Load(
        gateway.url,
        key,
        s.connections,
        s.duration_s,
        threads=args.wrk_threads,
        body=s.body,
        budget=s.budget,
        keys_file=keys,
        cpus=args.load_cpus,
    )
    cpu_before = gateway.cpu_seconds()
    result = load.run()
    cpu_after = gateway.cpu_seconds()
    quiesce(upstream, drain_s)
    row = Row(s.label, args.db, s.connections, result)
    if cpu_before is not None and cpu_after is not None:
        row.gateway_cpu_s = cpu_after - cpu_before
    if s.bar is not None:
        row.verdict = ("PASS " if s.bar(result) else "FAIL ") + s.bar_text
    if s.budget is not None:
        after_usd = settled_balance(gateway, upstream, drain_s)
        sent = s.budget * s.connections
        problems, note = check_charges(sent, s.budget, result, before_usd - after_usd)
        row.verdict = ("FAIL: " + "; ".join(problems)) if problems else "PASS charged once"
        row.notes += [note, *problems]
    row.notes.append(
        f"upstream during the run: {failover.int_delta(stats_before, upstream.stats())}"
    )
    if s.charge_check:
        bench = failover.Bench(
            gateway, upstream, key, s.body, args.wrk_threads, args.quick, args.load_cpus
        )
        failover.judge(bench, row, s.shape.fail_rate, s.baseline, done)
    print(row.line(), flush=True)
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--quick", action="store_true", help="3 s per scenario")
    parser.add_argument(
        "--scenarios",
        type=_names,
        default=list(SCENARIOS),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument("--overhead-concurrency", type=_ints, default=[1, 16, 64, 256])
    parser.add_argument("--inflight-connections", type=int, default=2000)
    parser.add_argument("--duration", type=float, help="seconds per scenario (not in-flight)")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the gateway and its CLI (repeatable)",
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the temp DATA_DIR")
    parser.add_argument(
        "--phases",
        action="store_true",
        help="probe where each generation's wall time goes inside the gateway and add the "
        "table to the report (bench/phases; the probe costs CPU: one scenario, not for req/s)",
    )
    parser.add_argument(
        "--workers", default="1", help="gateway worker processes: a number or 'auto'"
    )
    parser.add_argument(
        "--pin",
        default="0:1",
        metavar="GATEWAY_CPUS:LOAD_CPUS",
        help="taskset CPU lists for the gateway and for the fake upstream and wrk "
        "(default 0:1, issue #12's setup; 'none' leaves scheduling to the kernel)",
    )
    args = parser.parse_args(argv)
    if args.pin == "none":
        args.gateway_cpus = args.load_cpus = None
    else:
        gateway_cpus, colon, load_cpus = args.pin.partition(":")
        if not colon or not gateway_cpus or not load_cpus:
            parser.error(f"--pin wants GATEWAY_CPUS:LOAD_CPUS or none, got {args.pin!r}")
        args.gateway_cpus, args.load_cpus = gateway_cpus, load_cpus
    if args.workers != "auto" and not (args.workers.isdigit() and int(args.workers) >= 1):
        parser.error(f"--workers wants a positive number or 'auto', got {args.workers!r}")
    for item in args.gateway_env:
        if "=" not in item:
            parser.error(f"--gateway-env wants NAME=VALUE, got {item!r}")
    return args


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {','.join(SCENARIOS)}")
    return names


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("positive integers, comma-separated")
    return values


def gateway_environment(
    db: str,
    data_dir: Path,
    port: int,
    up: str,
    *,
    extra: Sequence[str] = (),
    phases: bool = False,
    failover_catalog: bool = False,
    database: str = PG_DATABASE,
) -> dict[str, str]:
    """The gateway's environment, with a fresh `database` for PostgreSQL: `extra` holds
    NAME=VALUE settings (`--gateway-env`), `phases` adds the probe, `failover_catalog`
    the failover scenarios' catalog entry."""
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    database_url = prepare_database(db, data_dir, database)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(
        DATA_DIR=str(data_dir),
        OPENAI_BASE_URL=up,
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        # Per-request log lines cost the single worker CPU that clients would not pay for.
        LOG_LEVEL="WARNING",
        # One client IP and one account drive all the load: the per-IP and per-account
        # limiters (20/s, 100/s) would turn it into 429s. Bans and free-tier caps stay on.
        RATE_LIMITS_ENABLED="false",
    )
    for item in extra:
        name, _, value = item.partition("=")
        env[name] = value
    if phases:
        probe = str(BENCH_DIR / "phases")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (probe, env.get("PYTHONPATH", "")) if p)
        env["IR_PHASES_OUT"] = str(data_dir / "phases.json")
    if failover_catalog:
        # Last, so that its bench/failover entry wins over any operator file passed in.
        ours = str(failover.write_catalog(data_dir, PRICE_USD))
        env["CATALOG_PATHS"] = ",".join(p for p in (env.get("CATALOG_PATHS", ""), ours) if p)
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not wrk_ready():
        return 2
    scenarios = plan(args)
    raise_open_files(max(s.connections for s in scenarios) * 3 + 256)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = BENCH_DIR / "results"
    logs = results / f"{args.db}-{stamp}.logs"
    logs.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="ir-bench-"))
    openai_key = f"sk-bench-{stamp}"
    upstream = FakeUpstream(free_port(), openai_key, logs, cpus=args.load_cpus)
    gateway_port = free_port()
    env = gateway_environment(
        args.db,
        data_dir,
        gateway_port,
        upstream.base_url,
        extra=args.gateway_env,
        phases=args.phases,
        failover_catalog="failover" in args.scenarios,
    )
    env["OPENAI_API_KEY"] = openai_key
    gateway = Gateway(gateway_port, env, logs, workers=args.workers, cpus=args.gateway_cpus)
    rows: list[Row] = []
    aborted: str | None = None
    try:
        upstream.ensure(scenarios[0].shape)
        gateway.start()
        key = gateway.create_account(EMAIL, CREDIT_USD)
        models = ["openai/dall-e-2"]
        if "failover" in args.scenarios:
            models.append(failover.MODEL)
        preflight(gateway, key, models)
        keys_file = None
        if any(s.many_keys for s in scenarios):
            keys_file = data_dir / "bench-keys.txt"
            keys_file.write_text("\n".join(gateway.create_keys(EMAIL, MANY_KEYS)) + "\n")
        for scenario in scenarios:
            rows.append(run_scenario(scenario, args, gateway, upstream, key, rows, keys_file))
    except RuntimeError as exc:
        # Keep what was measured so far; the message says why the rest is missing.
        aborted = str(exc)
        print(f"\nbenchmark aborted: {aborted}", file=sys.stderr)
    finally:
        gateway.stop()
        upstream.stop()
        phases_file = data_dir / "phases.json"
        phases_table = summarise_phases(phases_file) if phases_file.exists() else None
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
            drop_database(args.db)
    preamble = describe(args, data_dir)
    if aborted is not None:
        preamble.append(f"- **aborted**: {aborted.splitlines()[0]}")
    text = render(f"Image Router benchmark: {args.db}, {stamp}", preamble, rows)
    if phases_table is not None:
        text += "\n\n## Phases (wall time inside the gateway, probed)\n\n" + "\n".join(phases_table)
    elif args.phases:
        text += "\n\nThe phase probe wrote nothing (did the gateway stop cleanly?)."
    out = results / f"{args.db}-{stamp}.md"
    out.write_text(text + "\n")
    print("\n" + text)
    print(f"\nwritten to {out} (process logs in {logs})")
    failed = [r for r in rows if r.verdict.startswith("FAIL")]
    return 1 if failed or aborted is not None else 0


def describe(args: argparse.Namespace, data_dir: Path) -> list[str]:
    commit = subprocess.run(
        ["git", "-C", str(BENCH_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    wrk_version = subprocess.run(
        [wrk_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    lines = [
        f"- host: {platform.node()}, {platform.machine()}, {_cpus()} CPUs, "
        f"Python {platform.python_version()}, {' '.join(wrk_version[:2])}",
        f"- commit: {commit or 'none'}; gateway: {args.workers} worker(s); "
        f"wrk threads: {args.wrk_threads}",
        f"- pinned (taskset): gateway on CPU {args.gateway_cpus}, fake upstream and wrk on "
        f"CPU {args.load_cpus}; PostgreSQL unpinned"
        if args.gateway_cpus is not None
        else "- not pinned: gateway, fake upstream and wrk share every CPU",
        "- billing on; our rate limits off (RATE_LIMITS_ENABLED=false)",
        "- req/s counts 200 responses only; latencies are wrk's, over all responses",
    ]
    if args.quick:
        lines.append("- **quick run** (3 s per scenario): checks the harness, not the bars")
    if args.keep_data:
        lines.append(f"- DATA_DIR kept at {data_dir}")
        if args.db == "postgres":
            lines.append(f"- PostgreSQL database kept: {PG_DATABASE}")
    return lines


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
