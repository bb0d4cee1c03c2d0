"""Compare two versions of the gateway on a noisy machine: short bursts, alternated.

`run.py` measures one version at a time; on a shared host the same build varies by half
between runs minutes apart, so two runs of `run.py` cannot show a change of a few per cent.
Here both versions run at once, each a gateway of its own (its code from `--a` / `--b`, a
`src` directory put first on `PYTHONPATH`; its own data directory and database), pinned to
the same core, and wrk loads them in turn: `--rounds` bursts of `--burst` seconds each,
A then B in odd rounds and B then A in even ones. Whatever the neighbours do hits both
sides within seconds of each other, and a round compares like with like.

The figure that matters is each side's CPU time per 200 (utime + stime of its processes,
read from /proc around the burst), with req/s and p99 beside it. The report gives, per
side, the minimum and median over the rounds and, per round, B's CPU per request against
A's: their median is the change, and their spread says how far to trust it.

    .venv/bin/python bench/pair.py --a /tmp/old/src --b src --scenario overhead
    .venv/bin/python bench/pair.py --a /tmp/old/src --b src --scenario slow --rounds 8

Run it both ways round as well (`--a` and `--b` swapped): on this host one run of an
unchanged tree against itself gave a median of 0.956, so a few per cent either way is
noise, and a change is real only when it shows in both orders.

A benchmark, not a test: not part of pytest.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import run
from load import Load, wrk_ready
from services import (
    FakeUpstream,
    Gateway,
    UpstreamShape,
    drop_database,
    free_port,
)
from settle import EMAIL, quiesce

BENCH_DIR = Path(__file__).resolve().parent

#: scenario → (connections, upstream shape): run.py's scenarios of the same names.
SCENARIOS = {
    "overhead": (16, UpstreamShape(delay_ms=0, answer_bytes=run.SMALL)),
    "slow": (256, UpstreamShape(delay_ms=500, answer_bytes=run.SMALL)),
    "big64": (16, UpstreamShape(delay_ms=0, answer_bytes=run.BIG)),
}


@dataclass
class Side:
    name: str
    src: Path
    gateway: Gateway
    data_dir: Path
    key: str = ""
    cpu_ms: list[float] = field(default_factory=list)  # per 200, one per round
    rates: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", type=Path, required=True, help="the `src` directory of A")
    parser.add_argument("--b", type=Path, required=True, help="the `src` directory of B")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="postgres")
    parser.add_argument("--scenario", choices=tuple(SCENARIOS), default="overhead")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--burst", type=float, default=4.0, help="seconds per burst")
    parser.add_argument("--pin", default="0:1", help="gateway CPUs:load CPUs (taskset)")
    args = parser.parse_args(argv)
    for side in (args.a, args.b):
        if not (side / "image_router").is_dir():
            parser.error(f"{side} holds no image_router package")
    if args.rounds < 1 or args.burst <= 0:
        parser.error("--rounds must be at least 1 and --burst positive")
    args.gateway_cpus, _, args.load_cpus = args.pin.partition(":")
    return args


def start_side(
    name: str, src: Path, args: argparse.Namespace, upstream: FakeUpstream, openai_key: str
) -> Side:
    data_dir = Path(tempfile.mkdtemp(prefix=f"ir-pair-{name}-"))
    port = free_port()
    database = f"bench_ir_pair_{name.lower()}_{port}"  # one per side
    env = run.gateway_environment(args.db, data_dir, port, upstream.base_url, database=database)
    env["OPENAI_API_KEY"] = openai_key
    env["PYTHONPATH"] = str(src.resolve())
    env["IR_PAIR_DATABASE"] = database  # read back by `stop_side`
    logs = Path(tempfile.mkdtemp(prefix=f"ir-pair-{name}-logs-"))
    gateway = Gateway(port, env, logs, cpus=args.gateway_cpus or None)
    gateway.start()
    side = Side(name, src, gateway, data_dir)
    side.key = gateway.create_account(EMAIL, run.CREDIT_USD)
    run.preflight(gateway, side.key, ["openai/dall-e-2"])
    return side


def stop_side(side: Side, db: str) -> None:
    side.gateway.stop()
    drop_database(db, name=side.gateway.env["IR_PAIR_DATABASE"])
    shutil.rmtree(side.data_dir, ignore_errors=True)


def burst(side: Side, args: argparse.Namespace, upstream: FakeUpstream, seconds: float) -> None:
    connections, shape = SCENARIOS[args.scenario]
    body = run.BIG_B64_BODY if args.scenario == "big64" else None
    load = Load(
        side.gateway.url, side.key, connections, seconds, body=body, cpus=args.load_cpus or None
    )
    before = side.gateway.cpu_seconds()
    result = load.run()
    after = side.gateway.cpu_seconds()
    quiesce(upstream, 120 + 2 * shape.delay_ms / 1000)
    if before is None or after is None or result.ok == 0:
        raise RuntimeError(f"{side.name}: no CPU figure or no 200 in a burst")
    side.cpu_ms.append((after - before) * 1000 / result.ok)
    side.rates.append(result.ok_per_s)
    side.p99s.append(result.p99_ms)


def report(a: Side, b: Side, args: argparse.Namespace) -> str:
    ratios = [bc / ac for ac, bc in zip(a.cpu_ms, b.cpu_ms, strict=True)]
    lines = [
        f"# Paired benchmark: {args.scenario} on {args.db}, {args.rounds} rounds of "
        f"{args.burst:g} s",
        "",
        f"- A: {a.src}",
        f"- B: {b.src}",
        "",
        "| side | CPU ms/200 min | median | req/s median | p99 ms median |",
        "|---|---:|---:|---:|---:|",
    ]
    for side in (a, b):
        lines.append(
            f"| {side.name} | {min(side.cpu_ms):.3f} | {statistics.median(side.cpu_ms):.3f} "
            f"| {statistics.median(side.rates):,.0f} | {statistics.median(side.p99s):,.1f} |"
        )
    lines += [
        "",
        f"B/A CPU per request, per round: {', '.join(f'{r:.3f}' for r in ratios)}",
        f"median {statistics.median(ratios):.3f} (range {min(ratios):.3f}–{max(ratios):.3f})",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not wrk_ready():
        return 2
    connections, shape = SCENARIOS[args.scenario]
    run.raise_open_files(connections * 6 + 256)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    openai_key = f"sk-bench-pair-{stamp}"
    logs = Path(tempfile.mkdtemp(prefix="ir-pair-upstream-"))
    upstream = FakeUpstream(free_port(), openai_key, logs, cpus=args.load_cpus or None)
    sides: list[Side] = []
    try:
        upstream.ensure(shape)
        for name, src in (("A", args.a), ("B", args.b)):
            print(f"starting {name} ({src}) …", flush=True)
            sides.append(start_side(name, src, args, upstream, openai_key))
        a, b = sides
        for side in sides:  # warm-up: connections, caches
            burst(side, args, upstream, 2.0)
            side.cpu_ms.clear()
            side.rates.clear()
            side.p99s.clear()
        for round_ in range(args.rounds):
            order = (a, b) if round_ % 2 == 0 else (b, a)
            for side in order:
                burst(side, args, upstream, args.burst)
            print(
                f"round {round_ + 1}/{args.rounds}: A {a.cpu_ms[-1]:.3f} ms, "
                f"B {b.cpu_ms[-1]:.3f} ms per request",
                flush=True,
            )
    except RuntimeError as exc:
        print(f"pair aborted: {exc}", file=sys.stderr)
        return 1
    finally:
        for side in sides:
            stop_side(side, args.db)
        upstream.stop()
    text = report(a, b, args)
    out = BENCH_DIR / "results" / f"pair-{args.scenario}-{args.db}-{stamp}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text + "\n")
    print("\n" + text + f"\n\nwritten to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
