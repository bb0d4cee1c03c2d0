"""The failover scenarios' fixtures: an operator catalog entry and what to check.

`bench/failover` has two OpenAI routes to the fake upstream, `bench-flaky` first and
`bench-steady` second. The fake answers 503 to a fraction of the `bench-flaky`
requests, so the gateway has to fail over to `bench-steady` within the same request;
the client should never notice, and the failed attempt must cost nothing.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from load import Load
from report import Row
from services import FakeUpstream, Gateway
from settle import check_charges, quiesce, settled_balance

MODEL = "bench/failover"
FLAKY = "bench-flaky"
STEADY = "bench-steady"
RATE = 0.2
# The bar: with one route failing, the gateway keeps 90% of its healthy rate.
MIN_RATIO = 0.9
CONNECTIONS = 16
BASELINE = "failover-healthy"
BODY = json.dumps(
    {
        "model": MODEL,
        "prompt": "a lighthouse at dusk, benchmark",
        "size": "1024x1024",
        "response_format": "url",
    },
    separators=(",", ":"),
)


def catalog_toml(price_usd: Decimal) -> str:
    routes = "".join(
        f"""
  [[model.routes]]
  provider = "openai"
  upstream = "{upstream}"
  price = {{ rule = "fixed", usd = "{price_usd}" }}
"""
        for upstream in (FLAKY, STEADY)
    )
    return f"""# Written by bench/run.py for the failover scenarios (see bench/README.md).
[[model]]
id = "{MODEL}"
modality = "image"
release_date = "2026-01-01"
{routes}"""


def write_catalog(data_dir: Path, price_usd: Decimal) -> Path:
    path = data_dir / "bench-failover-catalog.toml"
    path.write_text(catalog_toml(price_usd))
    return path


def check_plan(ok_per_s: float, connections: int, quick: bool) -> tuple[int, float]:
    """(requests per connection, wrk duration) for the budgeted charge check.

    About `work_s` seconds of requests at the measured rate, and three times as long
    for them to finish, so wrk never hangs up on one (see the in-flight scenario). wrk
    takes whole seconds only.
    """
    work_s = 1.0 if quick else 2.0
    budget = max(4, math.ceil(ok_per_s * work_s / connections))
    expected_s = budget * connections / max(ok_per_s, 1.0)
    return budget, float(math.ceil(3 * expected_s + 2))


def int_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """What changed between two /_stats readings, per counter and per model."""
    keys = ("received", "answered", "abandoned", "failed")
    delta = {k: int(after.get(k, 0)) - int(before.get(k, 0)) for k in keys}
    models_before: dict[str, int] = before.get("models", {})
    for model, n in after.get("models", {}).items():
        if n != models_before.get(model, 0):
            delta[f"model {model}"] = n - models_before.get(model, 0)
    return delta


def routing_notes(delta: dict[str, int], sent: int, rate: float) -> tuple[list[str], list[str]]:
    """(problems, notes) about how the budgeted requests reached the two routes."""
    flaky = delta.get(f"model {FLAKY}", 0)
    steady = delta.get(f"model {STEADY}", 0)
    failed = delta["failed"]
    share = f"{failed / flaky:.1%}" if flaky else "n/a"
    notes = [f"check run upstream: {FLAKY} {flaky} (503s {failed} = {share}), {STEADY} {steady}"]
    problems = []
    if rate > 0 and failed == 0:
        problems.append("the fake upstream failed no request: failover was not exercised")
    if flaky != sent:
        notes.append(f"{FLAKY} received {flaky} requests for {sent} sent: not one first try each")
    if steady != failed:
        notes.append(f"{STEADY} received {steady} requests for {failed} failures on {FLAKY}")
    elif failed:
        notes.append(f"each of the {failed} failures was retried once on {STEADY}")
    return problems, notes


def compare(row: Row, baseline: Row) -> tuple[float, str]:
    """(req/s ratio, a note comparing rate, latency and gateway CPU with the healthy run)."""
    result, base = row.result, baseline.result
    ratio = result.ok_per_s / base.ok_per_s if base.ok_per_s else 0.0

    def change(new: float | None, old: float | None) -> str:
        return f"{new / old - 1:+.1%}" if new is not None and old else "n/a"

    note = (
        f"vs {baseline.scenario}: req/s {result.ok_per_s:,.0f} / {base.ok_per_s:,.0f} = "
        f"{ratio:.1%}; p50 {result.p50_ms:,.1f} vs {base.p50_ms:,.1f} ms "
        f"({change(result.p50_ms, base.p50_ms)}); "
        f"p99 {result.p99_ms:,.1f} vs {base.p99_ms:,.1f} ms "
        f"({change(result.p99_ms, base.p99_ms)})"
    )
    cpu, base_cpu = row.cpu_ms_per_ok, baseline.cpu_ms_per_ok
    if cpu is not None and base_cpu is not None:
        note += f"; gateway CPU per 200 {cpu:,.2f} vs {base_cpu:,.2f} ms ({change(cpu, base_cpu)})"
    return ratio, note


@dataclass(frozen=True)
class Bench:
    gateway: Gateway
    upstream: FakeUpstream
    key: str
    body: str | None
    wrk_threads: int
    quick: bool
    load_cpus: str | None = None  # `taskset -c` CPUs of wrk


def judge(
    bench: Bench, row: Row, fail_rate: float, baseline_label: str | None, done: list[Row]
) -> None:
    """Set the verdict of a failover run: no failure may reach a client, each success
    costs one charge, and with a baseline the rate stays within the bar of its rate."""
    r = row.result
    problems = []
    if r.non_2xx or r.socket_errors:
        problems.append(f"{r.non_2xx} non-2xx and {r.socket_errors} socket errors")
    passed = "charged once"
    baseline = next((d for d in done if d.scenario == baseline_label), None)
    if baseline_label is not None and baseline is None:
        problems.append(f"no {baseline_label} run to compare with")
    elif baseline is not None:
        ratio, note = compare(row, baseline)
        row.notes.append(note)
        passed = f"{ratio:.0%} of healthy (≥{MIN_RATIO:.0%}), charged once"
        if ratio < MIN_RATIO:
            problems.append(f"req/s {ratio:.1%} of {baseline.scenario} (< {MIN_RATIO:.0%})")
    problems += charge_check(bench, row, fail_rate)
    row.notes += problems
    row.verdict = ("FAIL: " + "; ".join(problems)) if problems else f"PASS {passed}"


def charge_check(bench: Bench, row: Row, fail_rate: float) -> list[str]:
    """A budgeted run like the in-flight one: it ends with nothing in flight, so the
    balance must drop by exactly 200s × the price. The timed run cannot show that: wrk
    hangs up on its last requests, which the gateway may still serve and charge."""
    connections = row.concurrency
    budget, duration_s = check_plan(row.result.ok_per_s, connections, bench.quick)
    sent = budget * connections
    drain_s = 120.0
    gateway, upstream = bench.gateway, bench.upstream
    before_usd = settled_balance(gateway, upstream, drain_s)
    stats_before = upstream.stats()
    print(f"charge check: {sent} requests, {duration_s:.0f} s …", flush=True)
    load = Load(
        gateway.url,
        bench.key,
        connections,
        duration_s,
        threads=bench.wrk_threads,
        body=bench.body,
        budget=budget,
        cpus=bench.load_cpus,
    )
    result = load.run()
    quiesce(upstream, drain_s)
    after_usd = settled_balance(gateway, upstream, drain_s)
    delta = int_delta(stats_before, upstream.stats())
    problems, note = check_charges(sent, budget, result, before_usd - after_usd)
    routing_problems, routing = routing_notes(delta, sent, fail_rate)
    row.notes += [f"charge check: {note}", *routing]
    return [f"charge check: {p}" for p in problems] + routing_problems
