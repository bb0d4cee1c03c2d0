"""The privacy rights over this round's account tables, on SQLite and PostgreSQL: webhook
endpoints, their secrets and deliveries, job rows (`generation_jobs`) and idempotency keys.

- Export (DSR-1): each has its member in the ZIP; no signing secret, no idempotency key and
  no stored answer is in it.
- Erasure (DSR-2): their rows go with the account; a delivery still pending is never sent,
  and the job resumer finds nothing of the account to take up (and makes it no new key).
- Retention (RET-1): the purge deletes deliveries after WEBHOOK_LOG_DAYS (never one that
  may still be sent), stored job answers with the outputs, job rows whose usage row is
  gone, and the webhook rows of a closed account; a legal hold keeps them all.

Webhooks go to the receiver fake mounted in the gateway's HTTP client (webhook_helpers);
the background sender is off, so every delivery happens when a test runs it.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import time
import zipfile
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from image_router.db.session import unit_of_work
from image_router.db.tables import GenerationJob
from image_router.errors import NotFound
from image_router.idempotency.keys import key_hash
from image_router.kit.clock import utcnow
from image_router.privacy import erasure, restriction
from image_router.privacy.inventory import INVENTORY, Exempt
from image_router.privacy.retention import PurgeReport, RetentionPolicy, purge
from image_router.webhooks.endpoints import request_secret
from tests.conftest import Gateway
from tests.fakes.openai import openai_error
from tests.integration.webhook_helpers import HOOK, IMAGE, OTHER, Hooks, hooks_gateway

ASYNC = {"Prefer": "respond-async"}
PROMPT = "a heron in the reeds, sentinel-9c1e"
IDEMPOTENCY_KEY = "idem-key-sentinel-4b7d"
DAY = timedelta(days=1)


@pytest.fixture
async def any_hooks(any_db_url: str, tmp_path: Path) -> AsyncIterator[Hooks]:
    # Background jobs (erasure) run only when a test says so.
    async for found in hooks_gateway(any_db_url, tmp_path, {"jobs_interval_s": 3600.0}):
        jobs = found.gw.res.generation_jobs
        assert jobs is not None
        jobs.attach(found.gw.res.generator)  # async jobs tell the test's webhooks too
        yield found


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def until_succeeded(gw: Gateway, key: str, job_id: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        job = (await gw.client.get(f"/v1/jobs/{job_id}", headers=auth(key))).json()
        if job["status"] == "succeeded":
            return
        assert job["status"] in ("queued", "running"), job
        assert time.monotonic() < deadline, "the job did not finish"
        await asyncio.sleep(0.05)


class Used:
    """What `use_everything` left: the account, its key, secrets and ids."""

    def __init__(self, account_id: str, key: str) -> None:
        self.account_id, self.key = account_id, key
        self.endpoint: dict[str, Any] = {}
        self.request_secret = ""
        self.sync_id = ""
        self.job_id = ""


async def use_everything(hooks: Hooks) -> Used:
    """An endpoint, a synchronous generation sent with an Idempotency-Key, an async job
    with its own `webhook_url`, and both events delivered."""
    gw = hooks.gw
    used = Used(*await gw.account("1.00"))
    used.endpoint = await hooks.register(used.key)
    sync = await gw.post(
        IMAGE,
        used.key,
        json={"model": "test/test", "prompt": PROMPT},
        headers={"Idempotency-Key": IDEMPOTENCY_KEY},
    )
    assert sync.status_code == 200, sync.text
    used.sync_id = sync.headers["x-generation-id"]
    accepted = await gw.post(
        IMAGE,
        used.key,
        json={"model": "test/test", "prompt": PROMPT, "webhook_url": OTHER},
        headers=ASYNC,
    )
    assert accepted.status_code == 202, accepted.text
    used.job_id = accepted.json()["id"]
    await until_succeeded(gw, used.key, used.job_id)
    secret = await gw.client.get("/v1/webhooks/default/secret", headers=auth(used.key))
    used.request_secret = secret.json()["key"]
    # The sync event and the job's to the endpoint, the job's to its own webhook_url.
    assert await hooks.run() == 3
    return used


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


async def exported(gw: Gateway, account_id: str) -> dict[str, bytes]:
    async with gw.res.export.build(account_id, utcnow()) as built:
        return members(built.path.read_bytes())


async def count(gw: Gateway, table: str, account_id: str) -> int:
    [found] = await gw.rows(
        f"SELECT count(*) AS n FROM {table} WHERE account_id = :a", a=account_id
    )
    return int(found["n"])


# ----------------------------------------------------------------------------- export


async def test_the_export_holds_webhooks_jobs_and_idempotency_keys_but_no_secret(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    used = await use_everything(any_hooks)

    files = await exported(gw, used.account_id)

    # Every member the inventory names is there, and in the manifest with its checksum.
    manifest = {e["name"]: e for e in json.loads(files["manifest.json"])["files"]}
    for coverage in INVENTORY.values():
        if isinstance(coverage.export, Exempt):
            continue
        for member in coverage.export:
            if member != "generated/":
                assert member in files and member in manifest, member
                assert manifest[member]["sha256"] == hashlib.sha256(files[member]).hexdigest()

    webhooks = json.loads(files["webhooks.json"])
    [endpoint] = webhooks["endpoints"]
    assert (endpoint["id"], endpoint["url"], endpoint["disabled"]) == (
        used.endpoint["id"],
        HOOK,
        False,
    )
    assert endpoint["created_at"] and endpoint["signing_secret"].startswith("not exported")
    assert webhooks["request_secret"]["exists"] is True

    deliveries = lines(files["webhook_deliveries.jsonl"])
    assert sorted((d["url"], d["generation_id"]) for d in deliveries) == sorted(
        [(HOOK, used.sync_id), (HOOK, used.job_id), (OTHER, used.job_id)]
    )
    for delivery in deliveries:
        assert delivery["status"] == "delivered" and delivery["response_status"] == 200
        # The payload as it was sent: the event, naming the generation.
        assert delivery["payload"]["data"]["id"] == delivery["generation_id"]

    [job] = lines(files["jobs.jsonl"])
    assert (job["id"], job["origin"], job["model"], job["state"]) == (
        used.job_id,
        "async",
        "test/test",
        "succeeded",
    )
    assert job["webhook_url"] == OTHER and job["answer_stored"] is True
    assert job["finished_at"] and job["created_at"]
    assert PROMPT.encode() not in files["jobs.jsonl"]
    # The job's outputs are the usage line with its id.
    usage = {u["id"]: u for u in lines(files["usage.jsonl"])}
    assert usage[used.job_id]["output_urls"]

    [idempotent] = lines(files["idempotency_keys.jsonl"])
    assert idempotent["key_sha256"] == key_hash(used.account_id, IDEMPOTENCY_KEY)
    assert (idempotent["state"], idempotent["response_status"]) == ("done", 200)
    assert idempotent["answer_stored"] is True and idempotent["answer"].startswith("not exported")

    everything = b"\n".join(files.values())
    for secret in (used.endpoint["secret"], used.request_secret, IDEMPOTENCY_KEY):
        assert secret.encode() not in everything
        # Nor the part after the prefix (a secret re-encoded some other way).
        assert secret.split("_", 1)[-1].encode() not in everything
    readme = files["README.txt"].decode()
    for member in ("webhooks.json", "webhook_deliveries.jsonl", "jobs.jsonl"):
        assert member in readme


async def test_another_accounts_rows_are_not_in_the_export(any_hooks: Hooks) -> None:
    gw = any_hooks.gw
    await use_everything(any_hooks)
    other, _ = await gw.account()

    files = await exported(gw, other)

    assert json.loads(files["webhooks.json"])["endpoints"] == []
    assert json.loads(files["webhooks.json"])["request_secret"]["exists"] is False
    for member in ("webhook_deliveries.jsonl", "jobs.jsonl", "idempotency_keys.jsonl"):
        assert files[member] == b"", member


# ----------------------------------------------------------------------------- erasure


async def test_erasure_deletes_them_sends_nothing_more_and_resumes_nothing(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    used = await use_everything(any_hooks)
    # One more event, recorded but not yet sent when the person asks to be erased.
    again = await gw.post(IMAGE, used.key, json={"model": "test/test", "prompt": PROMPT})
    assert again.status_code == 200
    [pending] = await gw.rows(
        "SELECT id FROM webhook_deliveries WHERE account_id = :a AND status = 'pending'",
        a=used.account_id,
    )
    # A job row its process left active (it died after the usage row was closed): the
    # kind a resumer takes up.
    await gw.execute(
        "UPDATE generation_jobs SET state = 'running', owner = 'dead', lease_until = :past "
        "WHERE id = :id",
        past=utcnow() - timedelta(minutes=1),
        id=used.job_id,
    )
    # A generation whose events its process died before recording (the webhook outbox's
    # mark): the sweeper would record them after the erasure.
    await gw.execute(
        "UPDATE generations SET events_pending = :t, webhook_url = :url, finished_at = :at "
        "WHERE id = :id",
        t=True,
        url=OTHER,
        at=utcnow() - timedelta(hours=1),
        id=used.sync_id,
    )
    sent_before = len(any_hooks.receiver.requests)
    usage_before = await count(gw, "generations", used.account_id)

    async with unit_of_work(gw.res.engine) as conn:
        await erasure.queue_erasure(
            conn, gw.res.vault, used.account_id, channel="cli", delete_clerk_user=False
        )
    assert await gw.res.jobs.run_due() == 1

    for table in (
        "webhook_endpoints",
        "webhook_secrets",
        "webhook_deliveries",
        "idempotency_keys",
        "generation_jobs",
    ):
        assert await count(gw, table, used.account_id) == 0, table
    assert await gw.rows("SELECT id FROM webhook_deliveries WHERE id = :id", id=pending["id"]) == []
    # The usage rows stay as pseudonymous accounting, without content (the existing policy).
    assert await count(gw, "generations", used.account_id) == usage_before
    cleared = await gw.rows(
        "SELECT prompt_enc, content_deleted_at FROM generations WHERE account_id = :a",
        a=used.account_id,
    )
    assert all(r["prompt_enc"] is None and r["content_deleted_at"] for r in cleared)

    [outbox] = await gw.rows(
        "SELECT events_pending, webhook_url FROM generations WHERE id = :id", id=used.sync_id
    )
    assert outbox == {"events_pending": None, "webhook_url": None}

    # Nothing is sent afterwards, nothing is resumed, and no data key is made again.
    assert await gw.res.webhooks.events.sweep(now=utcnow() + timedelta(hours=1)) == 0
    assert await any_hooks.run(now=utcnow() + timedelta(hours=1)) == 0
    # A sender that claimed a delivery just before finds no secret, and makes none.
    with pytest.raises(NotFound):
        await request_secret(gw.res.engine, gw.res.vault, used.account_id)
    assert len(any_hooks.receiver.requests) == sent_before
    resumer = gw.res.job_resumer
    assert resumer is not None
    assert await resumer.pass_once() == 0
    assert await gw.res.vault.keys.get(used.account_id) is None
    [entry] = await gw.rows(
        "SELECT fields FROM audit_log WHERE subject_account_id = :a AND action = 'erasure'",
        a=used.account_id,
    )
    for field in ("webhooks", "jobs", "idempotency_keys"):
        assert field in entry["fields"]


# ----------------------------------------------------------------------------- retention


async def run_purge(gw: Gateway, now: datetime, **policy: Any) -> PurgeReport:
    report = await purge(gw.res.engine, gw.res.store, RetentionPolicy(**policy), now=now)
    assert report.failed == []
    return report


async def age_deliveries(gw: Gateway, account_id: str, created_at: datetime) -> list[str]:
    await gw.execute(
        "UPDATE webhook_deliveries SET created_at = :t WHERE account_id = :a",
        t=created_at,
        a=account_id,
    )
    found = await gw.rows(
        "SELECT id FROM webhook_deliveries WHERE account_id = :a ORDER BY id", a=account_id
    )
    return [r["id"] for r in found]


async def test_deliveries_go_after_the_log_period_unless_they_may_still_be_sent(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    used = await use_everything(any_hooks)
    now = utcnow()
    delivered, resent, abandoned = await age_deliveries(gw, used.account_id, now - 31 * DAY)
    # A resend of an old event is pending with an open window; another's window closed.
    await gw.execute(
        "UPDATE webhook_deliveries SET status = 'pending', retry_until = :t WHERE id = :id",
        t=now + DAY,
        id=resent,
    )
    await gw.execute(
        "UPDATE webhook_deliveries SET status = 'pending', retry_until = :t WHERE id = :id",
        t=now - 30 * DAY,
        id=abandoned,
    )

    dry = await purge(gw.res.engine, gw.res.store, RetentionPolicy(), now=now, dry_run=True)
    assert dry.webhook_deliveries == 2
    # Kept a day before the period ends.
    assert (await run_purge(gw, now - 2 * DAY)).webhook_deliveries == 0
    assert (await run_purge(gw, now)).webhook_deliveries == 2
    left = await gw.rows(
        "SELECT id FROM webhook_deliveries WHERE account_id = :a", a=used.account_id
    )
    assert left == [{"id": resent}]
    assert delivered != resent  # three distinct deliveries were aged
    # The endpoint of an open account stays; its period is the account's.
    assert await count(gw, "webhook_endpoints", used.account_id) == 1
    # WEBHOOK_LOG_DAYS is the period: with 40 days nothing of 31 days goes.
    await age_deliveries(gw, used.account_id, now - 31 * DAY)
    await gw.execute(
        "UPDATE webhook_deliveries SET status = 'delivered' WHERE account_id = :a",
        a=used.account_id,
    )
    assert (await run_purge(gw, now, webhook_log_days=40)).webhook_deliveries == 0
    assert (await run_purge(gw, now, webhook_log_days=30)).webhook_deliveries == 1


async def test_a_delivery_being_posted_is_not_purged(any_hooks: Hooks) -> None:
    gw = any_hooks.gw
    used = await use_everything(any_hooks)
    now = utcnow()
    ids = await age_deliveries(gw, used.account_id, now - 31 * DAY)
    await gw.execute(
        "UPDATE webhook_deliveries SET locked_until = :t WHERE id = :id",
        t=now + timedelta(minutes=1),
        id=ids[0],
    )
    assert (await run_purge(gw, now)).webhook_deliveries == len(ids) - 1
    assert await gw.rows("SELECT id FROM webhook_deliveries") == [{"id": ids[0]}]


async def test_job_answers_go_with_the_outputs_and_rows_with_their_usage_row(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    used = await use_everything(any_hooks)
    async with unit_of_work(gw.res.engine) as conn:  # typed columns (SQLite: datetimes)
        stored = (
            await conn.execute(
                select(GenerationJob.result_enc, GenerationJob.result_expires_at).where(
                    GenerationJob.id == used.job_id
                )
            )
        ).one()
    assert stored.result_enc is not None
    expires = stored.result_expires_at

    report = await run_purge(gw, expires - timedelta(seconds=1))
    assert (report.job_answers, report.generation_jobs) == (0, 0)
    report = await run_purge(gw, expires)
    assert report.job_answers == 1
    [cleared] = await gw.rows(
        "SELECT result_enc, result_expires_at FROM generation_jobs WHERE id = :id", id=used.job_id
    )
    assert cleared == {"result_enc": None, "result_expires_at": None}

    # The usage row goes at the end of its period (after its outputs); the job row with it.
    later = expires + 731 * DAY
    report = await run_purge(gw, later)
    assert report.usage_rows >= 1 and report.generation_jobs == 1
    assert await count(gw, "generation_jobs", used.account_id) == 0


async def test_a_job_row_that_may_still_be_resumed_is_never_purged(any_hooks: Hooks) -> None:
    gw = any_hooks.gw
    used = await use_everything(any_hooks)
    await gw.execute("UPDATE generation_jobs SET state = 'running' WHERE id = :id", id=used.job_id)
    await gw.execute("DELETE FROM generations WHERE id = :id", id=used.job_id)
    assert (await run_purge(gw, utcnow())).generation_jobs == 0
    await gw.execute("UPDATE generation_jobs SET state = 'failed' WHERE id = :id", id=used.job_id)
    assert (await run_purge(gw, utcnow())).generation_jobs == 1


async def test_a_closed_accounts_webhook_rows_go_even_without_the_erasure(
    any_hooks: Hooks,
) -> None:
    gw = any_hooks.gw
    used = await use_everything(any_hooks)
    kept = await use_everything(any_hooks)  # another, open account: untouched
    # A tombstone made some other way than the erasure job (an operator's fix, an old
    # version): its webhook rows are still past their period ("until you close it").
    await gw.execute(
        "UPDATE accounts SET status = 'deleted', deleted_at = :t WHERE id = :a",
        t=utcnow(),
        a=used.account_id,
    )
    report = await run_purge(gw, utcnow())
    assert (report.webhook_deliveries, report.webhook_endpoints, report.webhook_secrets) == (
        3,
        1,
        1,
    )
    for table in ("webhook_deliveries", "webhook_endpoints", "webhook_secrets"):
        assert await count(gw, table, used.account_id) == 0, table
        assert await count(gw, table, kept.account_id) >= 1, table


async def test_a_legal_hold_keeps_every_one_of_them(any_hooks: Hooks) -> None:
    gw = any_hooks.gw
    used = await use_everything(any_hooks)
    async with unit_of_work(gw.res.engine) as conn:
        await restriction.restrict(
            conn,
            gw.res.vault,
            used.account_id,
            reason="contests the webhook log",
            actor_type="operator",
            actor_id="ops",
            channel="email",
        )
    await age_deliveries(gw, used.account_id, utcnow() - 400 * DAY)
    await gw.execute("DELETE FROM generations WHERE id = :id", id=used.job_id)
    await gw.execute(
        "UPDATE accounts SET status = 'deleted', deleted_at = :t WHERE id = :a",
        t=utcnow(),
        a=used.account_id,
    )

    report = await run_purge(gw, utcnow() + 800 * DAY)

    counts = report.counts()
    for category in (
        "webhook_deliveries",
        "webhook_endpoints",
        "webhook_secrets",
        "job_answers",
        "generation_jobs",
        "idempotency_keys",
    ):
        assert counts[category] == 0, category
    assert await count(gw, "webhook_deliveries", used.account_id) == 3
    assert await count(gw, "generation_jobs", used.account_id) == 1


# ------------------------------------------------------------------ prompts in errors


async def test_a_refusal_quoting_the_prompt_is_kept_in_no_job_row_or_webhook_payload(
    any_hooks: Hooks,
) -> None:
    """Vendors quote the prompt in refusals. The usage log scrubs it; the job row (kept as
    long as the usage row) and the delivery log (WEBHOOK_LOG_DAYS) must not keep it
    either, sealed nowhere and whatever the account's prompt storage says."""
    gw = any_hooks.gw
    account_id, key = await gw.account("1.00")
    await any_hooks.register(key)
    gw.openai.fail_next(
        400, openai_error(f"Your prompt '{PROMPT}' is not allowed", code="content_policy")
    )
    accepted = await gw.post(
        IMAGE,
        key,
        json={"model": "openai/dall-e-2", "size": "1024x1024", "prompt": PROMPT},
        headers=ASYNC,
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["id"]
    deadline = time.monotonic() + 20
    while (job := (await gw.client.get(f"/v1/jobs/{job_id}", headers=auth(key))).json())[
        "status"
    ] != "failed":
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.05)
    assert await any_hooks.run() == 1

    [row] = await gw.rows("SELECT error FROM generation_jobs WHERE id = :id", id=job_id)
    [delivery] = await gw.rows(
        "SELECT payload FROM webhook_deliveries WHERE account_id = :a", a=account_id
    )
    assert "sentinel-9c1e" not in str(row["error"])
    assert "sentinel-9c1e" not in delivery["payload"]
    # The refusal is still recognisable, the prompt replaced by the usage log's placeholder.
    assert "[prompt]" in str(row["error"]) and "[prompt]" in delivery["payload"]
