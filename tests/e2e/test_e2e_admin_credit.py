"""In chromium against a real server: the admin signs in with a one-time link, finds a person's
account, grants credit and later deducts some; the person sees both in their billing
history, and the API agrees (`/v1/credits`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, fill_and_submit, running_server
from tests.e2e.test_e2e_browser import CHROMIUM

EMAIL = "buyer@example.com"
PASSWORD = "the buyer's passphrase"
ADMIN_PASSWORD = "the operator's passphrase"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


def signin_link(server: Server, email: str) -> str:
    """A one-time sign-in link from the CLI, on this server's address."""
    printed = server.cli("users", "signin-link", email).stdout.strip().splitlines()[-1]
    return server.url + printed[printed.index("/signin/once") :]


def sign_in_as_admin(page: Any, server: Server) -> None:
    page.goto(signin_link(server, "admin@localhost"))
    page.fill('main input[name="password"]', ADMIN_PASSWORD)
    page.fill('main input[name="password_again"]', ADMIN_PASSWORD)
    page.click('main button[type="submit"]')
    page.wait_for_url(f"{server.url}/admin")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("admin-credit")) as started:
        yield started


def credits_of(server: Server, key: str) -> dict[str, Any]:
    answer = httpx.get(
        f"{server.url}/v1/credits", headers={"Authorization": f"Bearer {key}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_an_admin_grants_and_deducts_and_the_person_sees_both(server: Server, browser: Any) -> None:
    person = browser.new_context().new_page()
    person.goto(f"{server.url}/signup")
    fill_and_submit(person, EMAIL, PASSWORD)
    person.wait_for_url(f"{server.url}/account")
    key = server.cli("keys", "create", EMAIL, "--name", "check").stdout.split()[-1]

    admin = browser.new_context().new_page()
    sign_in_as_admin(admin, server)
    admin.click("main a[href='/admin/accounts']")
    admin.fill("main input[name='q']", EMAIL)
    admin.click("main form[role='search'] button")
    rows = admin.locator("tr[data-account-id]")
    assert rows.count() == 1 and "b***@example.com" in rows.inner_text()
    rows.locator("a").click()

    admin.fill("#grant input[name='amount_usd']", "7.50")
    admin.fill("#grant input[name='reason']", "welcome credit")
    admin.click("#grant button[type='submit']")
    admin.wait_for_selector("text=The credit has been granted.")
    assert admin.inner_text("#admin-balance") == "$7.5000"

    person.goto(f"{server.url}/billing")
    granted = person.locator("tr[data-kind='grant']")
    assert granted.count() == 1
    assert "welcome credit" in granted.inner_text() and "7.50" in granted.inner_text()
    assert credits_of(server, key)["remaining_credits"] == "7.5000"

    admin.fill("#deduct input[name='amount_usd']", "2.5")
    admin.fill("#deduct input[name='reason']", "duplicate grant")
    admin.click("#deduct button[type='submit']")
    admin.wait_for_selector("text=The credit has been deducted.")
    assert admin.inner_text("#admin-balance") == "$5.0000"
    # More than is left: refused, nothing taken.
    admin.fill("#deduct input[name='amount_usd']", "50")
    admin.fill("#deduct input[name='reason']", "too much")
    admin.click("#deduct button[type='submit']")
    admin.wait_for_selector("text=a deduction never takes a balance below zero")
    assert admin.inner_text("#admin-balance") == "$5.0000"

    person.goto(f"{server.url}/billing")
    deducted = person.locator("tr[data-kind='deduction']")
    assert deducted.count() == 1
    assert "duplicate grant" in deducted.inner_text() and "2.50" in deducted.inner_text()
    assert credits_of(server, key) == {
        "remaining_credits": "5.0000",
        "credit_usage": "0.0000",
        "total_deposits": "5.0000",
    }
    audit = server.cli("audit", "list").stdout
    assert audit.count("credit_grant") == 1 and audit.count("credit_deduct") == 1


def test_a_person_who_is_not_an_admin_finds_nothing(server: Server, browser: Any) -> None:
    page = browser.new_context().new_page()
    page.goto(f"{server.url}/signup")
    fill_and_submit(page, "not-an-admin@example.com", PASSWORD)
    page.wait_for_url(f"{server.url}/account")
    assert page.locator("header a[href='/admin']").count() == 0
    response = page.goto(f"{server.url}/admin/accounts")
    assert response is not None and response.status == 404
