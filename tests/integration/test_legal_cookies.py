"""Cookies and analytics consent (LEG-C1, LEG-C2).

Without ANALYTICS_SCRIPT_URL the site sets only strictly necessary cookies and shows no
banner. With it, nothing of the analytics provider loads until the visitor accepts; Accept
and Reject are equal; the choice is stored as proof and can be changed from any page.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import Gateway
from tests.integration.web_helpers import PASSWORD, csrf_of, form_token, set_cookie

ESSENTIAL = {"ir_session", "ir_csrf", "ir_flash", "ir_consent"}
SCRIPT = "https://stats.example/script.js"
ANALYTICS = {"analytics_script_url": SCRIPT}
PUBLIC_PAGES = ("/", "/privacy", "/terms", "/cookies", "/signup", "/signin", "/password/forgot")


def _cookie_names(response: httpx.Response) -> set[str]:
    return {h.split("=", 1)[0].strip() for h in response.headers.get_list("set-cookie")}


def _loads_analytics(html: str) -> bool:
    return any(SCRIPT in tag for tag in re.findall(r"<script[^>]*>", html))


def _banner(html: str) -> str | None:
    found = re.search(r'<section[^>]*id="cookie-banner".*?</section>', html, re.DOTALL)
    return found.group(0) if found else None


class Recorder:
    """Sends requests through the gateway's client and remembers every cookie set."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.names: set[str] = set()

    async def get(self, path: str) -> httpx.Response:
        response = await self.client.get(path)
        self.names |= _cookie_names(response)
        return response

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.client.post(path, **kwargs)
        self.names |= _cookie_names(response)
        return response


async def test_without_analytics_only_essential_cookies_are_set(gateway: Gateway) -> None:
    browser = Recorder(gateway.client)
    for path in PUBLIC_PAGES:
        page = await browser.get(path)
        assert page.status_code == 200, path
        # Only the site's own script (progressive enhancement, no cookies), from this server.
        scripts = re.findall(r"<script[^>]*>", page.text)
        assert scripts == ['<script src="/static/site.js" defer>'], path
        assert _banner(page.text) is None and "Cookie settings" not in page.text
    email = "cookie@example.com"
    token = csrf_of((await browser.get("/signup")).text)
    signed_up = await browser.post(
        "/signup",
        data={"csrf_token": token, "email": email, "password": PASSWORD, "accept_terms": "on"},
    )
    assert signed_up.status_code == 303
    for path in ("/account", *PUBLIC_PAGES[:4]):
        assert (await browser.get(path)).status_code == 200
    token = csrf_of((await browser.get("/account")).text)
    assert (await browser.post("/signout", data={"csrf_token": token})).status_code == 303
    token = await form_token(gateway.client, "/signin")
    signed_in = await browser.post(
        "/signin", data={"csrf_token": token, "email": email, "password": PASSWORD}
    )
    assert signed_in.status_code == 303
    await browser.get("/account")

    assert {"ir_session", "ir_csrf"} <= browser.names  # the recorder did see cookies
    assert browser.names <= ESSENTIAL, browser.names - ESSENTIAL
    assert "ir_consent" not in browser.names  # no banner, so no choice to remember


async def test_without_analytics_there_is_nothing_to_consent_to(gateway: Gateway) -> None:
    token = await form_token(gateway.client, "/signin")
    response = await gateway.client.post(
        "/v1/consent/cookies", data={"csrf_token": token, "analytics": "true"}
    )
    assert response.status_code == 404
    assert "ir_consent" not in _cookie_names(response)
    assert await gateway.rows("SELECT id FROM consents") == []


@pytest.mark.parametrize("gateway_overrides", [ANALYTICS])
async def test_no_analytics_before_consent_and_equal_choices(gateway: Gateway) -> None:
    browser = Recorder(gateway.client)
    for path in PUBLIC_PAGES:
        page = await browser.get(path)
        assert not _loads_analytics(page.text), path
        banner = _banner(page.text)
        assert banner is not None, path
        assert 'type="checkbox"' not in banner  # nothing pre-ticked
        buttons = re.findall(r"<button[^>]*>[^<]*</button>", banner)
        assert len(buttons) == 2
        # Equal weight: the same element, class and size; only the value and label differ.
        shapes = {re.sub(r'value="\w+"|>[^<]*<', "", b) for b in buttons}
        assert len(shapes) == 1, buttons
        assert 'href="/cookies#cookie-settings"' in page.text  # "Cookie settings" link
    assert browser.names <= {"ir_csrf"}, browser.names  # nothing until a choice


@pytest.mark.parametrize("gateway_overrides", [ANALYTICS])
async def test_reject_then_accept(gateway: Gateway) -> None:
    client = gateway.client
    page = (await client.get("/privacy")).text
    rejected = await client.post(
        "/v1/consent/cookies",
        data={
            "csrf_token": csrf_of(page),
            "analytics": "false",
            "banner_version": "1",
            "next": "/privacy",
        },
    )
    assert rejected.status_code == 303 and rejected.headers["location"] == "/privacy"
    cookie = set_cookie(rejected, "ir_consent")
    max_age = int(re.search(r"max-age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert 0 < max_age <= 396 * 86400  # at most 13 months
    assert "httponly" in cookie and "samesite=lax" in cookie

    for path in ("/", "/privacy", "/account", "/signin"):
        html = (await client.get(path)).text
        assert not _loads_analytics(html), path
        assert _banner(html) is None, path  # the choice is remembered
    settings_page = (await client.get("/cookies")).text
    assert "analytics rejected" in settings_page
    assert 'id="cookie-settings"' in settings_page  # the choice can be changed here

    accepted = await client.post(
        "/v1/consent/cookies",
        data={"csrf_token": csrf_of(settings_page), "analytics": "true", "banner_version": "1"},
    )
    assert accepted.status_code == 303
    for path in ("/", "/privacy", "/terms"):
        html = (await client.get(path)).text
        assert _loads_analytics(html), path
        assert _banner(html) is None
    assert "analytics accepted" in (await client.get("/cookies")).text

    proofs = await gateway.rows(
        "SELECT account_id, consent_id, purpose, granted, document_version, source "
        "FROM consents ORDER BY id"
    )
    assert [p["granted"] for p in proofs] == [False, True]
    assert {p["consent_id"] for p in proofs} == {client.cookies["ir_consent"].split(".")[1]}
    assert all(p["account_id"] is None for p in proofs)  # an anonymous visitor
    assert {(p["purpose"], p["document_version"], p["source"]) for p in proofs} == {
        ("analytics_cookies", "1", "banner")
    }

    withdrawn = await client.post(
        "/v1/consent/cookies",
        data={
            "csrf_token": csrf_of((await client.get("/cookies")).text),
            "analytics": "false",
        },
    )
    assert withdrawn.status_code == 303
    assert not _loads_analytics((await client.get("/")).text)


@pytest.mark.parametrize("gateway_overrides", [ANALYTICS])
async def test_json_consent_needs_the_page_token_and_names_the_account(
    gateway: Gateway,
) -> None:
    client = gateway.client
    signup_token = await form_token(client, "/signup")
    await client.post(
        "/signup",
        data={
            "csrf_token": signup_token,
            "email": "json@example.com",
            "password": PASSWORD,
            "accept_terms": "on",
        },
    )
    page = (await client.get("/account")).text
    meta = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert meta is not None
    body = {"analytics": True, "banner_version": "1"}

    refused = await client.post("/v1/consent/cookies", json=body)
    assert refused.status_code == 403
    assert await gateway.rows("SELECT id FROM consents WHERE purpose = 'analytics_cookies'") == []

    token = {"X-CSRF-Token": meta.group(1)}
    for bad in ({"analytics": "maybe", "banner_version": "1"}, {"analytics": True}):
        invalid = await client.post("/v1/consent/cookies", json=bad, headers=token)
        assert invalid.status_code == 400, invalid.text
    not_json = await client.post("/v1/consent/cookies", content=b"{", headers=token)
    assert not_json.status_code == 400

    ok = await client.post("/v1/consent/cookies", json=body, headers=token)
    assert ok.status_code == 200, ok.text
    assert ok.json()["analytics"] is True
    assert "ir_consent" in _cookie_names(ok)
    [proof] = await gateway.rows(
        "SELECT account_id, consent_id FROM consents WHERE purpose = 'analytics_cookies'"
    )
    [account] = await gateway.rows("SELECT id FROM accounts WHERE role = 'user'")
    assert proof["account_id"] == account["id"]
    assert proof["consent_id"] == ok.json()["consent_id"]
    assert _loads_analytics((await client.get("/account")).text)


@pytest.mark.parametrize("gateway_overrides", [ANALYTICS | {"consent_reask_days": 30}])
async def test_an_old_or_outdated_choice_is_asked_again(gateway: Gateway) -> None:
    client = gateway.client
    old = int((datetime.now(UTC) - timedelta(days=31)).timestamp())
    client.cookies.set("ir_consent", f"c1.{'a' * 22}.a.{old}.1", domain="gateway.test")
    html = (await client.get("/")).text
    assert _banner(html) is not None and not _loads_analytics(html)

    recent = int((datetime.now(UTC) - timedelta(days=29)).timestamp())
    client.cookies.set("ir_consent", f"c1.{'a' * 22}.a.{recent}.1", domain="gateway.test")
    html = (await client.get("/")).text
    assert _banner(html) is None and _loads_analytics(html)

    # A choice made on another banner (another cookie policy version) does not count.
    client.cookies.set("ir_consent", f"c1.{'a' * 22}.a.{recent}.0", domain="gateway.test")
    html = (await client.get("/")).text
    assert _banner(html) is not None and not _loads_analytics(html)

    client.cookies.set("ir_consent", "garbage", domain="gateway.test")
    html = (await client.get("/")).text
    assert _banner(html) is not None and not _loads_analytics(html)
