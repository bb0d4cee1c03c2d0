"""The playground in a real browser against a real server (its vendor a fake OpenAI).

- a guest generates with a free model: the browser solves the ALTCHA human check itself,
  gets a website token, and sees the image, the cost and the free count going down;
- a signed-in user with credit generates with a paid model and sees the price before and
  the cost after, which is what the ledger charged;
- Cancel really cancels: a signed-in account's generation is a job, Cancel is
  `POST /v1/jobs/{id}/cancel`, and the gateway gives the hold back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, running_server, signed_up_with_credit
from tests.e2e.test_e2e_browser import CHROMIUM

EMAIL = "player@example.com"
PASSWORD = "a passphrase for the playground"
PAID = "openai/gpt-image-1"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # The human check is on here (the other end-to-end suites turn it off); a small
    # difficulty keeps the browser's proof of work quick.
    with running_server(
        tmp_path_factory.mktemp("playground-data"),
        HUMAN_CHECK="altcha",
        HUMAN_CHECK_MAX_NUMBER="20000",
    ) as started:
        yield started


@pytest.fixture(scope="module")
def user(server: Server, browser: Any) -> dict[str, Any]:
    """A signed-in user with $5 of credit: the browser's storage state, and an API key."""
    return signed_up_with_credit(server, browser, EMAIL, PASSWORD, reason="playground test")


def _remaining(server: Server, key: str) -> str:
    credits = httpx.get(
        f"{server.url}/v1/credits", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert credits.status_code == 200, credits.text
    return str(credits.json()["remaining_credits"])


def test_a_guest_generates_with_a_free_model(server: Server, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        sent: list[tuple[str, str]] = []
        page.on("request", lambda r: sent.append((r.method, r.url)))
        page.goto(f"{server.url}/playground")
        chosen = page.input_value("#pg-model")
        assert chosen.endswith(":free"), chosen  # a free model by default
        assert page.inner_text("#pg-free-left") == "10 of 10 free generations left today"
        page.wait_for_function(
            "document.getElementById('pg-estimate').textContent !== 'Estimated cost: …'"
        )

        page.fill("#pg-prompt", "a red bicycle by the sea")
        # Keyboard alone: Ctrl+Enter in the prompt generates.
        page.focus("#pg-prompt")
        with page.expect_response(
            lambda r: r.url.endswith("/v1/web-token") and r.request.method == "POST"
        ) as minted:
            page.keyboard.press("Control+Enter")
        assert minted.value.status == 200
        page.wait_for_selector("#pg-result img", timeout=30_000)

        status = page.inner_text("#pg-status")
        assert status.startswith("Done: 1 image in"), status
        assert page.inner_text("#pg-cost") == "free"
        image = page.locator("#pg-result img").first
        assert image.evaluate("img => img.complete && img.naturalWidth > 0")
        assert page.locator("#pg-result a:has-text('Download image 1')").count() == 1
        assert "curl" in (page.text_content("#pg-code-curl") or "")
        # The human check ran in this browser, against this server only.
        assert ("GET", f"{server.url}/v1/web-token/challenge") in sent
        assert all(url.startswith((server.url, "data:", "blob:")) for _, url in sent)
        page.wait_for_function(
            "document.getElementById('pg-free-left').textContent.startsWith('9 of 10')"
        )
        # The browser keeps a guest's recent results.
        assert page.locator("#pg-gallery li").count() == 1
        page.reload()
        assert page.locator("#pg-gallery li img").count() == 1
    finally:
        context.close()


def test_a_user_with_credit_sees_the_price_and_the_cost(
    server: Server, browser: Any, user: dict[str, Any]
) -> None:
    context = browser.new_context(storage_state=user["state"])
    try:
        page = context.new_page()
        page.goto(f"{server.url}/playground?model={PAID}")
        assert page.input_value("#pg-model") == PAID
        page.select_option("#pg-quality", "low")
        page.select_option("#pg-size", "1024x1024")
        page.wait_for_function("document.getElementById('pg-estimate').textContent.includes('$')")
        estimate = page.inner_text("#pg-estimate")
        before = _remaining(server, user["key"])

        page.fill("#pg-prompt", "a lighthouse at dusk")
        page.click("#pg-submit")
        page.wait_for_selector("#pg-result img", timeout=30_000)

        cost = page.inner_text("#pg-cost")
        assert cost.startswith("$"), cost
        charged = float(before) - float(_remaining(server, user["key"]))
        assert abs(float(cost[1:]) - charged) < 1e-9, (cost, charged)
        assert cost in estimate or "at most" in estimate, (estimate, cost)
        usage = page.locator("#pg-result a:has-text('See it in your usage')")
        assert "id=" in (usage.get_attribute("href") or "")
        assert server.openai.requests[-1].json["model"] == "gpt-image-1"
    finally:
        context.close()


def test_cancel_gives_the_hold_back(server: Server, browser: Any, user: dict[str, Any]) -> None:
    context = browser.new_context(storage_state=user["state"])
    try:
        page = context.new_page()
        page.goto(f"{server.url}/playground?model={PAID}")
        before = _remaining(server, user["key"])
        calls = len(server.openai.requests)
        server.openai.hang_next(60)
        page.fill("#pg-prompt", "a slow painting")
        page.click("#pg-submit")
        deadline = time.monotonic() + 20
        while len(server.openai.requests) == calls and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(server.openai.requests) > calls, "the vendor was never called"
        assert float(_remaining(server, user["key"])) < float(before)  # held while it runs
        # The elapsed time shows while it runs (the counter's first tick may still be due).
        page.wait_for_function(
            "document.querySelector('#pg-elapsed').innerText.endsWith(' s')", timeout=5000
        )

        with page.expect_response(lambda r: r.url.endswith("/cancel")) as cancelled:
            page.click("#pg-cancel")
        assert cancelled.value.status == 200
        assert cancelled.value.json()["status"] == "cancelled"
        page.wait_for_function(
            "document.getElementById('pg-status').textContent.startsWith('Cancelled')"
        )
        deadline = time.monotonic() + 20
        while _remaining(server, user["key"]) != before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _remaining(server, user["key"]) == before
        assert page.locator("#pg-submit").is_enabled()
    finally:
        server.openai.reset()
        context.close()
