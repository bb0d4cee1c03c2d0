"""The privacy settings in a real browser (Debian's chromium driven by Playwright) against a
real server process: sign up, generate once, switch prompt storing off (and see it stay off
after a reload), download the data export, delete the account with the typed confirmation,
end signed out, and find the old credentials refused."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Server, fill_and_submit, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
EMAIL = "privacy-browser@example.com"
PASSWORD = "a privacy passphrase"
PROMPT = "a lighthouse in the fog"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("privacy-site")) as started:
        yield started


def _generate_once(site: Server) -> None:
    key = site.cli("keys", "create", EMAIL, "--name", "privacy test").stdout.strip().splitlines()
    site.cli("credits", "grant", EMAIL, "1", "--reason", "privacy browser test")
    response = httpx.post(
        f"{site.url}/v1/openai/images/generations",
        headers={"Authorization": f"Bearer {key[-1]}"},
        json={"model": "openai/dall-e-2", "prompt": PROMPT, "size": "1024x1024"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def test_privacy_settings_export_and_account_deletion(site: Server) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context(accept_downloads=True)
            page = context.new_page()
            page.goto(f"{site.url}/signup")
            fill_and_submit(page, EMAIL, PASSWORD)
            page.wait_for_url(f"{site.url}/account")
            _generate_once(site)

            page.click("header a:has-text('Settings')")
            page.wait_for_url(f"{site.url}/account/privacy")
            assert page.is_checked("#pref-store_prompts")
            page.uncheck("#pref-store_prompts")
            page.click("#preferences button[type='submit']")
            page.wait_for_url(f"{site.url}/account/privacy?done=saved")
            page.reload()
            assert not page.is_checked("#pref-store_prompts")
            assert page.is_checked("#pref-allow_routing_improvement")

            with page.expect_download() as downloading:
                page.click("#download-data")
            archive = Path(downloading.value.path()).read_bytes()
            with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
                names = set(zipped.namelist())
                assert {"manifest.json", "account.json"} <= names
                account = json.loads(zipped.read("account.json"))
                assert EMAIL in json.dumps(account)
                usage = zipped.read("usage.jsonl").decode() if "usage.jsonl" in names else ""
            assert PROMPT in usage  # stored before storing was switched off

            page.click("#delete-account-link")
            page.wait_for_url(f"{site.url}/account/privacy/delete")
            shown = page.text_content("#delete-balance strong") or ""
            assert 0 < float(shown.removeprefix("$")) < 1  # $1 granted, one generation paid
            page.fill("#delete-account input[name='confirm']", "DELETE MY ACCOUNT")
            page.click("#delete-account button[type='submit']")
            page.wait_for_selector("#account-deleted")
            assert page.is_visible("header a:has-text('Sign in')")
            assert not page.is_visible("header button:has-text('Sign out')")

            page.goto(f"{site.url}/account")
            page.wait_for_url(f"{site.url}/signin")
            fill_and_submit(page, EMAIL, PASSWORD)
            assert "Invalid e-mail or password." in page.content()
        finally:
            browser.close()
