"""The price calculator of `/models/{id}` in a real browser shows what the API then charges:
for several models and parameters, the page's live quote (its script asks
`/v1/models/{id}/quote`) equals the `cost` of the same request sent with an API key to a
real server process, its vendor a fake OpenAI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, running_server
from tests.e2e.test_e2e_browser import CHROMIUM

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@dataclass(frozen=True)
class Case:
    model: str
    selects: dict[str, str] = field(default_factory=dict)  # calculator field -> option
    fills: dict[str, str] = field(default_factory=dict)  # calculator field -> typed text
    shown: str = ""  # the amount the page shows


CASES = [
    Case("openai/dall-e-3", {"quality": "high", "size": "1792x1024"}, shown="$0.12"),
    Case("openai/dall-e-3", {"size": "1024x1792"}, shown="$0.08"),
    Case("openai/dall-e-2", {"size": "256x256"}, shown="$0.016"),
    Case("test/test", fills={"size": "320x240", "n": "3"}, shown="$0"),
]


@pytest.fixture(scope="module")
def server_and_key(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    with running_server(tmp_path_factory.mktemp("calculator-data")) as server:
        assert server.bootstrap_key is not None
        server.cli("credits", "grant", "admin@localhost", "10", "--reason", "calculator test")
        yield server, server.bootstrap_key


def _page_quote(page: Any, url: str, case: Case) -> tuple[str, int, dict[str, str]]:
    """Set the calculator's fields in the page; the amount shown, its credits, and the
    parameters the page sent."""
    page.goto(f"{url}/models/{case.model}", wait_until="networkidle")
    form = page.locator("#quote-form")
    for name, value in case.selects.items():
        with page.expect_response(lambda r: "/quote?" in r.url):
            form.locator(f"select[name='{name}']").select_option(value)
    for name, value in case.fills.items():
        with page.expect_response(lambda r, v=value: "/quote?" in r.url and v in r.url):
            form.locator(f"input[name='{name}']").fill(value)
    page.wait_for_load_state("networkidle")
    amount = page.locator("#quote-amount")
    sent = page.evaluate(
        "() => Object.fromEntries(new FormData(document.getElementById('quote-form')))"
    )
    return amount.inner_text(), int(amount.get_attribute("data-credits") or -1), sent


@pytest.mark.parametrize("case", CASES, ids=[f"{c.model}-{c.shown}" for c in CASES])
def test_the_calculator_shows_what_the_api_charges(
    server_and_key: tuple[Server, str], browser: Any, case: Case
) -> None:
    server, key = server_and_key
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        shown, credits, sent = _page_quote(context.new_page(), server.url, case)
    finally:
        context.close()
    assert shown == case.shown

    body: dict[str, Any] = {"model": case.model, "prompt": "a lighthouse at dusk"}
    body.update({k: v for k, v in sent.items() if k in ("size", "quality")})
    if "n" in sent:
        body["n"] = int(sent["n"])
    answer = httpx.post(
        f"{server.url}/v1/openai/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json=body,
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["cost"] == pytest.approx(credits / 10_000)
    assert len(answer.json()["data"]) == body.get("n", 1)


def test_without_javascript_the_form_asks_the_server(
    server_and_key: tuple[Server, str], browser: Any
) -> None:
    server, _ = server_and_key
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/models/openai/dall-e-3")
        page.select_option("#quote-form select[name='quality']", "high")
        page.select_option("#quote-form select[name='size']", "1024x1792")
        page.click("#quote-form button[type='submit']")
        page.wait_for_url("**quality=high**")
        assert page.locator("#quote-amount").inner_text() == "$0.12"
    finally:
        context.close()
