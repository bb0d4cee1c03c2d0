"""Load-test a real gateway process against bench/fake_upstream.py with wrk.

    .venv/bin/python bench/run.py --db sqlite
    .venv/bin/python bench/run.py --db postgres --scenarios overhead,inflight
    .venv/bin/python bench/run.py --quick          # 3 s per scenario: checks the harness

See bench/README.md for what each scenario measures and the bars it is held to.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import httpx

from load import Load, LoadResult, WrkMissingError, wrk_binary
from report import Row, render
from services import (
    BENCH_DIR,
    FakeUpstream,
    Gateway,
    UpstreamShape,
    free_port,
    prepare_database,
)

SCENARIOS = ("overhead", "slow", "big", "inflight")
PRICE_USD = Decimal("0.016")  # openai/dall-e-2 at 1024x1024
EMAIL = "bench@example.com"
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


def plan(args: argparse.Namespace) -> list[Scenario]:
    quick: bool = args.quick
    dur = args.duration or (3.0 if quick else 10.0)
    # All 256 clients of the slow scenario move in lockstep, 0.5 s per round, and wrk
    # drops the round still in flight when it stops: 10 s could never show more than
    # 19 of 20 rounds (486 req/s), so it runs longer to make that loss small.
    slow_dur = args.duration or (3.0 if quick else 30.0)
    warm = 1.0 if quick else 2.0
    fast = UpstreamShape(delay_ms=0, answer_bytes=SMALL)
    plans = [
        Scenario(
            group="overhead",
            label="overhead (0 ms)",
            connections=c,
            shape=fast,
            duration_s=dur,
            warmup_s=warm,
            bar=_overhead_bar if c == 16 else None,
            bar_text="≥650/s p99<110" if c == 16 else "",
        )
        for c in args.overhead_concurrency
    ]
    plans.append(
        Scenario(
            group="slow",
            label="slow upstream (500 ms)",
            connections=256,
            shape=UpstreamShape(delay_ms=500, answer_bytes=SMALL),
            duration_s=slow_dur,
            warmup_s=warm,
            bar=lambda r: r.ok_per_s >= 490 and r.p99_ms < 600,
            bar_text="≥490/s p99<600",
        )
    )
    plans.append(
        Scenario(
            group="big",
            label="big answers (1.4 MB)",
            connections=16,
            shape=UpstreamShape(delay_ms=0, answer_bytes=BIG),
            duration_s=dur,
            warmup_s=warm,
            bar=lambda r: r.ok_per_s >= 70,
            bar_text="≥70/s",
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
    chosen = set(args.scenarios)
    return [s for s in plans if s.group in chosen]


def _overhead_bar(r: LoadResult) -> bool:
    return r.ok_per_s >= 650 and r.p99_ms < 110


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        print(f"warning: open-file limit {target} < {needed}; raise the hard limit (ulimit -Hn)")


def settled_balance(gateway: Gateway, upstream: FakeUpstream, timeout_s: float) -> Decimal:
    """The balance once the upstream has nothing pending and two readings agree."""
    deadline = time.monotonic() + timeout_s
    previous: Decimal | None = None
    while True:
        pending = upstream.stats()["pending"]
        balance, raw = gateway.balance_usd(EMAIL)
        if pending == 0 and balance == previous:
            return balance
        if time.monotonic() > deadline:
            raise RuntimeError(f"balance still moving after {timeout_s:g} s:\n{raw}")
        previous = balance if pending == 0 else None
        time.sleep(1.0)


def quiesce(upstream: FakeUpstream, timeout_s: float, quiet_s: float = 1.0) -> None:
    """Wait until the gateway has stopped calling the upstream.

    wrk hangs up on the requests still in flight when it stops, but the gateway may go on
    serving them; left alone, that backlog would eat into the next measurement, or fail
    against an upstream being restarted.
    """
    deadline = time.monotonic() + timeout_s
    previous = upstream.stats()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        current = upstream.stats()
        if current == previous and current["pending"] == 0:
            return
        previous = current
    raise RuntimeError(f"the gateway kept calling the upstream for {timeout_s:g} s: {previous}")


def preflight(gateway: Gateway, key: str) -> None:
    body = {
        "model": "openai/dall-e-2",
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
        raise RuntimeError(f"a single generation failed: {reply.status_code} {reply.text[:500]}")
    print(f"preflight ok: {reply.text[:200]}")


def run_scenario(
    s: Scenario, args: argparse.Namespace, gateway: Gateway, upstream: FakeUpstream, key: str
) -> Row:
    upstream.ensure(s.shape)
    gateway.check_alive()
    drain_s = 120 + 2 * s.shape.delay_ms / 1000
    if s.warmup_s:
        Load(gateway.url, key, s.connections, s.warmup_s, threads=args.wrk_threads).run()
        quiesce(upstream, drain_s)
    before_usd = Decimal(0)
    if s.budget is not None:
        before_usd = settled_balance(gateway, upstream, drain_s)
    stats_before = upstream.stats()
    print(f"running {s.label} × {s.connections} for {s.duration_s:g} s …", flush=True)
    load = Load(
        gateway.url, key, s.connections, s.duration_s, threads=args.wrk_threads, budget=s.budget
    )
    result = load.run()
    quiesce(upstream, drain_s)
    row = Row(s.label, args.db, s.connections, result)
    if s.bar is not None:
        row.verdict = ("PASS " if s.bar(result) else "FAIL ") + s.bar_text
    if s.budget is not None:
        after_usd = settled_balance(gateway, upstream, drain_s)
        row.verdict, notes = check_charges(s, result, before_usd - after_usd)
        row.notes += notes
    stats_after = upstream.stats()
    delta = {k: stats_after[k] - stats_before[k] for k in ("received", "answered", "abandoned")}
    row.notes.append(f"upstream during the run: {delta}")
    print(row.line(), flush=True)
    return row


def check_charges(s: Scenario, r: LoadResult, drop_usd: Decimal) -> tuple[str, list[str]]:
    assert s.budget is not None
    sent = s.budget * s.connections
    charged = drop_usd / PRICE_USD
    charged_text = f"{charged:.0f}" if charged == charged.to_integral_value() else f"{charged}"
    problems = []
    if r.completed != sent:
        problems.append(f"{sent - r.completed} of {sent} budgeted requests never completed")
    if r.non_2xx or r.socket_errors:
        problems.append(f"{r.non_2xx} non-2xx and {r.socket_errors} socket errors")
    if drop_usd != r.ok * PRICE_USD:
        problems.append(
            f"balance dropped ${drop_usd} (= {charged_text} charges) for {r.ok} successes"
        )
    notes = [
        f"budget {sent} ({s.budget} per connection), 200s {r.ok}, "
        f"balance drop ${drop_usd} = {charged_text} × ${PRICE_USD}",
        *problems,
    ]
    return ("FAIL: " + "; ".join(problems)) if problems else "PASS charged once", notes


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
    args = parser.parse_args(argv)
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
    args: argparse.Namespace, data_dir: Path, port: int, up: str
) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DATABASE_URL", None)
    database_url = prepare_database(args.db, data_dir)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env.update(
        DATA_DIR=str(data_dir),
        OPENAI_BASE_URL=up,
        PUBLIC_URL=f"http://127.0.0.1:{port}",
        # Per-request log lines cost the single worker CPU that clients would not pay for.
        LOG_LEVEL="WARNING",
    )
    for item in args.gateway_env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        wrk_binary()
    except WrkMissingError as exc:
        print(exc, file=sys.stderr)
        return 2
    scenarios = plan(args)
    raise_open_files(max(s.connections for s in scenarios) * 3 + 256)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    results = BENCH_DIR / "results"
    logs = results / f"{args.db}-{stamp}.logs"
    logs.mkdir(parents=True, exist_ok=True)
    data_dir = Path(tempfile.mkdtemp(prefix="ir-bench-"))
    openai_key = f"sk-bench-{stamp}"
    upstream = FakeUpstream(free_port(), openai_key, logs)
    gateway_port = free_port()
    env = gateway_environment(args, data_dir, gateway_port, upstream.base_url)
    env["OPENAI_API_KEY"] = openai_key
    gateway = Gateway(gateway_port, env, logs)
    rows: list[Row] = []
    aborted: str | None = None
    try:
        upstream.ensure(scenarios[0].shape)
        gateway.start()
        key = gateway.create_account(EMAIL, CREDIT_USD)
        preflight(gateway, key)
        for scenario in scenarios:
            rows.append(run_scenario(scenario, args, gateway, upstream, key))
    except RuntimeError as exc:
        # Keep what was measured so far; the message says why the rest is missing.
        aborted = str(exc)
        print(f"\nbenchmark aborted: {aborted}", file=sys.stderr)
    finally:
        gateway.stop()
        upstream.stop()
        if not args.keep_data:
            shutil.rmtree(data_dir, ignore_errors=True)
    preamble = describe(args, data_dir)
    if aborted is not None:
        preamble.append(f"- **aborted**: {aborted.splitlines()[0]}")
    text = render(f"Image Router benchmark: {args.db}, {stamp}", preamble, rows)
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
        f"- commit: {commit or 'none'}; gateway: 1 worker; wrk threads: {args.wrk_threads}",
        "- req/s counts 200 responses only; latencies are wrk's, over all responses",
    ]
    if args.quick:
        lines.append("- **quick run** (3 s per scenario): checks the harness, not the bars")
    if args.keep_data:
        lines.append(f"- DATA_DIR kept at {data_dir}")
    return lines


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
