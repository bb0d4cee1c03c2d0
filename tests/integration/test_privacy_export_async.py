"""The data export built in the background (DSR-1, large accounts): with EXPORT_SYNC_MAX_MB=0
every export becomes an archive, built by the "export" job, downloadable by its owner until
it expires (then 410), never by anyone else, and its file deleted by the retention purge."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.privacy import export
from tests.conftest import Gateway
from tests.integration.test_privacy_export import STORED, checked, generate, lines, signed_up

ORIGIN = {"Origin": "http://gateway.test"}


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    return {"export_sync_max_mb": 0, "jobs_interval_s": 3600.0}


async def test_a_large_export_is_built_in_the_background_and_expires(
    any_gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = any_gateway
    account_id, key = await signed_up(gw, gw.client, "big@example.com")
    await generate(gw, key, STORED)

    started = await gw.client.get("/v1/account/export")
    assert started.status_code == 202, started.text
    pending = started.json()
    assert (pending["status"], pending["download_url"]) == ("pending", None)
    status_url = f"/v1/account/exports/{pending['id']}"
    download_url = f"{status_url}/download"
    # Asking again while it is pending returns the same archive, not a second job.
    again = await gw.client.post("/v1/account/exports", headers=ORIGIN)
    assert (again.status_code, again.json()["id"]) == (202, pending["id"])
    early = await gw.client.get(download_url)
    assert (early.status_code, early.json()["error"]["code"]) == (409, "export_not_ready")

    assert await gw.res.jobs.run_due() == 1
    ready = (await gw.client.get(status_url)).json()
    assert ready["status"] == "ready"
    assert ready["download_url"] == download_url
    assert _at(ready["expires_at"]) - _at(ready["ready_at"]) == timedelta(hours=24)
    # The person is told by e-mail (no SMTP_URL here: it goes to standard error).
    mail = capsys.readouterr().err
    assert "To: big@example.com" in mail and f"http://gateway.test{download_url}" in mail

    downloaded = await gw.client.get(download_url)
    assert downloaded.status_code == 200
    assert downloaded.headers["content-type"] == "application/zip"
    assert hashlib.sha256(downloaded.content).hexdigest() == ready["sha256"]
    assert len(downloaded.content) == ready["size_bytes"]
    files = checked(downloaded.content)
    assert lines(files["usage.jsonl"])[0]["prompt"] == STORED
    assert any(name.startswith("generated/") for name in files)
    assert (await gw.client.get(status_url)).json()["downloaded_at"] is not None

    # Audited once, and the request recorded when made is closed now that it is answered.
    assert await gw.rows(
        "SELECT actor_type, action FROM audit_log WHERE subject_account_id = :a", a=account_id
    ) == [{"actor_type": "user", "action": "export"}]
    assert await gw.rows(
        "SELECT type, status FROM data_subject_requests WHERE account_id = :a", a=account_id
    ) == [{"type": "export", "status": "completed"}]
    assert await gw.res.jobs.run_due() == 0  # nothing runs twice

    # Status and download accept the account's API key; starting an export does not.
    bearer = {"Authorization": f"Bearer {key}"}
    assert (await gw.client.get(status_url, headers=bearer)).status_code == 200
    refused = await gw.client.post("/v1/account/exports", headers=bearer)
    assert refused.json()["error"]["code"] == "reverification_required"

    # Past expires_at it is gone, even before the purge deletes the file...
    [archive] = await gw.rows("SELECT storage_key FROM export_archives")
    assert await gw.res.store.get(archive["storage_key"]) is not None
    # The archive sits in the outputs store, but /files never serves it to anyone.
    assert (await gw.client.get(f"/files/{archive['storage_key']}")).status_code == 404
    await gw.execute(
        "UPDATE export_archives SET expires_at = :t", t=utcnow() - timedelta(seconds=1)
    )
    gone = await gw.client.get(download_url)
    assert (gone.status_code, gone.json()["error"]["code"]) == (410, "export_expired")
    # ...and the purge (the retention job, with its own clock) deletes the file.
    assert await gw.res.export.purge_expired(utcnow()) == 1
    assert await gw.res.export.purge_expired(utcnow()) == 0
    assert await gw.res.store.get(archive["storage_key"]) is None
    assert (await gw.client.get(status_url)).json()["status"] == "expired"
    assert (await gw.client.get(download_url)).status_code == 410


async def test_the_ttl_counts_from_the_job_clock_and_the_purge_honours_it(
    gateway: Gateway,
) -> None:
    await signed_up(gateway, gateway.client, "clock@example.com")
    started = (await gateway.client.post("/v1/account/exports", headers=ORIGIN)).json()
    built_at = utcnow() + timedelta(minutes=5)
    assert await gateway.res.jobs.run_due(now=built_at) == 1
    ready = (await gateway.client.get(f"/v1/account/exports/{started['id']}")).json()
    assert _at(ready["ready_at"]) == built_at
    expiry = built_at + timedelta(hours=24)
    assert await gateway.res.export.purge_expired(expiry - timedelta(seconds=1)) == 0
    assert await gateway.res.export.purge_expired(expiry) == 1
    gone = await gateway.client.get(f"/v1/account/exports/{started['id']}/download")
    assert gone.status_code == 410


async def test_another_account_cannot_see_or_download_an_export(gateway: Gateway) -> None:
    await signed_up(gateway, gateway.client, "owner@example.com")
    started = (await gateway.client.post("/v1/account/exports", headers=ORIGIN)).json()
    assert await gateway.res.jobs.run_due() == 1
    async with httpx.AsyncClient(
        transport=gateway.client._transport, base_url="http://gateway.test"
    ) as other:
        await signed_up(gateway, other, "other@example.com")
        for path in ("", "/download"):
            response = await other.get(f"/v1/account/exports/{started['id']}{path}")
            assert response.status_code == 404, path
        assert (await other.get("/v1/account/exports/no-such-id")).status_code == 404
    assert (await gateway.client.get(f"/v1/account/exports/{started['id']}/download")).is_success


async def test_an_export_that_cannot_be_built_ends_failed(gateway: Gateway) -> None:
    # An archive queued for an account that no longer exists: every attempt fails.
    async with unit_of_work(gateway.res.engine) as conn:
        view = await export.request_archive(
            conn, "00000000-0000-4000-8000-000000000000", export.ExportActor("user", None), utcnow()
        )
    assert await gateway.res.jobs.run_due(max_attempts=1) == 1
    [job] = await gateway.rows("SELECT status, error FROM jobs WHERE kind = 'export'")
    assert job["status"] == "failed" and "AccountMissing" in job["error"]
    [archive] = await gateway.rows("SELECT id, status, storage_key FROM export_archives")
    assert archive == {"id": view.id, "status": "failed", "storage_key": None}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_the_download_link_of_a_large_account_leads_back_to_the_settings_page(
    gateway: Gateway,
) -> None:
    """A browser cannot read a 202: the link redirects to the privacy page, which lists the
    archive while it is prepared and links the download once it is ready."""
    gw = gateway
    await signed_up(gw, gw.client, "clicker@example.com")
    navigate = {"accept": "text/html,application/xhtml+xml", "sec-fetch-mode": "navigate"}

    clicked = await gw.client.get("/v1/account/export", headers=navigate)
    assert clicked.status_code == 303
    assert clicked.headers["location"] == "/account/privacy?done=export_started#data"
    page = await gw.client.get("/account/privacy?done=export_started")
    assert "being gathered" in page.text and "An export is being prepared" in page.text

    assert await gw.res.jobs.run_due() == 1
    page = await gw.client.get("/account/privacy")
    [archive] = await gw.rows("SELECT id FROM export_archives")
    link = f"/v1/account/exports/{archive['id']}/download"
    assert f'href="{link}"' in page.text
    downloaded = await gw.client.get(link)
    assert downloaded.status_code == 200 and downloaded.headers["content-type"] == "application/zip"
