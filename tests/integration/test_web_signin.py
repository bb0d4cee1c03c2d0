"""Local sign-in through the website's forms: sign-up, sign-in, sign-out, sessions, CSRF,
throttling and cookie flags."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from image_router.account import sessions
from image_router.account.local_auth import SIGNUP_REFUSED
from image_router.account.passwords import verify_password
from image_router.db.session import unit_of_work
from image_router.kit.ids import hash_secret
from tests.conftest import Gateway
from tests.integration.web_helpers import (
    PASSWORD,
    csrf_of,
    form_token,
    set_cookie,
    sign_in,
    sign_up,
)

EMAIL = "ada@example.com"


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    return {"signin_throttle": "5/minute"}


async def test_sign_up_starts_a_session_and_shows_the_account(gateway: Gateway) -> None:
    client = gateway.client
    form = await client.get("/signup")
    assert "ir_csrf=" in form.headers["set-cookie"]
    response = await sign_up(client, "  Ada@Example.com ")
    assert response.status_code == 303
    assert response.headers["location"] == "/account"
    cookie = set_cookie(response, "ir_session")
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # served over plain HTTP

    page = await client.get("/account")
    assert page.status_code == 200
    assert EMAIL in page.text and "$0.0000" in page.text
    assert "Welcome! Your account is ready." in page.text

    [row] = await gateway.rows(
        "SELECT password_hash FROM accounts WHERE email_bidx = :e",
        e=gateway.res.vault.email_index(EMAIL),
    )
    assert row["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in row["password_hash"]
    token = client.cookies["ir_session"]
    [stored] = await gateway.rows("SELECT id FROM web_sessions")
    assert stored["id"] == hash_secret(token) != token


async def test_sign_in_and_out(any_gateway: Gateway) -> None:
    client = any_gateway.client
    await sign_up(client, EMAIL)
    client.cookies.clear()
    assert (await client.get("/account")).headers["location"] == "/signin"

    response = await sign_in(client, EMAIL)
    assert response.status_code == 303 and response.headers["location"] == "/account"
    old_cookie = client.cookies["ir_session"]
    page = await client.get("/account")
    assert EMAIL in page.text

    out = await client.post("/signout", data={"csrf_token": csrf_of(page.text)})
    assert out.status_code == 303 and out.headers["location"] == "/"
    assert "max-age=0" in set_cookie(out, "ir_session")
    assert "You have been signed out." in (await client.get("/")).text
    # The old cookie replayed is worthless: the session row is revoked.
    client.cookies.set("ir_session", old_cookie)
    assert (await client.get("/account")).headers["location"] == "/signin"
    [row] = await any_gateway.rows(
        "SELECT revoked_at FROM web_sessions WHERE id = :i", i=hash_secret(old_cookie)
    )
    assert row["revoked_at"] is not None


@pytest.mark.parametrize("email", [EMAIL, "nobody@example.com", "not an e-mail"])
async def test_failed_sign_in_says_nothing_about_the_account(gateway: Gateway, email: str) -> None:
    await sign_up(gateway.client, EMAIL)
    gateway.client.cookies.clear()
    response = await sign_in(gateway.client, email, "wrong password!")
    assert response.status_code == 401
    assert "Invalid e-mail or password." in response.text
    assert "ir_session" not in gateway.client.cookies


async def test_sign_up_with_a_taken_e_mail_is_refused_generically(gateway: Gateway) -> None:
    await gateway.account(email="cli@example.com")  # made by the CLI: no password
    await sign_up(gateway.client, EMAIL)
    gateway.client.cookies.clear()
    for email in (EMAIL, "cli@example.com"):
        response = await sign_up(gateway.client, email, "another password")
        assert response.status_code == 400
        assert SIGNUP_REFUSED.replace("'", "&#39;") in response.text
    # The password-less account stays password-less: it cannot be signed in to.
    assert (await sign_in(gateway.client, "cli@example.com", "another password")).status_code == 401


async def test_short_password_is_refused(gateway: Gateway) -> None:
    response = await sign_up(gateway.client, EMAIL, "short")
    assert response.status_code == 400
    assert "at least 10 characters" in response.text
    assert (
        await gateway.rows(
            "SELECT id FROM accounts WHERE email_bidx = :e", e=gateway.res.vault.email_index(EMAIL)
        )
        == []
    )


@pytest.mark.parametrize("change", ["expire", "revoke"])
async def test_expired_or_revoked_session_signs_out(any_gateway: Gateway, change: str) -> None:
    await sign_up(any_gateway.client, EMAIL)
    assert (await any_gateway.client.get("/account")).status_code == 200
    if change == "expire":
        await any_gateway.execute("UPDATE web_sessions SET expires_at = '2000-01-01 00:00:00'")
    else:
        [row] = await any_gateway.rows("SELECT id FROM web_sessions")
        async with unit_of_work(any_gateway.res.engine) as conn:
            await sessions.revoke_session(conn, row["id"])
    response = await any_gateway.client.get("/account")
    assert response.status_code == 303 and response.headers["location"] == "/signin"
    assert "Your session has ended" in (await any_gateway.client.get("/signin")).text


async def test_forms_without_the_csrf_token_are_refused(gateway: Gateway) -> None:
    client = gateway.client
    await form_token(client, "/signin")  # the ir_csrf cookie is set
    for data in ({}, {"csrf_token": "forged-" + "x" * 40}):
        response = await client.post("/signin", data={**data, "email": EMAIL, "password": "x"})
        assert response.status_code == 403
        assert "did not come from this site" in response.text
        response = await client.post("/signup", data={**data, "email": EMAIL, "password": PASSWORD})
        assert response.status_code == 403
    assert await gateway.rows("SELECT id FROM accounts") == []

    await sign_up(client, EMAIL)
    # Signed in, the pre-sign-in token no longer counts: only the session's own does.
    forged = await client.post("/signout", data={"csrf_token": "forged-" + "y" * 40})
    assert forged.status_code == 403
    assert (await client.get("/account")).status_code == 200


async def test_sign_in_is_throttled_per_e_mail_and_address(gateway: Gateway) -> None:
    await sign_up(gateway.client, EMAIL)
    gateway.client.cookies.clear()
    for _ in range(5):
        assert (await sign_in(gateway.client, EMAIL, "wrong password!")).status_code == 401
    refused = await sign_in(gateway.client, EMAIL)  # even the right password
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert re.search(r"Too many attempts\. Please wait \d+ seconds", refused.text)
    # Another e-mail from the same address has its own budget.
    assert (await sign_in(gateway.client, "other@example.com", "x" * 12)).status_code == 401


async def test_cookies_are_secure_over_https(gateway: Gateway) -> None:
    transport = gateway.client._transport  # the same app
    async with httpx.AsyncClient(transport=transport, base_url="https://gateway.test") as client:
        form = await client.get("/signup")
        assert "secure" in set_cookie(form, "ir_csrf")
        response = await sign_up(client, EMAIL)
        assert "secure" in set_cookie(response, "ir_session")
        assert (await client.get("/account")).status_code == 200


async def test_outdated_hash_is_upgraded_at_sign_in(gateway: Gateway) -> None:
    await sign_up(gateway.client, EMAIL)
    weak = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    await gateway.execute("UPDATE accounts SET password_hash = :h", h=weak)
    gateway.client.cookies.clear()
    assert (await sign_in(gateway.client, EMAIL)).status_code == 303
    [row] = await gateway.rows(
        "SELECT password_hash FROM accounts WHERE email_bidx = :e",
        e=gateway.res.vault.email_index(EMAIL),
    )
    assert row["password_hash"] != weak and verify_password(row["password_hash"], PASSWORD)


async def test_landing_page_and_stylesheet(gateway: Gateway) -> None:
    landing = await gateway.client.get("/")
    assert landing.status_code == 200
    assert 'href="/signup"' in landing.text and 'href="/signin"' in landing.text
    css = await gateway.client.get("/static/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


async def test_sign_up_needs_the_terms_accepted_and_records_what_was_accepted(
    gateway: Gateway,
) -> None:
    client = gateway.client
    token = await form_token(client, "/signup")
    refused = await client.post(
        "/signup", data={"csrf_token": token, "email": EMAIL, "password": PASSWORD}
    )
    assert refused.status_code == 400 and "accept the Terms of Service" in refused.text
    assert await gateway.rows("SELECT id FROM accounts") == []

    assert (await sign_up(client, EMAIL)).status_code == 303
    [account] = await gateway.rows("SELECT id, terms_version_accepted FROM accounts")
    assert account["terms_version_accepted"] is not None
    proofs = await gateway.rows(
        "SELECT purpose, granted, document_version, source FROM consents WHERE account_id = :a"
        " ORDER BY id",
        a=account["id"],
    )
    assert [(p["purpose"], p["granted"], p["source"]) for p in proofs] == [
        ("terms", True, "signup"),
        ("privacy_notice", True, "signup"),
    ]
