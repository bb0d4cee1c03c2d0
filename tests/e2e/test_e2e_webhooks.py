"""Webhooks from a real server process to a receiver on loopback (ALLOW_PRIVATE_UPSTREAMS
lets the gateway call 127.0.0.1), verified with the `standardwebhooks` library: an
account endpoint registered through the API, and a request's own `webhook_url`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Server, running_server
from tests.fakes.upstream import serve_in_thread
from tests.fakes.webhook_receiver import WebhookReceiver


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    fake = WebhookReceiver()
    with serve_in_thread(fake.app) as url:
        yield fake, url


@pytest.fixture(scope="module")
def hooks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(
        tmp_path_factory.mktemp("webhooks-server"),
        ALLOW_PRIVATE_UPSTREAMS="true",
        WEBHOOK_INTERVAL_S="0.2",
    ) as started:
        yield started


def _wait_for(fake: WebhookReceiver, count: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(fake.requests) < count:
        assert time.monotonic() < deadline, f"{len(fake.requests)} of {count} webhooks arrived"
        time.sleep(0.05)


def test_a_generation_is_posted_to_the_endpoint_and_the_request_url(
    hooks_server: Server, receiver: tuple[WebhookReceiver, str]
) -> None:
    fake, url = receiver
    key = hooks_server.bootstrap_key
    assert key is not None
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=hooks_server.url, headers=auth, timeout=30) as client:
        created = client.post("/v1/webhooks", json={"url": f"{url}/hook"})
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]

        answer = client.post(
            "/v1/openai/images/generations",
            json={"model": "test/test", "prompt": "a lighthouse", "webhook_url": f"{url}/other"},
        )
        assert answer.status_code == 200, answer.text
        generation_id = answer.headers["x-generation-id"]

        _wait_for(fake, 2)
        by_path = {r.path: r for r in fake.requests}
        event = fake.verified(secret, by_path["/hook"])
        assert event["type"] == "generation.completed"
        assert event["data"]["id"] == generation_id
        assert event["data"]["data"][0]["url"] == answer.json()["data"][0]["url"]

        request_secret = client.get("/v1/webhooks/default/secret").json()["key"]
        assert request_secret != secret
        assert fake.verified(request_secret, by_path["/other"])["data"]["id"] == generation_id
        with pytest.raises(Exception, match="signature"):
            fake.verified(secret, by_path["/other"])

        logged = client.get("/v1/webhooks/deliveries").json()["data"]
        assert {d["status"] for d in logged} == {"delivered"}
        assert {d["response_status"] for d in logged} == {200}
