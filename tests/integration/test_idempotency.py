"""`Idempotency-Key` (issue #14 §1): a retry never calls the vendor or charges twice.

Concurrent duplicates, a key reused for another request, a repeat that waits for the
first or is told to come back, stored failures, answers that ask for a retry, keep-alive
answers, expiry and the purge, leases of requests that died, and key creation — on SQLite
and PostgreSQL where the database's concurrency is what is being tested.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.idempotency.keys import key_hash, new_fingerprint
from image_router.idempotency.store import Answer, Claim
from image_router.kit.clock import utcnow
from tests.conftest import Gateway
from tests.fakes.openai import image_bytes
from tests.fakes.stripe import FakeStripe
from tests.integration.test_account_api import signed_in_browser

IMAGE = "/v1/openai/images/generations"
DALLE2 = {"model": "openai/dall-e-2", "prompt": "a lighthouse", "size": "1024x1024"}
PRICE = 160  # credits: $0.016
START = 10_000  # $1


def _headers(key: str, idempotency_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}


async def _post(gw: Gateway, key: str, idem: str, body: Any = DALLE2, path: str = IMAGE) -> Any:
    return await gw.client.post(path, headers=_headers(key, idem), json=body)


async def _rows(gw: Gateway) -> list[dict[str, Any]]:
    return await gw.rows("SELECT * FROM idempotency_keys")


async def test_twenty_concurrent_duplicates_make_one_call_and_one_charge(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    account, key = await gw.account("1")
    gw.openai.delay = 0.5  # every duplicate arrives while the first is at the vendor

    answers = await asyncio.gather(*(_post(gw, key, "retry-me-1") for _ in range(20)))

    assert len(gw.openai.requests) == 1
    assert [a.status_code for a in answers] == [200] * 20
    assert len({a.content for a in answers}) == 1  # identical bodies, byte for byte
    assert len({a.headers["x-generation-id"] for a in answers}) == 1
    replayed = [a for a in answers if a.headers.get("idempotent-replayed") == "true"]
    assert len(replayed) == 19
    assert await gw.balance(account) == await gw.ledger_sum(account) == START - PRICE
    assert len(await gw.generations()) == 1
    [row] = await _rows(gw)
    assert row["state"] == "done" and row["status"] == 200
    assert b"b64_json" not in bytes(row["body_enc"])  # sealed under the account's key


async def test_the_same_key_for_another_request_is_422(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    assert (await _post(gateway, key, "k-422")).status_code == 200
    other = await _post(gateway, key, "k-422", DALLE2 | {"prompt": "a different lighthouse"})
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    elsewhere = await _post(gateway, key, "k-422", path="/v1/openai/images/edits")
    assert elsewhere.status_code == 422  # the path is part of the request
    assert len(gateway.openai.requests) == 1


async def test_keys_are_scoped_per_account(gateway: Gateway) -> None:
    first, key_a = await gateway.account("1")
    second, key_b = await gateway.account("1")
    a = await _post(gateway, key_a, "shared-name")
    b = await _post(gateway, key_b, "shared-name")
    assert a.status_code == b.status_code == 200
    assert a.headers["x-generation-id"] != b.headers["x-generation-id"]
    assert "idempotent-replayed" not in b.headers
    assert len(gateway.openai.requests) == 2
    assert await gateway.balance(first) == await gateway.balance(second) == START - PRICE
    stored = {r["key_hash"] for r in await _rows(gateway)}
    assert stored == {key_hash(first, "shared-name"), key_hash(second, "shared-name")}


@pytest.mark.parametrize(
    "value", ["", "x" * 256, "tab\there", "caf\u00e9"], ids=["empty", "long", "tab", "accent"]
)
async def test_a_malformed_key_is_400_before_anything_runs(gateway: Gateway, value: str) -> None:
    _, key = await gateway.account("1")
    headers = [("Authorization", f"Bearer {key}"), ("Idempotency-Key", value)]
    encoded = [(k.encode(), v.encode("utf-8")) for k, v in headers]
    response = await gateway.client.post(IMAGE, headers=encoded, json=DALLE2)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_idempotency_key"
    assert gateway.openai.requests == [] and await _rows(gateway) == []
    assert (await _post(gateway, key, "x" * 255)).status_code == 200  # the longest allowed


async def test_a_repeat_waits_for_the_first_and_gets_its_answer(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    gateway.openai.delay = 1.0
    first = asyncio.ensure_future(_post(gateway, key, "wait-for-me"))
    await asyncio.sleep(0.3)
    second = await _post(gateway, key, "wait-for-me")
    assert second.status_code == 200 and second.headers["idempotent-replayed"] == "true"
    assert second.content == (await first).content
    assert len(gateway.openai.requests) == 1


@pytest.mark.parametrize("gateway_overrides", [{"idempotency_wait_s": 0.3}])
async def test_a_repeat_past_the_wait_is_409_with_retry_after(gateway: Gateway) -> None:
    account, key = await gateway.account("1")
    gateway.openai.delay = 1.5
    first = asyncio.ensure_future(_post(gateway, key, "slow-one"))
    await asyncio.sleep(0.2)
    busy = await _post(gateway, key, "slow-one")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_key_in_progress"
    assert busy.headers["retry-after"] == "1"
    assert (await first).status_code == 200
    later = await _post(gateway, key, "slow-one")
    assert later.status_code == 200 and later.headers["idempotent-replayed"] == "true"
    assert len(gateway.openai.requests) == 1
    assert await gateway.balance(account) == START - PRICE


async def test_final_failures_are_stored_and_replayed(gateway: Gateway) -> None:
    account, key = await gateway.account("1")
    refused = DALLE2 | {"prompt": "a forbidden-content scene"}
    first = await _post(gateway, key, "refused", refused)
    assert first.status_code == 400 and first.json()["error"]["type"] == "upstream_error"
    again = await _post(gateway, key, "refused", refused)
    assert (again.status_code, again.content) == (400, first.content)
    assert again.headers["idempotent-replayed"] == "true"
    assert len(gateway.openai.requests) == 1
    assert await gateway.balance(account) == START  # never charged

    # A refusal before the claim (validation) is answered afresh and not stored.
    invalid = DALLE2 | {"size": "8x8"}
    assert (await _post(gateway, key, "invalid", invalid)).status_code == 400
    assert [r["status"] for r in await _rows(gateway)] == [400]


async def test_an_answer_asking_for_a_retry_is_not_stored(gateway: Gateway) -> None:
    account, key = await gateway.account("1")
    gateway.openai.fail_next(429, headers={"Retry-After": "0"}, times=2)
    busy = await _post(gateway, key, "busy")
    assert busy.status_code == 503 and "retry-after" in busy.headers
    assert await _rows(gateway) == []  # released: the retry runs again
    retried = await _post(gateway, key, "busy")
    assert retried.status_code == 200 and "idempotent-replayed" not in retried.headers
    assert len(gateway.openai.requests) == 3
    assert await gateway.balance(account) == START - PRICE


@pytest.mark.parametrize(
    "gateway_overrides", [{"heartbeat_after_s": 0.2, "heartbeat_interval_s": 0.1}]
)
async def test_a_keep_alive_answer_is_stored_as_sent(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    gateway.openai.delay = 0.8
    first = await _post(gateway, key, "streamed")
    assert first.status_code == 200 and first.content.startswith(b" ")
    again = await _post(gateway, key, "streamed")
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content.lstrip(b" ")  # the final JSON
    assert again.headers["x-generation-id"] == first.headers["x-generation-id"]

    # An error after the switch was sent as 200 + the error JSON: replayed the same way.
    refused = DALLE2 | {"prompt": "forbidden-content, slowly"}
    failed = await _post(gateway, key, "streamed-error", refused)
    assert failed.status_code == 200 and b"upstream_error" in failed.content
    replay = await _post(gateway, key, "streamed-error", refused)
    assert (replay.status_code, replay.content) == (200, failed.content.lstrip(b" "))
    assert len(gateway.openai.requests) == 2


async def test_answers_expire_and_the_purge_deletes_them(any_gateway: Gateway) -> None:
    gw = any_gateway
    account, key = await gw.account("1")
    assert (await _post(gw, key, "old")).status_code == 200
    assert (await _post(gw, key, "live")).status_code == 200
    # "old" was answered more than RETENTION_IDEMPOTENCY_HOURS (24) ago.
    await gw.execute(
        "UPDATE idempotency_keys SET expires_at = :past WHERE key_hash = :k",
        past=utcnow() - timedelta(minutes=1),
        k=key_hash(account, "old"),
    )
    # Not purged yet: an expired answer is not replayed; the request runs afresh.
    fresh = await _post(gw, key, "old")
    assert fresh.status_code == 200 and "idempotent-replayed" not in fresh.headers
    assert len(gw.openai.requests) == 3

    report = await gw.res.retention.purge(now=utcnow() + timedelta(hours=25))
    assert report.idempotency_keys == 2
    assert await _rows(gw) == []
    assert (await gw.res.retention.purge(dry_run=True)).idempotency_keys == 0


async def test_the_purge_keeps_claims_whose_request_may_still_run(gateway: Gateway) -> None:
    account, _ = await gateway.account("1")
    store = gateway.res.idempotency
    claim = await store.begin(account, "h" * 64, "f" * 64, lease_s=3600)
    assert isinstance(claim, Claim)
    await gateway.execute(
        "UPDATE idempotency_keys SET expires_at = :past", past=utcnow() - timedelta(minutes=1)
    )
    assert (await gateway.res.retention.purge()).idempotency_keys == 0  # its lease stands
    await store.finish(claim, Answer(200, {}, b"{}"))
    assert (await gateway.res.retention.purge()).idempotency_keys == 1


@pytest.mark.parametrize("gateway_overrides", [{"idempotency_wait_s": 0.2}])
async def test_a_claim_whose_lease_passed_is_taken_over(gateway: Gateway) -> None:
    """A request that died (its worker killed) leaves its claim `in_progress`: a retry is
    409 while the lease stands, then runs afresh once it has passed."""
    account, key = await gateway.account("1")
    body = orjson.dumps(DALLE2)
    headers = _headers(key, "orphan") | {"Content-Type": "application/json"}
    # The dead request: claimed as the endpoint would (same fingerprint), never finished.
    digest = new_fingerprint("POST", IMAGE)
    digest.update(body)
    claim = await gateway.res.idempotency.begin(
        account, key_hash(account, "orphan"), digest.hexdigest(), lease_s=3600
    )
    assert isinstance(claim, Claim)

    busy = await gateway.client.post(IMAGE, headers=headers, content=body)
    assert busy.status_code == 409
    assert gateway.openai.requests == []

    await gateway.execute(
        "UPDATE idempotency_keys SET locked_until = :past", past=utcnow() - timedelta(seconds=1)
    )
    taken = await gateway.client.post(IMAGE, headers=headers, content=body)
    assert taken.status_code == 200 and "idempotent-replayed" not in taken.headers
    await gateway.res.idempotency.finish(claim, Answer(500, {}, b"{}"))  # the ghost: ignored
    replay = await gateway.client.post(IMAGE, headers=headers, content=body)
    assert replay.content == taken.content
    assert len(gateway.openai.requests) == 1


async def test_multipart_bodies_are_fingerprinted_without_their_boundary(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    png = image_bytes("png")
    fields = {"model": "openai/gpt-image-1", "prompt": "add a hat", "quality": "low"}
    path = "/v1/openai/images/edits"

    async def edit(image: bytes) -> httpx.Response:
        # httpx draws a new random boundary for each request, as SDKs do on a retry.
        files = {"image": ("a.png", image, "image/png")}
        return await gateway.client.post(
            path, headers=_headers(key, "edit-1"), data=fields, files=files
        )

    first = await edit(png)
    assert first.status_code == 200, first.text
    again = await edit(png)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert len(gateway.openai.requests) == 1
    other = await edit(png + b"\0")  # another image under the same key
    assert other.status_code == 422


async def test_creating_a_key_is_replayed_with_the_same_key(any_gateway: Gateway) -> None:
    """Stripe replays the answer as it was; our secret is shown once, so the replay (to the
    same account, within the retention) is the one other time it is shown."""
    gw = any_gateway
    async with unit_of_work(gw.res.engine) as conn:
        account = await accounts.create_account(conn, gw.res.vault, "keys@example.com")
        _, manager = await accounts.create_key(conn, account.id, "manager", management=True)
    new = {"name": "ci", "spend_limit": "5"}
    made = await asyncio.gather(
        *(
            gw.client.post("/v1/api-keys", headers=_headers(manager, "mk-1"), json=new)
            for _ in range(5)
        )
    )
    assert [m.status_code for m in made] == [201] * 5
    assert len({(m.json()["id"], m.json()["key"]) for m in made}) == 1
    listed = (
        await gw.client.get("/v1/api-keys", headers={"Authorization": f"Bearer {manager}"})
    ).json()["data"]
    assert [k["name"] for k in listed].count("ci") == 1
    other = await gw.client.post(
        "/v1/api-keys", headers=_headers(manager, "mk-1"), json=new | {"name": "cd"}
    )
    assert other.status_code == 422


async def test_the_owner_creating_a_key_is_replayed(gateway: Gateway) -> None:
    _, csrf = await signed_in_browser(gateway, "owner-idem@example.com")
    headers = csrf | {"Idempotency-Key": "laptop-key"}
    first = await gateway.client.post("/v1/account/api-keys", json={"name": "x"}, headers=headers)
    again = await gateway.client.post("/v1/account/api-keys", json={"name": "x"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    listed = (await gateway.client.get("/v1/account/api-keys")).json()["data"]
    assert [k["name"] for k in listed] == ["x"]


async def test_a_checkout_is_replayed_with_the_same_session(stripe_gateway: Gateway) -> None:
    gw = stripe_gateway
    _, key = await gw.account()
    stripe = gw.fakes["stripe"]
    assert isinstance(stripe, FakeStripe)
    body = {"amount_usd": "10.00"}
    first = await _post(gw, key, "topup-1", body, path="/v1/billing/checkout")
    again = await _post(gw, key, "topup-1", body, path="/v1/billing/checkout")
    assert first.status_code == again.status_code == 200, first.text
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert len(stripe.session_requests) == 1
    assert len(await gw.rows("SELECT id FROM topups")) == 1
    more = await _post(gw, key, "topup-1", {"amount_usd": "20.00"}, path="/v1/billing/checkout")
    assert more.status_code == 422


async def test_an_abandoned_generation_frees_its_key_unless_it_was_charged(
    gateway: Gateway,
) -> None:
    """A client hanging up cancels its generation: nothing charged, the key is released
    for the retry; charged already (it hung up during the settle), the key keeps a final
    answer naming the generation, so the retry cannot charge again."""
    account, key = await gateway.account("1")
    store = gateway.res.idempotency
    claim = await store.begin(account, "a" * 64, "f" * 64, lease_s=60)
    assert isinstance(claim, Claim)
    await store.abandon(claim, "no-such-generation")
    assert await _rows(gateway) == []

    made = await gateway.post(IMAGE, key, json=DALLE2)
    generation_id = made.headers["x-generation-id"]
    claim = await store.begin(account, "b" * 64, "f" * 64, lease_s=60)
    assert isinstance(claim, Claim)
    await store.abandon(claim, generation_id)
    kept = await store.begin(account, "b" * 64, "f" * 64, lease_s=60)
    assert isinstance(kept, Answer) and kept.status == 500
    assert orjson.loads(kept.body)["error"]["code"] == "idempotent_answer_lost"
    assert generation_id in orjson.loads(kept.body)["error"]["message"]
