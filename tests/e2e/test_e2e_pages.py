"""Every page of the website in a real browser, at a desktop and a phone width.

For each page in PAGES and each width in WIDTHS: a full-page screenshot is saved under
test-artifacts/screenshots/ (git-ignored; SCREENSHOT_DIR moves it), the page must not be
wider than the window (no sideways scroll), axe-core must find no serious or critical
accessibility violation, and no request may leave the server's origin while it loads.

To check a new page, add one `Page` line to PAGES (a `signed_in` page is visited as a user
who has a balance, an API key and one logged request; `{key_id}` in a path is that key).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from image_router.web.guides.library import load_guides
from tests.e2e.conftest import Server, fill_and_submit, running_server
from tests.e2e.test_e2e_browser import CHROMIUM, CHROMIUM_ARGS

EMAIL = "pages@example.com"
PASSWORD = "a passphrase for the page tour"
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "test-artifacts" / "screenshots"))
WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
#: axe-core impacts that fail the test; "moderate" and "minor" ones are reported only.
BLOCKING = ("serious", "critical")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


def _create_key_in_page(page: Any, url: str) -> None:
    """Reach the shown-once page of a new key: it only exists as the answer to the form."""
    page.goto(f"{url}/account/keys")
    page.fill('#create-key input[name="name"]', "page tour")
    page.click("#create-key button[type='submit']")
    page.wait_for_selector("#new-key-secret")


def _generate_in_playground(page: Any, url: str) -> None:
    """The playground with a result, its code and a gallery tile."""
    page.goto(f"{url}/playground?model=test/test")
    page.fill("#pg-prompt", "a lighthouse at dusk")
    page.fill("#pg-n", "2")
    page.click("#pg-submit")
    page.wait_for_selector("#pg-result img")
    page.click("#pg-code summary")


def _unmask_accounts(page: Any, url: str) -> None:
    """The accounts with e-mails in full, after giving a reason."""
    page.goto(f"{url}/admin/accounts")
    page.fill("#unmask input[name='reason']", "page tour")
    page.click("#unmask button[type='submit']")
    page.wait_for_selector("text=shown in full (audited)")


def _grant_over_the_cap(page: Any, url: str) -> None:
    """An account's page refusing a grant above ADMIN_GRANT_MAX_USD (the error state)."""
    page.goto(f"{url}/admin/accounts")
    page.click("tr[data-account-id] a")
    page.fill("#grant input[name='amount_usd']", "5000")
    page.fill("#grant input[name='reason']", "page tour")
    page.click("#grant button[type='submit']")
    page.wait_for_selector(".message.error")


@dataclass(frozen=True)
class Page:
    name: str  # the screenshot's file name
    path: str  # may hold {key_id}
    signed_in: bool = False
    #: Visited as the admin (signed in through a one-time link); paths may hold {account_id}.
    admin: bool = False
    #: Navigates to the page itself when a plain visit of `path` cannot reach it.
    arrive: Callable[[Any, str], None] | None = None
    status: int = 200
    #: A third-party widget that axe-core leaves out; the page around it is still checked.
    axe_exclude: str | None = None


PAGES = [
    Page("home", "/"),
    Page("signin", "/signin"),
    Page("signup", "/signup"),
    Page("forgot", "/password/forgot"),
    Page("reset-invalid", "/password/reset?token=not-a-real-token", status=400),
    Page("privacy-policy", "/privacy"),
    Page("terms", "/terms"),
    Page("cookies", "/cookies"),
    # Swagger UI renders the OpenAPI document itself (fastapi-offline's bundle); its own
    # markup nests a button in a button (axe: nested-interactive), which we cannot change.
    Page("docs", "/docs", axe_exclude="#api-docs .opblock-summary"),
    Page("guides", "/docs/guides"),
    *(Page(f"guide-{g.slug}", g.path) for g in load_guides()),
    Page("models", "/models"),
    Page("models-filtered", "/models?type=image&images=1&sort=price&max_price=0.05"),
    Page("model", "/models/openai/dall-e-3?quality=high"),
    Page("model-unavailable", "/models/google/veo-3"),
    Page("model-refused", "/models/openai/dall-e-3?size=12x12"),
    Page("model-missing", "/models/nobody/nothing", status=404),
    Page("pricing", "/pricing"),
    Page("playground", "/playground"),
    Page("playground-result", "/playground", arrive=_generate_in_playground),
    Page("home-signed-in", "/", signed_in=True),
    Page("playground-signed-in", "/playground?model=openai/gpt-image-1", signed_in=True),
    Page("account", "/account", signed_in=True),
    Page("keys", "/account/keys", signed_in=True),
    Page("key-created", "/account/keys", signed_in=True, arrive=_create_key_in_page),
    Page("key-revoke", "/account/keys/{key_id}/revoke", signed_in=True),
    Page("webhooks", "/account/webhooks", signed_in=True),
    Page("billing", "/billing", signed_in=True),
    Page("usage", "/usage", signed_in=True),
    Page("usage-filtered", "/usage?model=test/test&status=success&from=2020-01-01", signed_in=True),
    Page("password", "/account/password", signed_in=True),
    Page("settings-privacy", "/account/privacy", signed_in=True),
    Page("settings-profile", "/account/profile", signed_in=True),
    Page("settings-delete", "/account/privacy/delete", signed_in=True),
    Page("error", "/account/keys/no-such-key/revoke", signed_in=True, status=404),
    Page("signin-once", "/signin/once?token={once_token}"),
    Page("signin-once-invalid", "/signin/once?token=not-a-real-token", status=400),
    Page("admin", "/admin", admin=True),
    Page("admin-accounts", "/admin/accounts", admin=True),
    Page("admin-accounts-unmasked", "/admin/accounts", admin=True, arrive=_unmask_accounts),
    Page("admin-account", "/admin/accounts/{account_id}", admin=True),
    Page("admin-grant-over-cap", "/admin", admin=True, arrive=_grant_over_the_cap),
    Page("admin-usage", "/admin/usage", admin=True),
    Page("admin-providers", "/admin/providers", admin=True),
    Page("admin-catalog", "/admin/catalog", admin=True),
]


@dataclass
class Site:
    server: Server
    browser: Any
    user_state: dict[str, Any]  # the signed-in user's cookies (Playwright storage state)
    admin_state: dict[str, Any]  # the admin's
    facts: dict[str, str]  # what paths may name: key_id, account_id, once_token (the user's)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from playwright.sync_api import sync_playwright

    with (
        running_server(tmp_path_factory.mktemp("pages-data")) as server,
        sync_playwright() as pw,
    ):
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(f"{server.url}/signup")
            fill_and_submit(page, EMAIL, PASSWORD)
            page.wait_for_url(f"{server.url}/account")
            server.cli("credits", "grant", EMAIL, "5", "--reason", "page tour")
            key = server.cli("keys", "create", EMAIL, "--name", "tour key").stdout.split()[-1]
            generated = httpx.post(
                f"{server.url}/v1/openai/images/generations",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "test/test", "prompt": "a lighthouse at dusk", "size": "256x256"},
                timeout=60,
            )
            assert generated.status_code == 200, generated.text
            paid = httpx.post(  # a paid request, so the spend charts have a bar
                f"{server.url}/v1/openai/images/generations",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "openai/gpt-image-1", "prompt": "a red kite", "size": "1024x1024"},
                timeout=60,
            )
            assert paid.status_code == 200, paid.text
            page.goto(f"{server.url}/account/keys")
            key_id = page.get_attribute("tr[data-key-id]", "data-key-id")
            assert key_id
            state = context.storage_state()
            context.close()
            account_id = next(
                line.split("\t")[-1]
                for line in server.cli("users", "list").stdout.splitlines()
                if line.startswith("p***@example.com")
            )
            link = server.cli("users", "signin-link", EMAIL).stdout.split()[-1]
            once_token = link.split("token=", 1)[1]  # only shown: opening it spends nothing
            yield Site(
                server,
                browser,
                state,
                _admin_state(browser, server),
                {"key_id": key_id, "account_id": account_id, "once_token": once_token},
            )
        finally:
            browser.close()


def _admin_state(browser: Any, server: Server) -> dict[str, Any]:
    """The admin signed in through a one-time link from the CLI (it sets a password)."""
    printed = server.cli("users", "signin-link", "admin@localhost").stdout.split()[-1]
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + printed[printed.index("/signin/once") :])
    page.fill("main input[name='password']", "the admin's passphrase")
    page.fill("main input[name='password_again']", "the admin's passphrase")
    page.click("main button[type='submit']")
    page.wait_for_url(f"{server.url}/admin")
    state: dict[str, Any] = context.storage_state()
    context.close()
    return state


def _blocking_violations(page: Any, exclude: str | None) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    context = {"exclude": [[exclude]]} if exclude else None
    results = Axe().run(page, context=context)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} — "
        + ", ".join(str(node["target"]) for node in v["nodes"][:5])
        for v in results.response["violations"]
        if v["impact"] in BLOCKING
    ]


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("spec", PAGES, ids=[p.name for p in PAGES])
def test_page(site: Site, spec: Page, width: str) -> None:
    w, h = WIDTHS[width]
    context = site.browser.new_context(
        viewport={"width": w, "height": h},
        storage_state=(
            site.admin_state if spec.admin else site.user_state if spec.signed_in else None
        ),
    )
    try:
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        url = site.server.url + spec.path.format(**site.facts)
        if spec.arrive is not None:
            spec.arrive(page, site.server.url)
        else:
            response = page.goto(url, wait_until="networkidle")
            assert response is not None and response.status == spec.status, url
        page.wait_for_load_state("networkidle")

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{spec.name}-{w}.png"), full_page=True)

        widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"{spec.path} scrolls sideways at {w}px: {widths}"

        assert _blocking_violations(page, spec.axe_exclude) == []

        foreign = [
            u for u in requested if not u.startswith((site.server.url + "/", "data:", "blob:"))
        ]
        assert foreign == [], f"requests leaving {site.server.url}: {foreign}"
    finally:
        context.close()


def test_the_menu_folds_on_a_phone_and_opens_without_script(site: Site) -> None:
    """At 390 px the links hide behind "Menu"; the menu works with JavaScript turned off."""
    context = site.browser.new_context(
        viewport={"width": 390, "height": 844},
        storage_state=site.user_state,
        java_script_enabled=False,
    )
    try:
        page = context.new_page()
        page.goto(f"{site.server.url}/account")
        keys_link = page.locator("header a:has-text('API keys')")
        assert not keys_link.is_visible()
        page.click("header label:has-text('Menu')")
        assert keys_link.is_visible()
        keys_link.click()
        page.wait_for_url(f"{site.server.url}/account/keys")
    finally:
        context.close()


def test_the_menu_is_open_on_a_desktop(site: Site) -> None:
    context = site.browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.goto(f"{site.server.url}/")
        assert page.locator("header a:has-text('Sign in')").is_visible()
        assert not page.locator("header label:has-text('Menu')").is_visible()
    finally:
        context.close()
