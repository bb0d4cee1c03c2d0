"""`/usage` in a real browser against a real server (its vendor a fake OpenAI): a signed-in
user with credit generates with their key (a paid model and a free one), finds the row with
its thumbnail, filters it, opens it by `?id=` and downloads the filtered rows as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, fill_and_submit, running_server
from tests.e2e.test_e2e_browser import CHROMIUM, CHROMIUM_ARGS

EMAIL = "usage-tour@example.com"
PASSWORD = "a passphrase for the usage tour"
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
    with running_server(tmp_path_factory.mktemp("usage-data")) as started:
        yield started


def _generate(server: Server, key: str, model: str, prompt: str) -> httpx.Response:
    response = httpx.post(
        f"{server.url}/v1/openai/images/generations",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "prompt": prompt, "size": "1024x1024"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return response


def test_find_filter_and_export_a_generation(server: Server) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            page: Any = browser.new_context(accept_downloads=True).new_page()
            page.goto(f"{server.url}/signup")
            fill_and_submit(page, EMAIL, PASSWORD)
            page.wait_for_url(f"{server.url}/account")
            server.cli("credits", "grant", EMAIL, "5", "--reason", "usage tour")
            key = server.cli("keys", "create", EMAIL, "--name", "tour").stdout.split()[-1]
            paid = _generate(server, key, PAID, "a red kite over the sea")
            _generate(server, key, "test/test", "a free lighthouse")
            gid = paid.headers["x-generation-id"]
            cost = Decimal(str(paid.json()["cost"]))
            assert cost > 0

            # The row, with its thumbnail loaded from this server.
            page.goto(f"{server.url}/usage")
            row = page.locator(f"#log-{gid}")
            assert row.locator("td.model").inner_text() == PAID
            assert "a red kite over the sea" in row.inner_text()
            assert row.locator("td.key").inner_text() == "tour"
            thumb = row.locator("img.thumb")
            thumb.wait_for()
            assert thumb.evaluate("img => img.complete && img.naturalWidth > 0")
            assert page.get_attribute("#usage-totals", "data-requests") == "2"

            # Filter by model (keyboard and form, no script needed).
            page.select_option("select[name=model]", PAID)
            page.click("#usage-filters button[type=submit]")
            page.wait_for_url(f"{server.url}/usage?*model=*")
            assert page.locator("table.usage tbody tr").count() == 1
            assert page.get_attribute("#usage-totals", "data-requests") == "1"
            assert page.get_attribute("#usage-totals", "data-spend") == f"${cost:.4f}"

            # The CSV of the filtered rows.
            with page.expect_download() as info:
                page.click("#usage-csv")
            text = Path(info.value.path()).read_text(encoding="utf-8")
            [exported] = list(csv.DictReader(io.StringIO(text)))
            assert exported["id"] == gid and exported["model"] == PAID
            assert Decimal(exported["cost_usd"]) == cost
            assert exported["prompt"] == "a red kite over the sea"
            assert exported["key"] == "tour" and exported["status"] == "success"

            # The playground's link to a result opens that row.
            page.goto(f"{server.url}/usage?id={gid}")
            assert page.locator("tr.highlight").get_attribute("id") == f"log-{gid}"
        finally:
            browser.close()
