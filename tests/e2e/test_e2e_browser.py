"""The website in a real browser: Debian's chromium driven by Playwright, against a real
server process. Sign up, sign out, sign in, see the account; call the API from the page
with a website token; then create an API key on the keys page, copy its shown-once secret
from the page, use it with the `openai` SDK, revoke it on the page and see the SDK refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
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
    with running_server(
        tmp_path_factory.mktemp("site-data"), JWT_SECRET="browser-test-secret-0123456789abcdef"
    ) as started:
        yield started


def _create_key(page: Any, site: Server, name: str) -> str:
    """Create a key on the keys page; the secret as the page shows it, copied with its button."""
    page.click("header a:has-text('API keys')")
    page.wait_for_url(f"{site.url}/account/keys")
    assert "You have no API keys yet" in page.content()
    page.fill('#create-key input[name="name"]', name)
    page.fill('#create-key input[name="spend_limit"]', "0.50")
    page.select_option('#create-key select[name="spend_limit_period"]', "day")
    page.click("#create-key button[type='submit']")
    page.wait_for_selector("#new-key-secret")
    assert "this is the only time it is shown" in page.content()
    page.click("#copy-key")
    page.wait_for_selector("#copy-result:has-text('Copied.')")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == page.text_content("#new-key-secret")
    return str(copied)


def _revoke_key(page: Any, site: Server, name: str, secret: str) -> None:
    page.goto(f"{site.url}/account/keys")
    assert secret not in page.content()  # shown once, never again
    row = page.locator("tr[data-key-id]")
    assert row.locator(".key-masked").text_content() == f"{secret[:8]}…{secret[-4:]}"
    assert row.locator(".key-limit").text_content().startswith("$0.5000 per UTC day")
    row.locator("a.revoke").click()
    assert page.text_content("h1") == f"Revoke “{name}”?"
    page.click("#revoke-key button[type='submit']")
    page.wait_for_url(f"{site.url}/account/keys?done=revoked")
    assert "The key has been revoked" in page.content()
    assert page.locator("tr[data-key-id]").count() == 0


def test_sign_up_sign_in_and_manage_keys(site: Server) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context()
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
            page = context.new_page()
            page.goto(f"{site.url}/signup")
            fill_and_submit(page, EMAIL, PASSWORD)
            page.wait_for_url(f"{site.url}/account")
            assert page.text_content("#account-email") == EMAIL
            assert "Welcome!" in page.content()

            page.click("header button:has-text('Sign out')")
            page.wait_for_url(f"{site.url}/")
            assert "You have been signed out." in page.content()

            page.goto(f"{site.url}/signin")
            fill_and_submit(page, EMAIL, "not the password")
            assert "Invalid e-mail or password." in page.content()
            fill_and_submit(page, EMAIL, PASSWORD)
            page.wait_for_url(f"{site.url}/account")
            assert page.text_content("#account-balance") == "$0.0000"

            called = page.evaluate(CALL_API_FROM_PAGE)
            assert called["minted"] == 200 and called["length"] >= 100
            assert called["used"] == 200 and called["body"] == {"success": True, "credits": 0}

            site.cli("credits", "grant", EMAIL, "1", "--reason", "browser test")
            page.reload()
            assert page.text_content("#account-balance") == "$1.0000"

            key = _create_key(page, site, "browser test")
            sdk = openai.OpenAI(api_key=key, base_url=f"{site.url}/v1/openai", max_retries=0)
            result = sdk.images.generate(model="test/test", prompt="a kite")
            assert result.data and result.data[0].url

            _revoke_key(page, site, "browser test", key)
        finally:
            browser.close()

    with pytest.raises(openai.AuthenticationError) as refused:
        sdk.images.generate(model="test/test", prompt="a kite")
    assert refused.value.status_code == 401
