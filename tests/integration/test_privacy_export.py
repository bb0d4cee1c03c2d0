"""The data export (DSR-1) built while the person waits: what the ZIP holds, checked the way
its reader would (manifest checksums, no key secrets or hashes anywhere, prompts present
exactly where they were stored, the generated images themselves); the step-up sign-in it
needs; the audit trail it leaves; and the operator's `users export` command."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from image_router.account import service as accounts
from image_router.cli import app as cli_app
from image_router.cli import common
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.kit.ids import hash_secret
from image_router.kit.money import usd_to_credits
from image_router.ledger import service as ledger
from image_router.privacy import requests as dsr
from tests.conftest import Gateway
from tests.integration.web_helpers import sign_up

IMAGE = "/v1/openai/images/generations"
EXPORT = "/v1/account/export"
STORED = "a lighthouse at dawn, oil painting"
OPTED_OUT = "my secret plan, do not keep"


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    return {"jobs_interval_s": 3600.0}  # jobs run only when a test says so


async def signed_up(gw: Gateway, client: httpx.AsyncClient, email: str) -> tuple[str, str]:
    """Sign `client` up as `email`; returns (account id, an API key of the account)."""
    assert (await sign_up(client, email)).status_code == 303
    async with unit_of_work(gw.res.engine) as conn:
        account_id = await accounts.find_account_id(conn, gw.res.vault, email)
        assert account_id is not None
        _, key = await accounts.create_key(conn, account_id, "laptop")
    return account_id, key


async def generate(gw: Gateway, key: str, prompt: str, **headers: str) -> dict[str, Any]:
    response = await gw.post(
        IMAGE, key, json={"model": "test/test", "prompt": prompt}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.testzip() is None
        return {name: archive.read(name) for name in archive.namelist()}


def checked(data: bytes) -> dict[str, bytes]:
    """The members of an export whose manifest lists every other member with its hash."""
    files = unzip(data)
    manifest = json.loads(files["manifest.json"])
    assert manifest["schema_version"] == 1
    assert set(manifest) >= {"schema_version", "generated_at", "account_id", "files"}
    listed = {entry["name"]: entry for entry in manifest["files"]}
    assert set(listed) == set(files) - {"manifest.json"}
    for name, entry in listed.items():
        assert entry["sha256"] == hashlib.sha256(files[name]).hexdigest(), name
        assert entry["size"] == len(files[name]), name
    return files


def lines(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def everything(files: dict[str, bytes]) -> bytes:
    return b"\n".join(files.values())


async def test_the_export_holds_the_account_data_and_no_key_secret(any_gateway: Gateway) -> None:
    gateway = any_gateway
    account_id, key = await signed_up(gateway, gateway.client, "ada@example.com")
    async with unit_of_work(gateway.res.engine) as conn:
        await ledger.grant(conn, account_id, usd_to_credits("5"), reason="welcome")
    kept = await generate(gateway, key, STORED)
    await generate(gateway, key, OPTED_OUT, **{"X-Store-Prompt": "false"})

    response = await gateway.client.get(EXPORT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    assert response.headers["cache-control"] == "no-store"
    files = checked(response.content)

    account = json.loads(files["account.json"])
    assert (account["id"], account["email"], account["status"]) == (
        account_id,
        "ada@example.com",
        "active",
    )
    assert account["preferences"]["store_prompts"] is True
    assert account["balance"] == {"usd": "5.0000", "credits": usd_to_credits("5")}
    [grant] = lines(files["credit_ledger.jsonl"])
    assert (grant["amount_usd"], grant["kind"], grant["reason"]) == ("5.0000", "grant", "welcome")

    # API keys: recognisable, but neither the secret nor its stored hash is anywhere.
    [listed] = json.loads(files["api_keys.json"])
    assert (listed["name"], listed["prefix"], listed["last_four"]) == ("laptop", key[:8], key[-4:])
    assert "key_hash" not in listed
    for needle in (key.encode(), hash_secret(key).encode(), key[8:-4].encode()):
        assert needle not in everything(files)
        assert needle not in response.content

    # Prompts: the stored one is there, the one sent with X-Store-Prompt: false is not.
    usage = lines(files["usage.jsonl"])
    assert [(u["prompt"], u["prompt_stored"]) for u in usage] == [(STORED, True), (None, False)]
    assert OPTED_OUT.encode() not in everything(files)
    assert {u["model"] for u in usage} == {"test/test"}

    # The generated image itself, byte for byte what its URL serves.
    url = kept["data"][0]["url"]
    name = url.rsplit("/", 1)[1]
    served = await gateway.client.get(url)
    assert files[f"generated/{name}"] == served.content
    assert url in usage[0]["output_urls"]

    privacy = json.loads(files["privacy_info.json"])
    recipients = {r["recipient"] for r in privacy["recipients"]}
    assert "OpenAI" in recipients and "Stripe" not in recipients and "Clerk" not in recipients
    retention = {r["setting"]: r["period"] for r in privacy["retention"]}
    assert retention["RETENTION_PROMPTS_DAYS"].startswith("30 days")
    assert retention["EXPORT_TTL_HOURS"].startswith("24 hours")
    assert files["README.txt"].startswith(b"Your data export")

    # The export is audited and recorded as a fulfilled request; the next export shows it.
    audited = await gateway.rows(
        "SELECT actor_type, actor_id, action FROM audit_log WHERE subject_account_id = :a",
        a=account_id,
    )
    assert audited == [{"actor_type": "user", "actor_id": account_id, "action": "export"}]
    again = checked((await gateway.client.get(EXPORT)).content)
    [access] = json.loads(again["access_log.json"])
    assert (access["by"], access["action"]) == ("you", "export")
    [request] = json.loads(again["privacy_requests.json"])
    assert (request["type"], request["status"]) == ("export", "completed")


async def test_no_prompt_is_exported_when_the_account_does_not_store_prompts(
    gateway: Gateway,
) -> None:
    account_id, key = await signed_up(gateway, gateway.client, "quiet@example.com")
    await gateway.execute("UPDATE accounts SET store_prompts = false WHERE id = :a", a=account_id)
    await generate(gateway, key, "a prompt the account chose not to keep")

    files = checked((await gateway.client.get(EXPORT)).content)
    [usage] = lines(files["usage.jsonl"])
    assert (usage["prompt"], usage["prompt_stored"]) == (None, False)
    assert b"chose not to keep" not in everything(files)
    assert json.loads(files["account.json"])["preferences"]["store_prompts"] is False


async def test_exporting_needs_a_recent_sign_in_and_never_an_api_key(gateway: Gateway) -> None:
    account_id, key = await signed_up(gateway, gateway.client, "stale@example.com")
    by_key = await gateway.client.get(EXPORT, headers={"Authorization": f"Bearer {key}"})
    assert by_key.status_code == 403
    assert by_key.json()["error"]["code"] == "reverification_required"

    await gateway.execute(
        "UPDATE web_sessions SET reauthenticated_at = :t WHERE account_id = :a",
        t=utcnow() - timedelta(minutes=11),  # REVERIFY_MAX_MINUTES is 10
        a=account_id,
    )
    stale = await gateway.client.get(EXPORT)
    assert stale.status_code == 403
    assert stale.json()["error"]["code"] == "reverification_required"
    started = await gateway.client.post(
        "/v1/account/exports", headers={"Origin": "http://gateway.test"}
    )
    assert started.status_code == 403
    assert started.json()["error"]["code"] == "reverification_required"
    assert await gateway.rows("SELECT id FROM export_archives") == []
    assert await gateway.rows("SELECT id FROM audit_log") == []

    async with httpx.AsyncClient(
        transport=gateway.client._transport, base_url="http://gateway.test"
    ) as anonymous:
        assert (await anonymous.get(EXPORT)).status_code == 401


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the command in this process (a thread: it runs its own event loop) with `env`."""

    def invoke() -> Result:
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


async def test_an_operator_exports_an_account_with_a_reason_and_it_is_audited(
    gateway: Gateway, tmp_path: Path
) -> None:
    account_id, key = await signed_up(gateway, gateway.client, "grace@example.com")
    await generate(gateway, key, STORED)
    async with unit_of_work(gateway.res.engine) as conn:  # as `dsr add` records an e-mail
        request = await dsr.open_request(
            conn, account_id=account_id, type="export", channel="email"
        )
    settings = gateway.res.settings
    env = {
        "DATA_DIR": str(settings.storage.data_dir),
        "DATABASE_URL": settings.storage.resolved_database_url(),
        "AUTO_MIGRATE": "false",
        "PII_KEK": None,
        "BLIND_INDEX_KEY": None,
        "STORAGE_URL": None,
    }
    out = tmp_path / "grace.zip"
    export = ("users", "export", "Grace@Example.com", "--out", str(out))

    code, _, err = await cli(env, *export)
    assert code == 1 and "--reason is required" in err
    assert not out.exists()
    code, printed, err = await cli(env, *export, "--reason", "ticket 42", "--request", request.id)
    assert code == 0, err
    files = checked(out.read_bytes())
    assert json.loads(files["account.json"])["email"] == "grace@example.com"
    assert lines(files["usage.jsonl"])[0]["prompt"] == STORED
    assert f"sha256 {hashlib.sha256(out.read_bytes()).hexdigest()}" in printed
    audited = await gateway.rows(
        "SELECT actor_type, action, reason FROM audit_log WHERE subject_account_id = :a",
        a=account_id,
    )
    assert audited == [{"actor_type": "operator", "action": "export", "reason": "ticket 42"}]
    assert await gateway.rows("SELECT status FROM data_subject_requests") == [
        {"status": "completed"}
    ]
    code, _, err = await cli(env, *export, "--reason", "ticket 42")
    assert code == 1 and "exists" in err
