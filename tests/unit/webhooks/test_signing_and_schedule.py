"""Standard Webhooks signatures as the `standardwebhooks` library computes and checks them,
the retry schedule, and the payload (URLs only, never bytes or prompts)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from image_router.generation.events import Finished
from image_router.webhooks.events import payload
from image_router.webhooks.policy import MAX_RETRY_DELAY, WebhookPolicy
from image_router.webhooks.signing import new_secret, signature, signed_headers

BODY = '{"type":"generation.completed","data":{"id":"g1"}}'


def test_our_signature_is_the_librarys() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    now = int(time.time())
    expected = Webhook(secret).sign("msg_1", datetime.fromtimestamp(now, UTC), BODY)
    assert signature(secret, "msg_1", now, BODY) == expected
    headers = signed_headers(secret, "msg_1", now, BODY)
    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h | {"webhook-id": "msg_2"}, b),
        lambda h, b: (h, b.replace("g1", "g2")),
        lambda h, b: (h | {"webhook-timestamp": str(int(h["webhook-timestamp"]) - 1)}, b),
    ],
)
def test_a_changed_id_body_or_timestamp_does_not_verify(tamper: object) -> None:
    secret = new_secret()
    headers = signed_headers(secret, "msg_1", int(time.time()), BODY)
    changed_headers, changed_body = tamper(headers, BODY)  # type: ignore[operator]
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(changed_body, changed_headers)


def test_retries_double_up_to_four_hours_and_end_with_the_window() -> None:
    policy = WebhookPolicy(retry_first=timedelta(seconds=30), retry_window=timedelta(hours=24))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    until = start + policy.retry_window
    now, waits, attempts = start, [], 0
    while True:
        attempts += 1
        retry = policy.next_attempt(attempts, now, until)
        if retry is None:
            break
        waits.append(retry - now)
        now = retry
    assert waits[:4] == [timedelta(seconds=s) for s in (30, 60, 120, 240)]
    assert max(waits) == MAX_RETRY_DELAY
    assert now == until  # the last try is at the window's end
    assert attempts == len(waits) + 1


def test_the_payload_names_urls_only() -> None:
    finished = Finished(
        generation_id="g1",
        account_id="a1",
        modality="video",
        model="ir/test-video",
        cost=400,
        webhook_url=None,
        latency_ms=12,
        urls=("https://cdn.test/g1.mp4", None),
    )
    body = json.loads(payload(finished, ok=True, timestamp="2026-01-01T00:00:00.000Z"))
    assert body["type"] == "video.completed"
    assert body["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert body["data"]["cost"] == 0.04
    assert body["data"]["data"] == [{"url": "https://cdn.test/g1.mp4"}, {"url": None}]
    failed = json.loads(
        payload(
            Finished("g2", "a1", "image", "m", 0, None, error={"message": "no", "code": "x"}),
            ok=False,
            timestamp="t",
        )
    )
    assert failed["type"] == "generation.failed"
    assert failed["data"]["error"] == {"message": "no", "code": "x"}
    assert failed["data"]["data"] == [] and failed["data"]["status"] == "error"
