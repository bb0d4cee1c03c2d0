"""The markdown a benchmark run prints and keeps."""

from __future__ import annotations

from dataclasses import dataclass, field

from load import LoadResult

HEADER = (
    "| scenario | db | concurrency | req/s | p50 ms | p99 ms | non-2xx | errors "
    "| gateway CPU ms/200 | bar |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
)


@dataclass
class Row:
    scenario: str
    db: str
    concurrency: int
    result: LoadResult
    verdict: str = "—"
    notes: list[str] = field(default_factory=list)
    gateway_cpu_s: float | None = None  # CPU the gateway used during the measurement

    @property
    def cpu_ms_per_ok(self) -> float | None:
        if self.gateway_cpu_s is None or not self.result.ok:
            return None
        return 1000 * self.gateway_cpu_s / self.result.ok

    def line(self) -> str:
        r = self.result
        cpu = self.cpu_ms_per_ok
        return (
            f"| {self.scenario} | {self.db} | {self.concurrency} | {r.ok_per_s:,.0f} "
            f"| {r.p50_ms:,.1f} | {r.p99_ms:,.1f} | {r.non_2xx} | {r.socket_errors} "
            f"| {'—' if cpu is None else f'{cpu:,.2f}'} | {self.verdict} |"
        )

    def details(self) -> str:
        r = self.result
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(r.statuses.items()))
        # Closed-loop clients never wait between requests, so by Little's law this is the
        # rate while every connection is busy; wrk's own rate also counts the requests
        # still in flight when it stops, which matters when each one takes long.
        little = self.concurrency / (r.mean_ms / 1000) if r.mean_ms else 0.0
        lines = [
            f"### {self.scenario} ({self.concurrency} connections)",
            "",
            f"- {r.completed} responses in {r.duration_s:.2f} s ({statuses or 'none'})",
            f"- latency ms: mean {r.mean_ms:,.1f}, p50 {r.p50_ms:,.1f}, "
            f"p90 {r.p90_ms:,.1f}, p99 {r.p99_ms:,.1f}, max {r.max_ms:,.1f}",
            f"- concurrency / mean latency: {little:,.0f} req/s",
            f"- socket errors: connect {r.connect_errors}, read {r.read_errors}, "
            f"write {r.write_errors}, timeout {r.timeouts}",
        ]
        if self.gateway_cpu_s is not None and self.cpu_ms_per_ok is not None:
            share = self.gateway_cpu_s / r.duration_s if r.duration_s else 0.0
            lines.append(
                f"- gateway CPU: {share:.0%} of a core, {self.cpu_ms_per_ok:,.2f} ms per 200"
            )
        if r.sample:
            lines.append(f"- first non-200 body: `{r.sample.strip()[:300]}`")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)


def render(title: str, preamble: list[str], rows: list[Row]) -> str:
    parts = [f"# {title}", "", *preamble, "", HEADER]
    parts += [row.line() for row in rows]
    parts += ["", "## Details", ""]
    for row in rows:
        parts += [row.details(), ""]
    return "\n".join(parts)
