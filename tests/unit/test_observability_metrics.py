"""The metrics API the generation service calls, and the multi-worker exposition."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from image_router.observability import metrics


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_count_generation() -> None:
    labels = {"model": "test/test", "modality": "image", "status": "insufficient_credits"}
    before = _value("image_router_generations_total", **labels)
    metrics.count_generation("test/test", "image", "insufficient_credits")
    metrics.count_generation("test/test", "image", "insufficient_credits")
    assert _value("image_router_generations_total", **labels) == before + 2


def test_a_successful_attempt_is_timed_and_not_an_error() -> None:
    count = "image_router_provider_request_duration_seconds_count"
    ok = {"provider": "obs-ok", "outcome": "success"}
    before = _value(count, **ok)
    metrics.observe_attempt("obs-ok", "model-x", "success", 0.07)
    assert _value(count, **ok) == before + 1
    # 0.07 s falls in the 0.1 bucket, not the 0.05 one.
    assert (
        _value("image_router_provider_request_duration_seconds_bucket", le="0.1", **ok)
        - _value("image_router_provider_request_duration_seconds_bucket", le="0.05", **ok)
        >= 1
    )
    assert _value("image_router_upstream_errors_total", provider="obs-ok", kind="success") == 0


def test_a_failed_attempt_counts_an_upstream_error() -> None:
    errors = {"provider": "obs-fail", "kind": "rate_limited"}
    before = _value("image_router_upstream_errors_total", **errors)
    metrics.observe_attempt("obs-fail", "model-x", "rate_limited", 1.5)
    assert _value("image_router_upstream_errors_total", **errors) == before + 1
    assert (
        _value(
            "image_router_provider_request_duration_seconds_count",
            provider="obs-fail",
            outcome="rate_limited",
        )
        >= 1
    )


def test_holds_outstanding_go_up_and_down() -> None:
    before = _value("image_router_holds_outstanding")
    metrics.hold_taken()
    metrics.hold_taken()
    assert _value("image_router_holds_outstanding") == before + 2
    metrics.hold_finished()
    metrics.hold_finished()
    assert _value("image_router_holds_outstanding") == before


@pytest.mark.parametrize(("state", "value"), [("closed", 0), ("half_open", 1), ("open", 2)])
def test_circuit_state(state: str, value: float) -> None:
    metrics.set_circuit("runware/bfl:2@1", state)
    assert _value("image_router_circuit_state", route="runware/bfl:2@1") == value


def test_an_unknown_circuit_state_is_a_bug() -> None:
    with pytest.raises(ValueError, match="ajar"):
        metrics.set_circuit("runware/bfl:2@1", "ajar")


def test_gateway_overhead() -> None:
    before = _value("image_router_gateway_overhead_seconds_count")
    metrics.observe_gateway_overhead(0.003)
    assert _value("image_router_gateway_overhead_seconds_count") == before + 1
    assert _value("image_router_gateway_overhead_seconds_bucket", le="0.005") >= 1


def test_render_is_the_text_exposition() -> None:
    metrics.count_generation("test/test", "image", "success")
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    names = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {"image_router_generations", "image_router_holds_outstanding"} <= names


_WORKER = textwrap.dedent(
    """
    import sys
    from image_router.observability import metrics
    metrics.count_generation("test/test", "image", "success")
    metrics.hold_taken()
    metrics.set_circuit("test/test", sys.argv[1])
    if sys.argv[2] == "render":
        sys.stdout.write(metrics.render()[0].decode())
    else:
        metrics.worker_stopped()
    """
)


def _worker(directory: Path, state: str, action: str) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, state, action],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def test_several_workers_answer_with_totals(tmp_path: Path) -> None:
    """Counters add up over every worker; live gauges forget a worker that has stopped."""
    _worker(tmp_path, "open", "stop")
    exposition = _worker(tmp_path, "half_open", "render")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }
    labels = (("modality", "image"), ("model", "test/test"), ("status", "success"))
    assert samples[("image_router_generations_total", labels)] == 2
    assert samples[("image_router_holds_outstanding", ())] == 1
    assert samples[("image_router_circuit_state", (("route", "test/test"),))] == 1
