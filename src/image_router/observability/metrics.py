"""Prometheus metrics, and `render()` for `GET /metrics`.

Metric objects are module globals of the default registry, so recording is a dict lookup
and a lock. Label values are bounded: HTTP routes are route templates, providers and
outcomes come from code, models from the catalog.

Several worker processes (`image-router serve --workers N`): `serve` sets the environment
variable `PROMETHEUS_MULTIPROC_DIR` to a private directory, emptied at each start (stale
files from an earlier run would be added in), unless the operator set it (then it must be
an empty directory writable by every worker, wiped before each start; `prepare_multiproc`).
prometheus_client then keeps each value in a memory-mapped file per process, and
`render()` merges the files of all workers, so any worker answers the scrape with totals.
Counters and histograms add up over processes, including workers that have exited. The
outstanding-holds gauge is summed over live workers (`livesum`); a route's circuit state is
the worst among live workers (`livemax`), since each worker keeps its own breakers unless
route health is shared in Redis; whether Redis answers is the lowest among live workers
(`livemin`: 0 when any worker has fallen back). A worker removes its gauge files when it
shuts down cleanly (`worker_stopped`, called by the app's lifespan); a killed worker's live gauges
linger until the directory is wiped. Process metrics (memory, CPU, open files) are not
available in this mode.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Images take seconds, videos minutes: from a fast cache hit to the 600 s video ceiling.
_VENDOR_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
# Whole requests: metadata answers in milliseconds, generations like the vendor calls.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# Our own work around a vendor call: validation, pricing, ledger, storage.
_OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

HTTP_REQUESTS = Counter(
    "image_router_http_requests_total",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "image_router_http_request_duration_seconds",
    "Time from request to the last byte of the answer, by route template.",
    ["method", "route"],
    buckets=_HTTP_BUCKETS,
)
GENERATIONS = Counter(
    "image_router_generations_total",
    "Generation requests by model, modality and final status.",
    ["model", "modality", "status"],
)
PROVIDER_DURATION = Histogram(
    "image_router_provider_request_duration_seconds",
    "Duration of one attempt at a vendor, by outcome (success or the error kind).",
    ["provider", "outcome"],
    buckets=_VENDOR_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "image_router_upstream_errors_total",
    "Failed attempts at a vendor, by error kind.",
    ["provider", "kind"],
)
VENDOR_CANCELS = Counter(
    "image_router_vendor_cancels_total",
    "Vendor jobs given up on and cancelled at the vendor, by reason "
    "(deadline: the attempt ran out of time, cancelled: the request was cancelled (client gone), "
    "poll_failed: its status checks kept failing).",
    ["provider", "reason"],
)
HOLDS_OUTSTANDING = Gauge(
    "image_router_holds_outstanding",
    "Credit holds taken and not yet settled or released.",
    multiprocess_mode="livesum",
)
CIRCUIT_STATE = Gauge(
    "image_router_circuit_state",
    "Circuit breaker of a route: 0 closed, 1 half open, 2 open.",
    ["route"],
    multiprocess_mode="livemax",
)
REDIS_UP = Gauge(
    "image_router_redis_up",
    "1 while Redis (REDIS_URL) answers, 0 while this worker falls back to its own rate "
    "limits and route health; the lowest over live workers.",
    multiprocess_mode="livemin",
)
GATEWAY_OVERHEAD = Histogram(
    "image_router_gateway_overhead_seconds",
    "Time a generation spends outside the vendor call.",
    buckets=_OVERHEAD_BUCKETS,
)

CIRCUIT_VALUES: Mapping[str, int] = {"closed": 0, "half_open": 1, "open": 2}

_children: dict[tuple[object, ...], Any] = {}


def _child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once: `labels()` builds a key and takes a lock,
    which every request would pay (the HTTP series) and every generation several times.
    The label values are bounded (route templates, statuses, the catalog's models and
    providers, fixed outcome names), and so is this map."""
    key = (id(metric), *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def observe_http(method: str, route: str, status: int, seconds: float) -> None:
    """One answered HTTP request; `route` is its template, never the raw path."""
    _child(HTTP_REQUESTS, method, route, str(status)).inc()
    _child(HTTP_DURATION, method, route).observe(seconds)


def count_generation(model: str, modality: str, status: str) -> None:
    """One finished generation request: success, error, rejected, cancelled, ..."""
    _child(GENERATIONS, model, modality, status).inc()


def observe_attempt(provider: str, upstream: str, outcome: str, seconds: float) -> None:
    """One attempt at a vendor; `outcome` is "success" or the `UpstreamError.kind`.

    `upstream` is not a label: the catalog names hundreds of upstream models, and the
    per-route picture is the circuit state and the usage log.
    """
    _child(PROVIDER_DURATION, provider, outcome).observe(seconds)
    if outcome != "success":
        _child(UPSTREAM_ERRORS, provider, outcome).inc()


def count_vendor_cancel(provider: str, reason: str) -> None:
    """A running vendor job we gave up on was asked to stop (it would bill us otherwise)."""
    _child(VENDOR_CANCELS, provider, reason).inc()


def hold_taken() -> None:
    HOLDS_OUTSTANDING.inc()


def hold_finished() -> None:
    """A hold was settled or released."""
    HOLDS_OUTSTANDING.dec()


def set_circuit(route: str, state: str) -> None:
    """`state` is "closed", "half_open" or "open" (`routing.health.State`)."""
    try:
        value = CIRCUIT_VALUES[state]
    except KeyError:
        raise ValueError(f"unknown circuit state {state!r}") from None
    _child(CIRCUIT_STATE, route).set(value)


def set_redis_up(up: bool) -> None:
    REDIS_UP.set(1 if up else 0)


def observe_gateway_overhead(seconds: float) -> None:
    GATEWAY_OVERHEAD.observe(seconds)


def worker_stopped() -> None:
    """Drop this process from the live gauges (multi-worker mode); call at shutdown.

    Not an `atexit` hook: uvicorn's worker processes end through multiprocessing, which
    skips those.
    """
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


def render() -> tuple[bytes, str]:
    """The text exposition of every metric, and its content type."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
