"""Erasing an account (DSR-2, STR-8), on SQLite and on the real PostgreSQL.

The recipe of privacy-payments.md §4.7: a person with a distinctive e-mail and name, prompts
holding a sentinel, stored images, an export archive, API keys, a Stripe top-up and ledger
entries deletes their account through the API; the job runs; then a dump of the whole
database (`pg_dump` / `iterdump`) and the storage directory hold none of it, the books
still balance, and a backup taken before the deletion no longer opens.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.engine import make_url

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.db.tables import Account, Consent, ExportArchive, Generation, Job, WebSession
from image_router.kit import crypto
from image_router.kit.clock import utcnow
from image_router.privacy import erasure
from image_router.privacy import requests as dsr
from tests.conftest import STRIPE_WEBHOOK_SECRET, Gateway
from tests.fakes.openai import openai_error
from tests.fakes.stripe import FakeStripe, deliver
from tests.integration.web_helpers import sign_in, sign_up

EMAIL = "quentin.erasure-sentinel@example.org"
NAME = "Quentin Zebedee Erasmus"
SENTINEL = "sentinel-prompt-7f3a9c"
PROMPT = f"a lighthouse at dusk, {SENTINEL}"
IMAGE = "/v1/openai/images/generations"
DALLE2 = {"model": "openai/dall-e-2", "size": "1024x1024", "prompt": PROMPT}
CONFIRM = {"confirm": "DELETE MY ACCOUNT"}
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    # The tests run the job themselves (`res.jobs.run_due`), not the server's background loop.
    return {"jobs_interval_s": 3600.0}


def stripe_of(gw: Gateway) -> FakeStripe:
    fake = gw.fakes["stripe"]
    assert isinstance(fake, FakeStripe)
    return fake


class Person:
    """The account under test, signed in on `gw.client` (cookie session)."""

    def __init__(self, gw: Gateway, account_id: str, key: str, csrf: str) -> None:
        self.gw, self.id, self.key, self.csrf = gw, account_id, key, csrf

    async def delete(self, body: object = CONFIRM, **headers: str) -> httpx.Response:
        return await self.gw.client.request(
            "DELETE",
            "/v1/account",
            json=body,
            headers={"X-CSRF-Token": self.csrf, **headers},
        )


async def signed_in(gw: Gateway, email: str = EMAIL) -> Person:
    """Sign up through the website, give the account a name and an API key."""
    assert (await sign_up(gw.client, email)).status_code == 303
    account_id = await accounts_id(gw, email)
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(name_enc=await gw.res.vault.seal(account_id, NAME))
        )
        _, key = await accounts.create_key(conn, account_id, "laptop")
    page = await gw.client.get("/account")
    found = META_CSRF.search(page.text)
    assert found is not None, page.text
    return Person(gw, account_id, key, found.group(1))


async def accounts_id(gw: Gateway, email: str) -> str:
    async with unit_of_work(gw.res.engine) as conn:
        found = await accounts.find_account_id(conn, gw.res.vault, email)
    assert found is not None
    return found


async def top_up(gw: Gateway, key: str, usd: str, *, pay: bool) -> str:
    """Open a Stripe Checkout for `usd`; pay it (signed webhook) when asked. The session id."""
    response = await gw.post("/v1/billing/checkout", key, json={"amount_usd": usd})
    assert response.status_code == 200, response.text
    [row] = await gw.rows(
        "SELECT stripe_checkout_session_id AS s FROM topups WHERE id = :t", t=response.json()["id"]
    )
    if pay:
        event = stripe_of(gw).completed(row["s"])
        paid = await deliver(gw.client, event, secret=STRIPE_WEBHOOK_SECRET)
        assert paid.status_code == 200, paid.text
    return str(row["s"])


async def use_the_product(gw: Gateway, person: Person) -> None:
    """Two stored images and one vendor refusal that quotes the prompt back."""
    for _ in range(2):
        response = await gw.post(IMAGE, person.key, json=DALLE2)
        assert response.status_code == 200, response.text
    gw.openai.fail_next(
        400, openai_error(f"Your prompt '{PROMPT}' is not allowed", code="content_policy")
    )
    assert (await gw.post(IMAGE, person.key, json=DALLE2)).status_code == 400


async def leave_an_export_and_consents(gw: Gateway, account_id: str) -> str:
    """An export archive file holding the e-mail, and consent history."""
    name = f"export-{os.urandom(8).hex()}.zip"
    await gw.res.store.put(name, f"account.json: {EMAIL} {NAME}".encode(), "application/zip")
    now = utcnow()
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(
            insert(ExportArchive).values(
                id=os.urandom(8).hex(),
                account_id=account_id,
                status="ready",
                storage_key=name,
                created_at=now,
                expires_at=now + timedelta(hours=24),
            )
        )
        for purpose, granted in (("terms", True), ("marketing_emails", True), ("terms", True)):
            await conn.execute(
                insert(Consent).values(
                    account_id=account_id,
                    purpose=purpose,
                    granted=granted,
                    document_version="2026-11-01",
                    source="settings",
                    created_at=now,
                )
            )
    return name


async def database_dump(gw: Gateway) -> str:
    """The whole database as SQL text: `pg_dump`, or SQLite's `iterdump`."""
    url = make_url(gw.res.settings.storage.resolved_database_url())
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        with closing(sqlite3.connect(url.database)) as db:
            return "\n".join(db.iterdump())
    env = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    process = await asyncio.create_subprocess_exec(
        "pg_dump",
        "-h",
        url.host or "127.0.0.1",
        "-p",
        str(url.port or 5432),
        "-U",
        url.username or "postgres",
        str(url.database),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


def stored_files(gw: Gateway) -> dict[str, bytes]:
    root = Path(gw.res.settings.storage.data_dir) / "outputs"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def traces(text: str, needles: dict[str, str]) -> list[str]:
    """Which needles (by label) occur in `text`, case-insensitively."""
    lowered = text.lower()
    return [label for label, needle in needles.items() if needle.lower() in lowered]


async def run_jobs(gw: Gateway, **kwargs: Any) -> int:
    return await gw.res.jobs.run_due(**kwargs)


# ----------------------------------------------------------------------------- the recipe


async def test_erasure_leaves_nothing_personal_and_the_books_balance(
    stripe_gateway: Gateway,
) -> None:
    gw, fake = stripe_gateway, stripe_of(stripe_gateway)
    person = await signed_in(gw)
    paid_session = await top_up(gw, person.key, "10.00", pay=True)
    open_session = await top_up(gw, person.key, "5.00", pay=False)
    [account] = await gw.rows("SELECT * FROM accounts WHERE id = :a", a=person.id)
    customer = account["stripe_customer_id"]
    assert customer and customer.startswith("cus_")
    await use_the_product(gw, person)
    export_file = await leave_an_export_and_consents(gw, person.id)
    assert len(stored_files(gw)) == 3  # two images and the export

    # A backup taken before the deletion: the sealed rows as they are now.
    backup = await gw.rows(
        "SELECT id, prompt_enc FROM generations WHERE account_id = :a AND prompt_enc IS NOT NULL",
        a=person.id,
    )
    assert len(backup) == 3
    needles = {
        "email": EMAIL,
        "name": NAME,
        "prompt": SENTINEL,
        "sealed email": bytes(account["email_enc"]).hex(),
        "sealed name": bytes(account["name_enc"]).hex(),
        "sealed prompt": bytes(backup[0]["prompt_enc"]).hex(),
        "e-mail blind index": account["email_bidx"],
    }
    before = await database_dump(gw)
    # The search sees what is there. The vendor's refusal quoted the prompt, but the usage
    # log keeps a placeholder in its place, so even before erasure no plain prompt is left.
    assert set(traces(before, needles)) >= {"sealed email", "sealed prompt"}
    assert "prompt" not in traces(before, needles)
    balance = await gw.balance(person.id)
    assert balance > 0

    refused = await person.delete({})
    assert refused.status_code == 400
    assert f"${balance / 10_000:.4f}" in refused.json()["error"]["message"]
    assert "forfeited" in refused.json()["error"]["message"]
    assert refused.json()["error"]["code"] == "confirmation_required"

    accepted = await person.delete()
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "deletion_pending"
    due = accepted.json()["erasure_due_at"]
    assert due.startswith(dsr.due_date(utcnow()).date().isoformat())

    # At once, before the job: the key is dead, the browser is signed out.
    assert (await gw.post("/v1/auth/test", person.key)).status_code == 401
    assert (await person.delete()).status_code == 401
    assert (await sign_in(gw.client, EMAIL)).status_code == 401

    assert await run_jobs(gw) == 1

    after = await database_dump(gw)
    assert traces(after, needles) == []
    files = stored_files(gw)
    assert files == {}, f"files left behind: {sorted(files)}"
    assert not (Path(gw.res.settings.storage.data_dir) / "outputs" / export_file).exists()

    # Stripe: the open checkout can no longer be paid, the customer is deleted (STR-8).
    assert fake.expired_sessions == [open_session]
    assert fake.sessions[open_session]["status"] == "expired"
    assert fake.deleted_customers == [customer]
    assert [r.method for r in fake.requests if r.path.endswith(f"/v1/customers/{customer}")] == [
        "DELETE"
    ]

    # Accounting stays, under the tombstone: the balance was forfeited by one entry.
    [tomb] = await gw.rows("SELECT * FROM accounts WHERE id = :a", a=person.id)
    assert tomb["status"] == "deleted" and tomb["deleted_at"] is not None
    for column in ("email_enc", "email_bidx", "name_enc", "password_hash", "stripe_customer_id"):
        assert tomb[column] is None, column
    assert await gw.balance(person.id) == 0 == await gw.ledger_sum(person.id)
    kinds = await gw.rows(
        "SELECT kind, amount, ref FROM ledger_entries WHERE account_id = :a AND kind = 'forfeit'",
        a=person.id,
    )
    assert kinds == [{"kind": "forfeit", "amount": -balance, "ref": person.id}]
    topups = await gw.rows(
        "SELECT stripe_checkout_session_id AS s, status, amount_cents FROM topups "
        "WHERE account_id = :a ORDER BY amount_cents",
        a=person.id,
    )
    assert topups == [
        {"s": open_session, "status": "expired", "amount_cents": 500},
        {"s": paid_session, "status": "paid", "amount_cents": 1000},
    ]
    usage = await gw.rows(
        "SELECT model, status, cost, prompt_enc, ip, error, output_keys, content_deleted_at "
        "FROM generations WHERE account_id = :a ORDER BY created_at",
        a=person.id,
    )
    assert [(u["model"], u["status"], u["cost"]) for u in usage] == [
        ("openai/dall-e-2", "success", 160),
        ("openai/dall-e-2", "success", 160),
        ("openai/dall-e-2", "error", 0),
    ]
    assert all(u["prompt_enc"] is None and u["ip"] is None and u["error"] is None for u in usage)
    assert all(u["content_deleted_at"] is not None for u in usage)
    for table in ("api_keys", "web_sessions", "export_archives"):
        assert await gw.rows(f"SELECT 1 FROM {table} WHERE account_id = :a", a=person.id) == []
    assert await gw.res.vault.keys.get(person.id) is None  # destroyed in the key store
    proof = await gw.rows("SELECT purpose FROM consents WHERE account_id = :a", a=person.id)
    assert proof == [{"purpose": "terms"}]

    # The pre-deletion backup no longer opens: the data key is gone, the KEK alone is useless.
    for row in backup:
        assert await gw.res.vault.open(person.id, row["prompt_enc"]) is None
    with pytest.raises(crypto.SealError):
        crypto.open_sealed(gw.res.vault.kek, bytes(backup[0]["prompt_enc"]), person.id)

    # The request is closed and the erasure audited, without the data itself.
    [request] = await gw.rows(
        "SELECT type, channel, status, due_at, completed_at FROM data_subject_requests "
        "WHERE account_id = :a",
        a=person.id,
    )
    assert (request["type"], request["channel"], request["status"]) == (
        "erasure",
        "api",
        "completed",
    )
    [entry] = await gw.rows(
        "SELECT actor_type, action, fields FROM audit_log WHERE subject_account_id = :a",
        a=person.id,
    )
    assert (entry["actor_type"], entry["action"]) == ("system", "erasure")
    assert "prompts" in entry["fields"] and "data_key" in entry["fields"]


async def test_asking_again_changes_nothing(any_gateway: Gateway) -> None:
    gw = any_gateway
    person = await signed_in(gw)
    first = await person.delete()
    assert first.status_code == 202
    async with unit_of_work(gw.res.engine) as conn:
        again = await erasure.queue_erasure(
            conn, gw.res.vault, person.id, channel="clerk", delete_clerk_user=False
        )
    assert (
        again.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        == (first.json()["erasure_due_at"])
    )
    assert len(await gw.rows("SELECT id FROM jobs WHERE account_id = :a", a=person.id)) == 1
    assert await run_jobs(gw) == 1
    async with unit_of_work(gw.res.engine) as conn:
        late = await erasure.queue_erasure(
            conn, gw.res.vault, person.id, channel="clerk", delete_clerk_user=False
        )
    assert late == again
    assert await run_jobs(gw) == 0
    requests = await gw.rows(
        "SELECT status FROM data_subject_requests WHERE account_id = :a", a=person.id
    )
    assert requests == [{"status": "completed"}]


async def test_a_job_that_failed_half_way_completes_when_run_again(
    stripe_gateway: Gateway,
) -> None:
    gw, fake = stripe_gateway, stripe_of(stripe_gateway)
    person = await signed_in(gw)
    await top_up(gw, person.key, "10.00", pay=True)
    [account] = await gw.rows("SELECT stripe_customer_id FROM accounts WHERE id = :a", a=person.id)
    assert (await gw.post(IMAGE, person.key, json=DALLE2)).status_code == 200
    assert (await person.delete()).status_code == 202

    fake.fail_next(500, times=10)  # Stripe is down: the first attempt stops at STR-8
    assert await run_jobs(gw) == 1
    [job] = await gw.rows(
        "SELECT status, attempts, error FROM jobs WHERE account_id = :a", a=person.id
    )
    assert (job["status"], job["attempts"]) == ("queued", 1)
    assert "Stripe" in job["error"]
    [pending] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=person.id)
    assert pending["status"] == "deletion_pending"
    assert len(stored_files(gw)) == 1  # nothing half-deleted
    fake.reset()

    assert await run_jobs(gw, now=utcnow() + timedelta(minutes=5)) == 1
    [job] = await gw.rows("SELECT status FROM jobs WHERE account_id = :a", a=person.id)
    assert job["status"] == "done"
    assert fake.deleted_customers == [account["stripe_customer_id"]]
    assert stored_files(gw) == {}
    assert await gw.balance(person.id) == 0 == await gw.ledger_sum(person.id)


async def test_a_rerun_after_stripe_was_done_treats_the_missing_customer_as_done(
    stripe_gateway: Gateway,
) -> None:
    """A crash after STR-8 and before the database step: the customer is already gone."""
    from image_router.payment.customers import forget_customer

    gw, fake = stripe_gateway, stripe_of(stripe_gateway)
    person = await signed_in(gw)
    await top_up(gw, person.key, "10.00", pay=True)
    assert (await person.delete()).status_code == 202
    assert gw.res.payments is not None
    first = await forget_customer(gw.res.engine, gw.res.payments.gateway, person.id)
    assert first.customer_deleted

    assert await run_jobs(gw) == 1
    customer_calls = [r for r in fake.requests if "/v1/customers/" in r.path]
    assert len(customer_calls) == 2  # the second answered 404 resource_missing
    [tomb] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=person.id)
    assert tomb["status"] == "deleted"
    [request] = await gw.rows(
        "SELECT note FROM data_subject_requests WHERE account_id = :a", a=person.id
    )
    assert "already gone" in request["note"]


# ----------------------------------------------------------------------------- refusals


async def test_only_a_recent_sign_in_may_delete(any_gateway: Gateway) -> None:
    gw = any_gateway
    person = await signed_in(gw)

    by_key = await gw.client.request(
        "DELETE", "/v1/account", json=CONFIRM, headers={"Authorization": f"Bearer {person.key}"}
    )
    assert by_key.status_code == 403
    assert by_key.json()["error"]["code"] == "session_required"

    no_csrf = await gw.client.request("DELETE", "/v1/account", json=CONFIRM)
    assert no_csrf.status_code == 403
    assert no_csrf.json()["error"]["code"] == "csrf_failed"

    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(
            update(WebSession)
            .where(WebSession.account_id == person.id)
            .values(reauthenticated_at=utcnow() - timedelta(hours=1))
        )
    stale = await person.delete()
    assert stale.status_code == 403
    assert stale.json()["error"]["code"] == "reverification_required"

    [row] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=person.id)
    assert row["status"] == "active"
    assert await gw.rows("SELECT id FROM jobs") == []
    assert (await gw.post("/v1/auth/test", person.key)).status_code == 200


async def test_without_the_confirmation_the_balance_to_forfeit_is_shown(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    person = await signed_in(gw)
    async with unit_of_work(gw.res.engine) as conn:
        from image_router.ledger import service as ledger

        await ledger.grant(conn, person.id, 123_456, reason="test")
    for body in ({}, {"confirm": "delete my account"}, {"confirm": True}):
        refused = await person.delete(body)
        assert refused.status_code == 400
        assert "$12.3456" in refused.json()["error"]["message"]
    empty = await gw.client.request("DELETE", "/v1/account", headers={"X-CSRF-Token": person.csrf})
    assert empty.status_code == 400 and "$12.3456" in empty.json()["error"]["message"]
    [row] = await gw.rows("SELECT status, balance FROM accounts WHERE id = :a", a=person.id)
    assert (row["status"], row["balance"]) == ("active", 123_456)


async def test_other_accounts_are_untouched(any_gateway: Gateway) -> None:
    gw = any_gateway
    other_id, other_key = await gw.account("2")
    assert (await gw.post(IMAGE, other_key, json=DALLE2)).status_code == 200
    person = await signed_in(gw)
    assert (await person.delete()).status_code == 202
    assert await run_jobs(gw) == 1
    assert (await gw.post("/v1/auth/test", other_key)).status_code == 200
    [row] = await gw.generations()
    assert row["account_id"] == other_id and row["prompt"] == PROMPT
    assert len(stored_files(gw)) == 1


# ----------------------------------------------------------------------------- the CLI


async def cli(gw: Gateway, *args: str) -> tuple[int, str, str]:
    """`image-router ARGS` in this process (a thread: it runs its own event loop)."""
    from typer.testing import CliRunner

    from image_router.cli import app as cli_app
    from image_router.cli import common

    settings = gw.res.settings
    env: dict[str, str | None] = {
        "DATA_DIR": str(settings.storage.data_dir),
        "DATABASE_URL": settings.storage.resolved_database_url(),
        "AUTO_MIGRATE": "false",
        "PII_KEK": None,
        "BLIND_INDEX_KEY": None,
        "STORAGE_URL": None,
        "PAYMENTS_PROVIDER": "none",
    }

    def invoke() -> Any:
        common.settings.cache_clear()
        common.vault.cache_clear()
        try:
            return CliRunner().invoke(cli_app, list(args), env=env)
        finally:
            common.settings.cache_clear()
            common.vault.cache_clear()

    result = await asyncio.to_thread(invoke)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.stdout, result.stderr


async def test_an_operator_erases_an_account_now_with_a_reason(gateway: Gateway) -> None:
    gw = gateway
    person = await signed_in(gw)
    assert (await gw.post("/v1/auth/test", person.key)).status_code == 200
    await gw.res.store.put("probe.txt", b"x", "text/plain")  # not the account's: stays

    code, _, err = await cli(gw, "users", "delete", EMAIL)
    assert code == 1 and "--reason is required" in err
    code, _, err = await cli(gw, "users", "delete", "nobody@example.org", "--reason", "t-1")
    assert code == 1 and "no account" in err
    [row] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=person.id)
    assert row["status"] == "active"

    code, printed, err = await cli(gw, "users", "delete", EMAIL, "--reason", "ticket 7", "--now")
    assert code == 0, err
    assert f"account {person.id} erased" in printed
    assert (await gw.post("/v1/auth/test", person.key)).status_code == 401
    assert traces(await database_dump(gw), {"email": EMAIL, "name": NAME}) == []
    [tomb] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=person.id)
    assert tomb["status"] == "deleted"
    [job] = await gw.rows("SELECT status FROM jobs WHERE account_id = :a", a=person.id)
    assert job["status"] == "done"
    [request] = await gw.rows(
        "SELECT channel, status, handled_by FROM data_subject_requests WHERE account_id = :a",
        a=person.id,
    )
    assert (request["channel"], request["status"]) == ("cli", "completed")
    assert request["handled_by"]  # the operator's login name
    [entry] = await gw.rows(
        "SELECT actor_type, reason FROM audit_log WHERE subject_account_id = :a", a=person.id
    )
    assert entry == {"actor_type": "operator", "reason": "ticket 7"}
    assert list(stored_files(gw)) == ["probe.txt"]

    # The e-mail no longer names an account; the id still does, and asking again is a no-op.
    code, _, err = await cli(gw, "users", "delete", EMAIL, "--reason", "ticket 7")
    assert code == 1 and "no account" in err
    code, printed, _ = await cli(gw, "users", "delete", person.id, "--reason", "ticket 7")
    assert code == 0 and "already erased" in printed
    assert len(await gw.rows("SELECT id FROM jobs WHERE account_id = :a", a=person.id)) == 1


async def set_generation(gw: Gateway, generation_id: str, **values: Any) -> None:
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(update(Generation).where(Generation.id == generation_id).values(values))


async def test_the_erasure_waits_for_a_running_generation(any_gateway: Gateway) -> None:
    """A generation still running would store its images and settle credits afterwards."""
    gw = any_gateway
    person = await signed_in(gw)
    async with unit_of_work(gw.res.engine) as conn:
        from image_router.ledger import service as ledger

        await ledger.grant(conn, person.id, 10_000, reason="test")
    assert (await gw.post(IMAGE, person.key, json=DALLE2)).status_code == 200
    [row] = await gw.generations()
    deadline = utcnow() + timedelta(minutes=3)
    # As if it were still rendering: no outputs stored yet.
    await gw.res.store.delete(row["output_keys"][0])
    await set_generation(
        gw, row["id"], status="processing", deadline_at=deadline, output_keys=[], output_urls=[]
    )
    assert (await person.delete()).status_code == 202

    assert await run_jobs(gw) == 1
    [account] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=person.id)
    assert account["status"] == "deletion_pending"
    assert (await gw.generations())[0]["prompt"] == PROMPT  # nothing erased yet
    async with unit_of_work(gw.res.engine) as conn:
        later = (
            await conn.scalars(
                select(Job.run_after).where(Job.account_id == person.id, Job.status == "queued")
            )
        ).all()
    assert len(later) == 1 and later[0] > deadline
    assert await run_jobs(gw) == 0  # not due yet

    # Past the deadline and its grace the hold is given back, then the account is erased.
    await set_generation(gw, row["id"], deadline_at=utcnow() - timedelta(hours=1))
    balance = await gw.balance(person.id)
    assert await run_jobs(gw, now=later[0] + timedelta(seconds=1)) == 1
    [account] = await gw.rows("SELECT status FROM accounts WHERE id = :a", a=person.id)
    assert account["status"] == "deleted"
    assert (await gw.generations())[0]["prompt_enc"] is None
    [forfeit] = await gw.rows(
        "SELECT amount FROM ledger_entries WHERE account_id = :a AND kind = 'forfeit'", a=person.id
    )
    assert forfeit["amount"] == -(balance + row["held"])  # the released hold went too
    assert await gw.balance(person.id) == 0 == await gw.ledger_sum(person.id)


async def test_a_payment_completed_after_erasure_credits_nothing(
    stripe_gateway: Gateway,
) -> None:
    """A checkout paid just before the erasure job expired it: Stripe's late event is
    recorded and flagged for a refund, and the tombstone gets neither credit nor customer."""
    gw = stripe_gateway
    person = await signed_in(gw)
    session_id = await top_up(gw, person.key, "10", pay=False)
    assert (await person.delete()).status_code == 202
    assert await run_jobs(gw) == 1

    late = await deliver(
        gw.client, stripe_of(gw).completed(session_id), secret=STRIPE_WEBHOOK_SECRET
    )

    assert late.status_code == 200, late.text
    [account] = await gw.rows(
        "SELECT balance, stripe_customer_id FROM accounts WHERE id = :a", a=person.id
    )
    assert account == {"balance": 0, "stripe_customer_id": None}
    assert await gw.ledger_sum(person.id) == 0
    [topup] = await gw.rows("SELECT status FROM topups WHERE account_id = :a", a=person.id)
    assert topup["status"] == "flagged"
