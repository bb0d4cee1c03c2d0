"""Outgoing webhooks through the API, in process: endpoints, events, signatures verified
with the `standardwebhooks` library, retries on a clock of the test's choosing, endpoints
disabled after days of failure (and the e-mail), the address guard at registration and at
delivery, and a request's own `webhook_url`.

The receiver is a fake mounted under `/receiver` of the gateway's HTTP client; the names
the tests use resolve through a resolver of the test's (`hooks.example` is public,
`private.example` is not). The background sender is off (WEBHOOK_WORKER=false): each test
runs `runner.run_due(now=...)` itself, so every attempt happens when the test says.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from image_router.account.service import create_key
from image_router.db.session import unit_of_work
from image_router.generation.events import Finished
from image_router.kit.clock import utcnow
from image_router.privacy.erasure import erase_rows
from image_router.privacy.jobs import JobRunner
from image_router.webhooks import notices
from image_router.webhooks.notices import DisabledNotice
from tests.conftest import Gateway, _gateway
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.integration.webhook_helpers import (
    HOOK,
    IMAGE,
    OTHER,
    VIDEO,
    Hooks,
    hooks_gateway,
)


@pytest.fixture
async def hooks(db_url: str, tmp_path: Path) -> AsyncIterator[Hooks]:
    async for made in hooks_gateway(db_url, tmp_path):
        yield made


@pytest.fixture
async def any_hooks(any_db_url: str, tmp_path: Path) -> AsyncIterator[Hooks]:
    async for made in hooks_gateway(any_db_url, tmp_path):
        yield made


# ------------------------------------------------------------------------ the events


async def test_a_completed_generation_is_delivered_signed_per_standard_webhooks(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    _, key = await gw.account("1")
    endpoint = await any_hooks.register(key)
    assert endpoint["secret"].startswith("whsec_")
    # b64_json in the answer; the event still carries only the stored output's URL.
    answer = await gw.post(
        IMAGE, key, json={"model": "test/test", "prompt": "a fox", "response_format": "b64_json"}
    )
    assert answer.status_code == 200, answer.text
    assert await any_hooks.run() == 1

    sent = any_hooks.receiver.last
    assert sent.path == "/receiver/hook"
    assert sent.headers["host"] == "hooks.example"
    assert sent.headers["webhook-id"].startswith("msg_")
    event = any_hooks.receiver.verified(endpoint["secret"])
    assert event["type"] == "generation.completed"
    data = event["data"]
    assert data["id"] == answer.headers["x-generation-id"]
    assert data["model"] == "test/test"
    assert data["status"] == "success"
    assert data["cost"] == answer.json()["cost"]
    assert data["error"] is None
    [item] = data["data"]
    assert set(item) == {"url"}
    assert item["url"].startswith("http://gateway.test/files/")
    assert b"b64_json" not in sent.body and b"a fox" not in sent.body
    # Another secret does not verify it.
    with pytest.raises(Exception, match="signature"):
        any_hooks.receiver.verified("whsec_" + base64.b64encode(b"x" * 32).decode())

    [logged] = await any_hooks.deliveries(key)
    assert logged["status"] == "delivered"
    assert logged["attempts"] == 1 and logged["response_status"] == 200
    assert logged["id"] == sent.headers["webhook-id"]


async def test_a_failed_generation_and_a_video_have_their_own_events(hooks: Hooks) -> None:
    gw = hooks.gw
    account, key = await gw.account("1")
    endpoint = await hooks.register(key)
    gw.openai.fail_next(500)
    failed = await gw.post(
        IMAGE, key, json={"model": "openai/dall-e-2", "prompt": "x", "size": "1024x1024"}
    )
    assert failed.status_code == 502
    [failed_row] = await gw.generations()
    video = await gw.post(VIDEO, key, json={"model": "ir/test-video", "prompt": "waves"})
    assert video.status_code == 200, video.text
    assert await hooks.run() == 2
    events = {
        e["type"]: e
        for e in (hooks.receiver.verified(endpoint["secret"], r) for r in hooks.receiver.requests)
    }
    assert set(events) == {"generation.failed", "video.completed"}
    error = events["generation.failed"]["data"]
    assert error["id"] == failed_row["id"]
    assert error["status"] == "error" and error["cost"] == 0 and error["data"] == []
    assert error["error"]["message"] == failed.json()["error"]["message"]
    assert error["error"]["code"] == failed.json()["error"]["code"]
    assert events["video.completed"]["data"]["data"][0]["url"] == video.json()["data"][0]["url"]
    assert await gw.balance(account) == 10_000 - 0  # both free or not charged


async def test_without_endpoints_nothing_is_recorded(hooks: Hooks) -> None:
    _, key = await hooks.gw.account("1")
    response = await hooks.gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    assert response.status_code == 200
    assert await hooks.gw.rows("SELECT id FROM webhook_deliveries") == []


async def test_a_webhook_failure_changes_neither_the_answer_nor_the_charge(hooks: Hooks) -> None:
    class Broken:
        async def check_url(self, url: str) -> None:
            return None

        def expects(self, account_id: str, webhook_url: str | None) -> bool:
            return True

        async def completed(self, finished: Finished) -> None:
            raise RuntimeError("the webhooks are down")

        async def failed(self, finished: Finished) -> None:
            raise RuntimeError("the webhooks are down")

    gw = hooks.gw
    gw.res.generator = replace(gw.res.generator, events=Broken())
    account, key = await gw.account("1")
    ok = await gw.post(
        IMAGE, key, json={"model": "openai/dall-e-2", "prompt": "x", "size": "1024x1024"}
    )
    assert ok.status_code == 200, ok.text
    charged = 10_000 - await gw.balance(account)
    assert charged > 0 and await gw.ledger_sum(account) == await gw.balance(account)
    gw.openai.fail_next(500)
    failed = await gw.post(
        IMAGE, key, json={"model": "openai/dall-e-2", "prompt": "x", "size": "1024x1024"}
    )
    assert failed.status_code == 502
    assert 10_000 - await gw.balance(account) == charged  # the failure was not charged


# ----------------------------------------------------------------- retries and back-off


async def test_a_500_is_retried_with_doubling_waits_until_it_succeeds(any_hooks: Hooks) -> None:
    gw, receiver = any_hooks.gw, any_hooks.receiver
    _, key = await gw.account("1")
    endpoint = await any_hooks.register(key)
    assert (
        await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    ).status_code == 200
    receiver.fail_next(500, "down", times=2)
    start = utcnow()

    assert await any_hooks.run(start) == 1  # first attempt: 500
    [first] = await any_hooks.deliveries(key)
    assert (first["status"], first["attempts"], first["response_status"]) == ("pending", 1, 500)
    assert _near(_at(first["next_attempt_at"]) - start, timedelta(seconds=30))

    assert await any_hooks.run(start + timedelta(seconds=29)) == 0  # not due yet
    assert await any_hooks.run(start + timedelta(seconds=31)) == 1  # second attempt: 500
    [second] = await any_hooks.deliveries(key)
    assert second["attempts"] == 2
    waited = _at(second["next_attempt_at"]) - (start + timedelta(seconds=31))
    assert _near(waited, timedelta(seconds=60))

    assert await any_hooks.run(start + timedelta(seconds=92)) == 1  # third: delivered
    [done] = await any_hooks.deliveries(key)
    assert (done["status"], done["attempts"], done["response_status"]) == ("delivered", 3, 200)
    assert done["next_attempt_at"] is None
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert ids == {done["id"]}  # one message, three attempts
    for recorded in receiver.requests:
        receiver.verified(endpoint["secret"], recorded)
    assert await any_hooks.run(start + timedelta(hours=1)) == 0


async def test_a_delivery_is_given_up_after_its_retry_window(hooks: Hooks) -> None:
    _, key = await hooks.gw.account("1")
    await hooks.register(key)
    await hooks.gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    hooks.receiver.fail_next(503, times=100)
    start = utcnow()
    now = start
    while True:
        assert await hooks.run(now) == 1
        [row] = await hooks.deliveries(key)
        if row["status"] != "pending":
            break
        now = _at(row["next_attempt_at"]) + timedelta(milliseconds=1)  # the API's ms
        assert now <= start + timedelta(hours=24, seconds=1)
    assert row["status"] == "failed"
    assert row["last_error"] == "HTTP 503"
    # The last try was at the window's end, after waits that doubled up to 4 hours.
    assert _near(now - start, timedelta(hours=24))
    assert row["attempts"] == len(hooks.receiver.requests) >= 10


async def test_a_timeout_is_a_failure_retried(hooks: Hooks) -> None:
    hooks.gw.res.webhooks = _with_policy(hooks, timeout_s=0.2)
    _, key = await hooks.gw.account("1")
    await hooks.register(key)
    await hooks.gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    hooks.receiver.hang_next(2)
    assert await hooks.run() == 1
    [row] = await hooks.deliveries(key)
    assert row["status"] == "pending" and row["response_status"] is None
    assert "no answer within 0.2 s" in row["last_error"]


# ------------------------------------------------- endpoints disabled after days of failure


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, to: str, subject: str, body: str) -> None:
        self.sent.append((to, subject, body))


async def test_an_endpoint_failing_for_three_days_is_disabled_and_the_account_told(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    _, key = await gw.account("1", email="hooks-owner@example.com")
    endpoint = await any_hooks.register(key)
    any_hooks.receiver.fail_next(500, times=100)
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    start = utcnow()
    assert await any_hooks.run(start) == 1  # failing from now on

    # Two days on, still failing: not yet disabled.
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "y"})
    assert await any_hooks.run(start + timedelta(days=2)) == 2
    assert (await _endpoint(gw, key))["disabled"] is False

    # Three days and a minute on, the next event fails too: the endpoint is disabled, its
    # waiting deliveries closed, the e-mail queued.
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "z"})
    assert await any_hooks.run(start + timedelta(days=3, minutes=1)) == 1
    listed = await _endpoint(gw, key)
    assert listed["disabled"] is True
    assert "failed" in listed["disabled_reason"] and "HTTP 500" in listed["disabled_reason"]
    assert all(d["status"] == "failed" for d in await any_hooks.deliveries(key))
    assert await any_hooks.run(start + timedelta(days=4)) == 0

    outbox = Outbox()
    notice = DisabledNotice(gw.res.engine, gw.res.vault, outbox, "http://site.test")
    mailing = JobRunner(gw.res.engine, {notices.JOB_KIND: notice.run})
    assert await mailing.run_due(now=start + timedelta(days=4)) == 1
    [(to, subject, body)] = outbox.sent
    assert to == "hooks-owner@example.com"
    assert subject == notices.SUBJECT
    assert HOOK in body and "http://site.test/account/webhooks" in body

    # Disabled: new events are not recorded for it; enabled again, they are.
    before = len(await any_hooks.deliveries(key))
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "later"})
    assert len(await any_hooks.deliveries(key)) == before
    enabled = await gw.post(f"/v1/webhooks/{endpoint['id']}/enable", key)
    assert enabled.status_code == 200, enabled.text
    assert (await _endpoint(gw, key))["disabled"] is False
    any_hooks.receiver.reset()
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "again"})
    assert await any_hooks.run() == 1
    assert (await any_hooks.deliveries(key))[0]["status"] == "delivered"


async def test_a_success_resets_the_failing_clock(hooks: Hooks) -> None:
    gw = hooks.gw
    _, key = await gw.account("1")
    await hooks.register(key)
    hooks.receiver.fail_next(500)
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    start = utcnow()
    await hooks.run(start)
    assert (await _endpoint(gw, key))["failing_since"] is not None
    await hooks.run(start + timedelta(seconds=31))  # delivered
    assert (await _endpoint(gw, key))["failing_since"] is None
    hooks.receiver.fail_next(500)
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "y"})
    await hooks.run(start + timedelta(days=3, minutes=1))
    assert (await _endpoint(gw, key))["disabled"] is False  # failing for a moment only


# ------------------------------------------------------------------ the address guard


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.1.2.3/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "https://private.example/hook",
        "https://nowhere.example/hook",
    ],
)
async def test_registration_refuses_private_and_unresolvable_addresses(
    hooks: Hooks, url: str
) -> None:
    _, key = await hooks.gw.account("1")
    response = await hooks.gw.post("/v1/webhooks", key, json={"url": url})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "webhook_url_refused" and error["param"] == "url"
    assert "public address" in error["message"] or "could not resolve" in error["message"]
    assert await hooks.gw.rows("SELECT id FROM webhook_endpoints") == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "url"),
        ({"url": "ftp://hooks.example/x"}, "url"),
        ({"url": "https://user:pw@hooks.example/x"}, "url"),
        ({"url": 5}, "url"),
        ({"url": HOOK, "description": "x" * 201}, "description"),
        ({"url": HOOK, "secret": "mine"}, "secret"),
    ],
)
async def test_registration_refuses_bad_bodies(
    hooks: Hooks, body: dict[str, Any], param: str
) -> None:
    _, key = await hooks.gw.account("1")
    response = await hooks.gw.post("/v1/webhooks", key, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_delivery_checks_the_address_again(hooks: Hooks) -> None:
    _, key = await hooks.gw.account("1")
    await hooks.register(key)
    hooks.dns["hooks.example"] = ["192.168.1.20"]  # the name now points inside
    await hooks.gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    assert await hooks.run() == 1
    assert hooks.receiver.requests == []
    [row] = await hooks.deliveries(key)
    assert row["status"] == "pending"
    assert "not a public address (192.168.1.20)" in row["last_error"]


async def test_private_addresses_are_allowed_when_the_operator_says_so(
    db_url: str, tmp_path: Path
) -> None:
    receiver = WebhookReceiver()
    overrides = {"webhook_worker": False, "allow_private_upstreams": True}
    async for gw in _gateway(db_url, tmp_path, overrides, {"receiver": receiver}):
        _, key = await gw.account("1")
        created = await gw.post("/v1/webhooks", key, json={"url": "http://127.0.0.1/receiver/hook"})
        assert created.status_code == 201, created.text
        await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
        assert await gw.res.webhooks.runner.run_due() == 1
        assert receiver.verified(created.json()["secret"])["type"] == "generation.completed"


# ----------------------------------------------------------- a request's own webhook_url


async def test_a_request_webhook_url_gets_its_event_signed_with_the_request_secret(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    _, key = await gw.account("1")
    answer = await gw.post(
        IMAGE, key, json={"model": "test/test", "prompt": "x", "webhook_url": OTHER}
    )
    assert answer.status_code == 200, answer.text
    multipart = await gw.post(
        IMAGE, key, data={"model": "test/test", "prompt": "y", "webhook_url": HOOK}
    )
    assert multipart.status_code == 200, multipart.text
    assert await any_hooks.run() == 2
    secret = (
        await gw.client.get(
            "/v1/webhooks/default/secret", headers={"Authorization": f"Bearer {key}"}
        )
    ).json()["key"]
    by_path = {r.path: any_hooks.receiver.verified(secret, r) for r in any_hooks.receiver.requests}
    assert by_path["/receiver/other"]["data"]["id"] == answer.headers["x-generation-id"]
    assert by_path["/receiver/hook"]["data"]["id"] == multipart.headers["x-generation-id"]
    logged = await any_hooks.deliveries(key)
    assert {d["endpoint_id"] for d in logged} == {None}
    # The same secret is read again, not made anew.
    again = await gw.client.get(
        "/v1/webhooks/default/secret", headers={"Authorization": f"Bearer {key}"}
    )
    assert again.json()["key"] == secret


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/hook", "https://private.example/x", "not a url", "ftp://a/b"]
)
async def test_a_refused_request_webhook_url_is_a_400_before_any_charge(
    hooks: Hooks, url: str
) -> None:
    gw = hooks.gw
    account, key = await gw.account("1")
    response = await gw.post(
        IMAGE,
        key,
        json={"model": "openai/dall-e-2", "prompt": "x", "size": "1024x1024", "webhook_url": url},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "webhook_url"
    assert await gw.balance(account) == 10_000
    assert await gw.generations() == []
    assert gw.openai.requests == []


# ----------------------------------------------------------------------- the API


async def test_endpoints_are_listed_without_secrets_and_deleted(any_hooks: Hooks) -> None:
    gw = any_hooks.gw
    _, key = await gw.account("1")
    _, other_key = await gw.account("1")
    first = await any_hooks.register(key)
    created = await gw.post(
        "/v1/webhooks", key, json={"url": OTHER, "description": "billing system"}
    )
    assert created.status_code == 201
    listed = await gw.client.get("/v1/webhooks", headers={"Authorization": f"Bearer {key}"})
    data = listed.json()["data"]
    assert [e["url"] for e in data] == [HOOK, OTHER]
    assert data[1]["description"] == "billing system"
    assert all("secret" not in e for e in data)
    assert first["secret"] not in listed.text

    # Another account sees none of them and cannot delete them.
    theirs = await gw.client.get("/v1/webhooks", headers={"Authorization": f"Bearer {other_key}"})
    assert theirs.json()["data"] == []
    refused = await gw.client.delete(
        f"/v1/webhooks/{first['id']}", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert refused.status_code == 404

    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    deleted = await gw.client.delete(
        f"/v1/webhooks/{first['id']}", headers={"Authorization": f"Bearer {key}"}
    )
    assert deleted.json() == {"id": first["id"], "deleted": True}
    remaining = await gw.client.get("/v1/webhooks", headers={"Authorization": f"Bearer {key}"})
    assert [e["url"] for e in remaining.json()["data"]] == [OTHER]
    assert await any_hooks.run() == 1  # only the remaining endpoint's delivery
    assert any_hooks.receiver.last.path == "/receiver/other"


async def test_resend_sends_the_same_message_again(hooks: Hooks) -> None:
    gw = hooks.gw
    _, key = await gw.account("1")
    endpoint = await hooks.register(key)
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    await hooks.run()
    [delivery] = await hooks.deliveries(key)
    resent = await gw.post(f"/v1/webhooks/deliveries/{delivery['id']}/resend", key)
    assert resent.status_code == 202, resent.text
    assert await hooks.run() == 1
    first, second = hooks.receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    hooks.receiver.verified(endpoint["secret"], second)
    [again] = await hooks.deliveries(key)
    assert again["status"] == "delivered" and again["attempts"] == 2
    missing = await gw.post("/v1/webhooks/deliveries/msg_nothing/resend", key)
    assert missing.status_code == 404


async def test_endpoints_per_account_are_limited(db_url: str, tmp_path: Path) -> None:
    overrides = {"webhook_worker": False, "allow_private_upstreams": True}
    async for gw in _gateway(db_url, tmp_path, overrides | {"webhook_max_endpoints": 2}):
        _, key = await gw.account("1")
        for n in range(2):
            made = await gw.post("/v1/webhooks", key, json={"url": f"http://127.0.0.1/{n}"})
            assert made.status_code == 201
        refused = await gw.post("/v1/webhooks", key, json={"url": "http://127.0.0.1/3"})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "too_many_webhook_endpoints"


async def test_management_keys_and_missing_credentials_are_refused(hooks: Hooks) -> None:
    gw = hooks.gw
    assert (await gw.client.get("/v1/webhooks")).status_code == 401
    account, _ = await gw.account("1")
    async with unit_of_work(gw.res.engine) as conn:
        _, manager = await create_key(conn, account, "m", management=True)
    refused = await gw.post("/v1/webhooks", manager, json={"url": HOOK})
    assert refused.status_code == 403


async def test_deleted_accounts_lose_their_webhooks(hooks: Hooks) -> None:
    gw = hooks.gw
    account, key = await gw.account("1")
    await hooks.register(key)
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x", "webhook_url": OTHER})
    await gw.execute("UPDATE accounts SET status = 'deletion_pending' WHERE id = :a", a=account)
    async with unit_of_work(gw.res.engine) as conn:
        await erase_rows(conn, gw.res.vault, account, {}, [])
    for table in ("webhook_endpoints", "webhook_deliveries", "webhook_secrets"):
        assert await gw.rows(f"SELECT * FROM {table}") == [], table


# ----------------------------------------------------------------------- helpers


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _with_policy(hooks: Hooks, **changes: Any) -> Any:
    webhooks = hooks.gw.res.webhooks
    policy = replace(webhooks.policy, **changes)
    return replace(
        webhooks,
        policy=policy,
        events=replace(webhooks.events, policy=policy),
        runner=replace(webhooks.runner, policy=policy),
    )


async def _endpoint(gw: Gateway, key: str) -> dict[str, Any]:
    listed = await gw.client.get("/v1/webhooks", headers={"Authorization": f"Bearer {key}"})
    [endpoint] = listed.json()["data"]
    found: dict[str, Any] = endpoint
    return found


def _near(actual: timedelta, expected: timedelta) -> bool:
    return abs(actual - expected) <= timedelta(seconds=2)
