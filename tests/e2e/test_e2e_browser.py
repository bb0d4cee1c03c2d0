"""The website in a real browser: Debian's chromium driven by Playwright, against a real
server process. Sign up, sign out, sign in, see the account; call the API from the page
with a website token; then an API key (created and revoked with the CLI, as the key pages
do not exist yet) used with the `openai` SDK and refused once revoked."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.e2e.conftest import Server, base_env, free_port, start_server
from tests.fakes.openai import FakeOpenAI
from tests.fakes.upstream import serve_in_thread

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
EMAIL = "browser@example.com"
PASSWORD = "a browser passphrase"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]

CALL_API_FROM_PAGE = """async () => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const minted = await fetch('/v1/web-token', {method: 'POST', headers: {'X-CSRF-Token': csrf}});
  const {token} = await minted.json();
  const used = await fetch('/v1/auth/test', {
    method: 'POST', headers: {Authorization: 'Bearer ' + token}});
  return {minted: minted.status, used: used.status, body: await used.json(),
          length: token.length};
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    fake = FakeOpenAI()
    with serve_in_thread(fake.app) as openai_url:
        env = base_env(tmp_path_factory.mktemp("site-data"), openai_url)
        env["JWT_SECRET"] = "browser-test-secret-0123456789abcdef"
        port = free_port()
        process, key = start_server(env, port)
        try:
            yield Server(f"http://127.0.0.1:{port}", env, process, key, fake)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
            if process.stdout:
                process.stdout.close()


def _fill_and_submit(page: Any, email: str, password: str) -> None:
    page.fill('main input[name="email"]', email)
    page.fill('main input[name="password"]', password)
    page.click('main button[type="submit"]')


def test_sign_up_sign_in_and_use_the_api(site: Server) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page = browser.new_page()
            page.goto(f"{site.url}/signup")
            _fill_and_submit(page, EMAIL, PASSWORD)
            page.wait_for_url(f"{site.url}/account")
            assert page.text_content("#account-email") == EMAIL
            assert "Welcome!" in page.content()

            page.click("header button:has-text('Sign out')")
            page.wait_for_url(f"{site.url}/")
            assert "You have been signed out." in page.content()

            page.goto(f"{site.url}/signin")
            _fill_and_submit(page, EMAIL, "not the password")
            assert "Invalid e-mail or password." in page.content()
            _fill_and_submit(page, EMAIL, PASSWORD)
            page.wait_for_url(f"{site.url}/account")
            assert page.text_content("#account-balance") == "$0.0000"

            called = page.evaluate(CALL_API_FROM_PAGE)
            assert called["minted"] == 200 and called["length"] >= 100
            assert called["used"] == 200 and called["body"] == {"success": True, "credits": 0}

            created = site.cli("keys", "create", EMAIL, "--name", "browser test")
            key = created.stdout.strip().splitlines()[-1]
            site.cli("credits", "grant", EMAIL, "1", "--reason", "browser test")
            page.reload()
            assert page.text_content("#account-balance") == "$1.0000"
        finally:
            browser.close()

    sdk = openai.OpenAI(api_key=key, base_url=f"{site.url}/v1/openai", max_retries=0)
    result = sdk.images.generate(model="test/test", prompt="a kite")
    assert result.data
    key_id = site.cli("keys", "list", EMAIL).stdout.split("\t")[0]
    site.cli("keys", "revoke", key_id)
    with pytest.raises(openai.AuthenticationError):
        sdk.images.generate(model="test/test", prompt="a kite")
