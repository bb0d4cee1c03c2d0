"""Long jobs on the website, in a real browser against a real server (issue #14 §5).

- The playground runs a signed-in account's video as a job: the id goes into the address,
  a reload picks the job up again (its state and elapsed time) and shows its result, and
  the vendor was asked once; Cancel cancels the job on the server.
- A guest, who cannot have jobs, is told to keep the page open for a video.
- `/usage` shows a job's state: a running row updates by itself until it has finished
  (and says to refresh without JavaScript), a cancelled one says so.

The slow generations are the offline `ir/test-video` with a `[test:sleep=N]` marker.
Screenshots of each state go to SCREENSHOT_DIR (default test-artifacts/screenshots), the
phone width in the dark theme; axe checks each.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Server, running_server, signed_up_with_credit
from tests.e2e.test_e2e_browser import CHROMIUM
from tests.e2e.test_e2e_pages import SCREENSHOTS, WIDTHS, _blocking_violations

EMAIL = "long-jobs@example.com"
PASSWORD = "a passphrase for long jobs"
VIDEO = "ir/test-video"

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
    with running_server(tmp_path_factory.mktemp("long-jobs-web")) as started:
        yield started


@pytest.fixture(scope="module")
def user(server: Server, browser: Any) -> dict[str, Any]:
    """A signed-in user with credit: the browser's storage state, and an API key."""
    return signed_up_with_credit(server, browser, EMAIL, PASSWORD, reason="long jobs test")


def _api(server: Server, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method,
        f"{server.url}{path}",
        headers={"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})},
        timeout=30,
        **kwargs,
    )


def _submit(server: Server, key: str, prompt: str) -> str:
    answer = _api(
        server,
        key,
        "POST",
        "/v1/openai/videos/generations",
        headers={"Prefer": "respond-async"},
        json={"model": VIDEO, "prompt": prompt},
    )
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _shoot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    width = page.viewport_size["width"]
    dark = page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
    path = SCREENSHOTS / f"{name}-{width}{'-dark' if dark else ''}.png"
    page.screenshot(path=str(path), full_page=True)


def _check_page(page: Any, server: Server, name: str) -> None:
    """What the page tour checks: no sideways scroll, axe clean; plus a screenshot."""
    _shoot(page, name)
    widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{name} scrolls sideways: {widths}"
    assert _blocking_violations(page, None) == []


@pytest.mark.parametrize("width", list(WIDTHS))
def test_a_video_job_survives_a_reload(
    server: Server, browser: Any, user: dict[str, Any], width: str
) -> None:
    w, h = WIDTHS[width]
    # The phone runs dark, so axe checks both themes' colours on these states.
    context = browser.new_context(
        storage_state=user["state"],
        viewport={"width": w, "height": h},
        color_scheme="dark" if width == "phone" else "light",
    )
    try:
        page = context.new_page()
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(f"{server.url}/playground?model={VIDEO}")
        prompt = f"waves at night, {width} [test:sleep=8]"
        page.fill("#pg-prompt", prompt)
        with page.expect_response(
            lambda r: "/videos/generations" in r.url and r.request.method == "POST"
        ) as posted:
            page.click("#pg-submit")
        assert posted.value.status == 202
        assert posted.value.request.headers.get("prefer") == "respond-async"
        page.wait_for_url(re.compile(r"[?&]job="))
        job_id = re.search(r"[?&]job=([^&]+)", page.url).group(1)  # type: ignore[union-attr]
        assert posted.value.json()["id"] == job_id
        page.wait_for_selector("#pg-job:not([hidden])")
        page.wait_for_function(
            "document.getElementById('pg-job-state').textContent === 'running'", timeout=10_000
        )
        assert "keeps running on the server" in page.inner_text("#pg-job-note")
        assert page.get_attribute("#pg-job-usage", "href") == f"/usage?id={job_id}"
        _check_page(page, server, "playground-job-running")

        time.sleep(2)
        page.reload()
        # Picked up again: the same job, its state, the time since it began, the form.
        page.wait_for_selector("#pg-job:not([hidden])")
        page.wait_for_function(
            "document.getElementById('pg-job-state').textContent === 'running'", timeout=10_000
        )
        assert page.input_value("#pg-model") == VIDEO
        assert page.input_value("#pg-prompt") == prompt
        page.wait_for_function(
            "parseFloat(document.getElementById('pg-elapsed').textContent) >= 2", timeout=5000
        )
        assert page.is_visible("#pg-cancel")
        assert page.is_disabled("#pg-submit")

        page.wait_for_selector("#pg-result video", timeout=30_000)
        status = page.inner_text("#pg-status")
        assert status.startswith("Done: 1 video in"), status
        src = page.get_attribute("#pg-result video", "src") or ""
        assert src.startswith(f"{server.url}/files/{job_id}"), src
        assert page.inner_text("#pg-cost") == "free"
        assert page.is_hidden("#pg-job") and page.is_enabled("#pg-submit")
        assert "curl" in (page.text_content("#pg-code-curl") or "")
        assert page.evaluate("localStorage.getItem('image-router.playground.job')") is None
        _check_page(page, server, "playground-job-done")

        # The server made one video for it: one job, succeeded, listed once.
        job = _api(server, user["key"], "GET", f"/v1/jobs/{job_id}").json()
        assert job["status"] == "succeeded" and job["data"][0]["url"] == src
        listed = _api(server, user["key"], "GET", "/v1/jobs?limit=100").json()["data"]
        assert [j["id"] for j in listed].count(job_id) == 1
        posts = [u for u in requested if u.endswith("/v1/openai/videos/generations")]
        assert len(posts) == 1, posts
        assert all(u.startswith((server.url, "data:", "blob:")) for u in requested)

        # A later visit without ?job does not show the finished job again.
        page.goto(f"{server.url}/playground?model={VIDEO}")
        assert page.is_hidden("#pg-job")
        assert page.inner_html("#pg-result") == ""
    finally:
        context.close()


def test_a_job_left_running_is_followed_on_the_next_visit(
    server: Server, browser: Any, user: dict[str, Any]
) -> None:
    """Leaving the page and coming back to /playground (no ?job) follows the job still
    running in this browser, then shows its result."""
    context = browser.new_context(storage_state=user["state"])
    try:
        page = context.new_page()
        page.goto(f"{server.url}/playground?model={VIDEO}")
        page.fill("#pg-prompt", "a lantern drifting [test:sleep=4]")
        page.click("#pg-submit")
        page.wait_for_url(re.compile(r"[?&]job="))
        page.goto(f"{server.url}/account")
        page.goto(f"{server.url}/playground")
        page.wait_for_selector("#pg-result video", timeout=30_000)
        assert page.input_value("#pg-model") == VIDEO
    finally:
        context.close()


def test_cancel_cancels_the_job_on_the_server(
    server: Server, browser: Any, user: dict[str, Any]
) -> None:
    context = browser.new_context(storage_state=user["state"])
    try:
        page = context.new_page()
        page.goto(f"{server.url}/playground?model={VIDEO}")
        page.fill("#pg-prompt", "a very long film [test:sleep=120]")
        page.click("#pg-submit")
        page.wait_for_url(re.compile(r"[?&]job="))
        job_id = re.search(r"[?&]job=([^&]+)", page.url).group(1)  # type: ignore[union-attr]
        page.wait_for_function(
            "document.getElementById('pg-job-state').textContent === 'running'", timeout=10_000
        )
        with page.expect_response(lambda r: r.url.endswith(f"/v1/jobs/{job_id}/cancel")) as done:
            page.keyboard.press("Escape")  # Escape is Cancel
        assert done.value.status == 200
        page.wait_for_function(
            "document.getElementById('pg-status').textContent.startsWith('Cancelled')"
        )
        assert page.is_enabled("#pg-submit") and page.is_hidden("#pg-cancel")
        job = _api(server, user["key"], "GET", f"/v1/jobs/{job_id}").json()
        assert job["status"] == "cancelled", job
        assert job["error"]["code"] == "job_cancelled"
        # Reloading the cancelled job's address says how it ended, without waiting.
        page.reload()
        page.wait_for_function(
            "document.getElementById('pg-status').textContent.startsWith('Cancelled')"
        )
    finally:
        context.close()


def test_a_guest_is_told_to_keep_the_page_open_for_a_video(server: Server, browser: Any) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/playground?model={VIDEO}")
        hint = page.locator("#pg-guest-video")
        assert hint.is_visible()
        assert "keep this page open" in hint.inner_text()
        page.select_option("#pg-model", "test/test")
        assert hint.is_hidden()
        # A job address is for its account: a guest is asked to sign in.
        page.goto(f"{server.url}/playground?job=00000000-0000-0000-0000-000000000000")
        assert "Sign in" in page.inner_text("#pg-error")
    finally:
        context.close()


@pytest.mark.parametrize("width", list(WIDTHS))
def test_usage_shows_job_state_and_updates_a_running_row(
    server: Server, browser: Any, user: dict[str, Any], width: str
) -> None:
    key = user["key"]
    cancelled = _submit(server, key, "never finished [test:sleep=120]")
    cancel = _api(server, key, "POST", f"/v1/jobs/{cancelled}/cancel")
    assert cancel.status_code == 200, cancel.text
    running = _submit(server, key, f"a slow tide, {width} [test:sleep=6]")
    w, h = WIDTHS[width]
    # The phone runs dark, so axe checks both themes' colours on these states.
    context = browser.new_context(
        storage_state=user["state"],
        viewport={"width": w, "height": h},
        color_scheme="dark" if width == "phone" else "light",
    )
    try:
        page = context.new_page()
        page.goto(f"{server.url}/usage")
        row = page.locator(f"#log-{running}")
        assert row.get_attribute("data-job-status") in ("queued", "running")
        assert row.locator(".log-status .badge").inner_text() in ("queued", "running")
        follow = row.locator(f"a[href='/playground?job={running}']")
        assert follow.inner_text() == "Follow it in the playground"
        assert row.locator(".job-refresh").is_hidden()  # the script updates the row instead
        assert "update on this page by themselves" in page.inner_text("#usage-live")
        stopped = page.locator(f"#log-{cancelled}")
        assert stopped.get_attribute("data-job-status") == "cancelled"
        assert stopped.locator(".log-status .badge").inner_text() == "cancelled"
        _check_page(page, server, "usage-job-running")

        # The running row turns into the finished one by itself.
        page.wait_for_function(
            f"document.getElementById('log-{running}').dataset.jobStatus === 'succeeded'",
            timeout=30_000,
        )
        assert row.get_attribute("data-active") is None
        assert row.locator(".log-status .badge").inner_text() == "succeeded"
        assert row.locator("td.outputs a", has_text="play").count() == 1
        assert row.locator(f"a[href='/playground?job={running}']").inner_text() == (
            "Open the result"
        )
        assert "Finished: ir/test-video succeeded" in page.inner_text("#usage-live")
        _check_page(page, server, "usage-job-done")

        # The result link opens the job in the playground.
        row.locator(f"a[href='/playground?job={running}']").click()
        page.wait_for_selector("#pg-result video", timeout=15_000)
    finally:
        context.close()


def test_without_script_a_running_row_says_to_refresh(
    server: Server, browser: Any, user: dict[str, Any]
) -> None:
    running = _submit(server, user["key"], "a glacier [test:sleep=30]")
    context = browser.new_context(storage_state=user["state"], java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/usage")
        row = page.locator(f"#log-{running}")
        note = row.locator(".job-note").inner_text()
        assert note.startswith("Still "), note
        assert "refresh to see how it ends" in note, note
        assert "refresh the page" in page.inner_text("#usage-live")
    finally:
        context.close()
        _api(server, user["key"], "POST", f"/v1/jobs/{running}/cancel")
