"""Summarise a phase probe's records (bench/phases/sitecustomize.py) as a Markdown table."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# (label, from, to): consecutive stretches of one generation request, in order.
PHASES = (
    ("admission (middleware, gates, body, validation)", "received", "generate"),
    ("hold (plan, hold, open the usage row)", "generate", "vendor"),
    ("vendor call", "vendor", "vendor_done"),
    ("answer (parse, attempts' bookkeeping)", "vendor_done", "store"),
    ("store the output", "store", "stored"),
    ("price, keep a job's answer", "stored", "settle"),
    ("settle", "settle", "settled"),
    ("reply (the rest, the response)", "settled", "answered"),
    ("whole request", "received", "answered"),
)


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarise(path: Path) -> list[str]:
    """The table's lines; the requests that reached every stamp (served generations)."""
    records = json.loads(path.read_text())
    stamps = {name for _, a, b in PHASES for name in (a, b)}
    served = [r for r in records if stamps <= r.keys()]
    lines = [
        f"{len(served)} generations with every stamp (of {len(records)} POSTs); wall time in ms",
        "",
        "| phase | mean | p50 | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    if not served:
        return lines
    for label, began, ended in PHASES:
        spans = sorted(1000 * (r[ended] - r[began]) for r in served)
        figures = (statistics.fmean(spans), *(_quantile(spans, q) for q in (0.5, 0.9, 0.99)))
        cells = " | ".join(f"{v:,.1f}" for v in (*figures, spans[-1]))
        lines.append(f"| {label} | {cells} |")
    return lines


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python bench/phases/summary.py PHASES.json", file=sys.stderr)
        raise SystemExit(2)
    print("\n".join(summarise(Path(sys.argv[1]))))
