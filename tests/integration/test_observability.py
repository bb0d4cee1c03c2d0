"""Request ids, JSON logs and `/metrics` on the real application."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from image_router.app import create_app
from image_router.observability.logging import configure_logging
from tests.conftest import Gateway, gateway_settings

IMAGE = "/v1/openai/images/generations"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
SENTINEL = "zebra-sentinel-7d1f4a9c"

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[Lines]:
    """Our JSON handler at DEBUG; returns a reader of the lines written since the last read."""
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    configure_logging("DEBUG", "json")

    def read() -> list[dict[str, Any]]:
        err = capsys.readouterr().err
        return [json.loads(line) for line in err.splitlines() if line.startswith("{")]

    yield read
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


async def _samples(gateway: Gateway) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await gateway.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _requests(method: str, route: str, status: str) -> tuple[str, frozenset[tuple[str, str]]]:
    labels = {"method": method, "route": route, "status": status}
    return "image_router_http_requests_total", frozenset(labels.items())


# ------------------------------------------------------------------------------ request ids


async def test_a_request_id_is_generated_and_echoed(gateway: Gateway) -> None:
    first = await gateway.client.get("/v1/models")
    second = await gateway.client.get("/v1/models")
    assert GENERATED_ID.fullmatch(first.headers["x-request-id"])
    assert GENERATED_ID.fullmatch(second.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_a_given_request_id_is_honoured(gateway: Gateway) -> None:
    response = await gateway.client.get("/health", headers={"X-Request-ID": "lb-7f.3_a-1"})
    assert response.headers["x-request-id"] == "lb-7f.3_a-1"


@pytest.mark.parametrize("given", ["two words", "x" * 129, "a/b", "<script>", ""])
async def test_an_invalid_request_id_is_replaced(gateway: Gateway, given: str) -> None:
    response = await gateway.client.get("/health", headers={"X-Request-ID": given})
    assert GENERATED_ID.fullmatch(response.headers["x-request-id"])


async def test_error_answers_carry_the_id(gateway: Gateway) -> None:
    headers = {"X-Request-ID": "err-1"}
    unauthenticated = await gateway.client.post(IMAGE, json={}, headers=headers)
    missing = await gateway.client.get("/no/such/page", headers=headers)
    assert unauthenticated.status_code == 401 and missing.status_code == 404
    assert unauthenticated.headers["x-request-id"] == missing.headers["x-request-id"] == "err-1"


@pytest.mark.parametrize(
    "gateway_overrides", [{"heartbeat_after_s": 0.1, "heartbeat_interval_s": 0.05}]
)
async def test_a_streamed_answer_carries_the_id(gateway: Gateway) -> None:
    _, key = await gateway.account()
    body = {"model": "test/test", "prompt": "slow [test:sleep=0.4]", "size": "64x64"}
    response = await gateway.post(IMAGE, key, json=body, headers={"X-Request-ID": "slow-1"})
    assert response.status_code == 200
    assert response.text.startswith(" ")  # the keep-alive spaces: it was streamed
    assert response.json()["data"]
    assert response.headers["x-request-id"] == "slow-1"


async def test_an_unexpected_error_has_its_id_in_the_answer_and_the_log(
    json_logs: Lines, db_url: str, tmp_path: Path
) -> None:
    app = create_app(gateway_settings(db_url, tmp_path / "data"))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        response = await client.get("/boom", headers={"X-Request-ID": "boom-1"})
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "Internal server error"
    assert response.headers["x-request-id"] == "boom-1"
    [line] = [line for line in json_logs() if line["message"] == "unhandled error on GET /boom"]
    assert line["request_id"] == "boom-1"
    assert line["level"] == "ERROR"
    assert "RuntimeError: kaboom" in line["exception"]


# ------------------------------------------------------------------------------ logs


async def test_log_lines_of_a_request_carry_its_id(json_logs: Lines, gateway: Gateway) -> None:
    _, key = await gateway.account()
    body = {"model": "test/test", "prompt": "[test:unavailable]", "size": "64x64"}
    response = await gateway.post(IMAGE, key, json=body)
    assert response.status_code == 502
    rid = response.headers["x-request-id"]
    lines = json_logs()
    mine = [line for line in lines if line["request_id"] == rid]
    assert any(line["message"].startswith(f"POST {IMAGE} -> 502") for line in mine)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


async def test_prompts_never_reach_the_logs(
    json_logs: Lines, caplog: pytest.LogCaptureFixture, gateway: Gateway
) -> None:
    """Successful, refused and failed generations, with every logger at DEBUG."""
    caplog.set_level(logging.DEBUG)
    _, key = await gateway.account()
    statuses = []
    for prompt in (SENTINEL, f"{SENTINEL} [test:reject]", f"{SENTINEL} [test:unavailable]"):
        body = {"model": "test/test", "prompt": prompt, "size": "64x64"}
        statuses.append((await gateway.post(IMAGE, key, json=body)).status_code)
    assert statuses == [200, 400, 502]
    lines = json_logs()
    # The capture works: the failed generation was logged...
    assert any(line["message"].startswith(f"POST {IMAGE} -> 502") for line in lines)
    assert caplog.records
    # ...and the prompt is stored for the usage log, yet printed nowhere.
    assert any(row["prompt"] == SENTINEL for row in await gateway.generations())
    assert SENTINEL not in json.dumps(lines)
    assert SENTINEL not in caplog.text
    assert key not in json.dumps(lines) and key not in caplog.text


# ------------------------------------------------------------------------------ metrics


async def test_metrics_count_requests_by_route_template(gateway: Gateway) -> None:
    _, key = await gateway.account()
    before = await _samples(gateway)
    for model in ("test/test", "openai/gpt-image-1"):
        assert (await gateway.client.get(f"/v1/models/{model}")).status_code == 200
    assert (await gateway.client.get("/no/such/page")).status_code == 404
    body = {"model": "test/test", "prompt": "cat", "size": "64x64"}
    assert (await gateway.post(IMAGE, key, json=body)).status_code == 200
    after = await _samples(gateway)

    def grew(key: tuple[str, frozenset[tuple[str, str]]]) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert grew(_requests("GET", "/v1/models/{model_id:path}", "200")) == 2
    assert grew(_requests("GET", "unmatched", "404")) == 1
    assert grew(_requests("POST", IMAGE, "200")) == 1
    assert grew(_requests("GET", "/metrics", "200")) == 1  # the first scrape
    duration = "image_router_http_request_duration_seconds_count"
    route = frozenset({"method": "GET", "route": "/v1/models/{model_id:path}"}.items())
    assert after[(duration, route)] - before.get((duration, route), 0.0) == 2
    # Raw paths never become labels.
    assert not any("/v1/models/test/test" in str(labels) for _, labels in after)


async def test_metrics_are_not_in_the_api_document(gateway: Gateway) -> None:
    schema = (await gateway.client.get("/openapi.json")).json()
    assert "/metrics" not in schema["paths"]
