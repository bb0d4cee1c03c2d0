"""The one-time sign-in link (`/signin/once?token=…`): opening it changes nothing, the form
sets a password and signs in (an admin lands on `/admin`), it works once, and not after it
expires. On SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from image_router.account import local_auth
from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.kit.ids import hash_secret
from tests.conftest import Gateway
from tests.integration.web_helpers import csrf_of, sign_in

EMAIL = "admin@localhost"
NEW_PASSWORD = "a brand new passphrase"
INVALID = "This sign-in link is invalid, already used or expired."


async def new_link(gw: Gateway, *, role: str = "admin", ttl_s: float = 3600) -> tuple[str, str]:
    """(account id, token) of a new account without a password, as at first start."""
    async with unit_of_work(gw.res.engine) as conn:
        account = await accounts.create_account(conn, gw.res.vault, EMAIL, role=role)
        token = await local_auth.issue_signin_link(conn, account.id, ttl=timedelta(seconds=ttl_s))
    return account.id, token


async def use(
    client: httpx.AsyncClient, token: str, password: str = NEW_PASSWORD, again: str | None = None
) -> httpx.Response:
    page = await client.get("/signin/once", params={"token": token})
    assert page.status_code == 200, page.text
    return await client.post(
        "/signin/once",
        data={
            "csrf_token": csrf_of(page.text),
            "token": token,
            "password": password,
            "password_again": password if again is None else again,
        },
    )


async def test_the_link_sets_a_password_signs_in_and_works_once(any_gateway: Gateway) -> None:
    _, token = await new_link(any_gateway)
    client = any_gateway.client
    page = await client.get("/signin/once", params={"token": token})
    assert page.status_code == 200 and EMAIL in page.text
    [row] = await any_gateway.rows("SELECT token_hash, used_at FROM password_resets")
    assert row == {"token_hash": hash_secret(token), "used_at": None}  # stored hashed, unspent

    signed = await use(client, token)
    assert signed.status_code == 303 and signed.headers["location"] == "/admin"
    assert (await client.get("/admin")).status_code == 200  # signed in, as the admin

    again = await client.get("/signin/once", params={"token": token})
    assert again.status_code == 400 and INVALID in again.text
    async with httpx.AsyncClient(
        transport=client._transport, base_url="http://gateway.test"
    ) as other:
        assert INVALID in (await other.get("/signin/once", params={"token": token})).text
        # The password chosen on the page is the account's password from now on.
        assert (await sign_in(other, EMAIL, NEW_PASSWORD)).status_code == 303
        assert (await other.get("/admin")).status_code == 200


async def test_a_mismatch_or_a_short_password_keeps_the_link(any_gateway: Gateway) -> None:
    _, token = await new_link(any_gateway)
    differ = await use(any_gateway.client, token, again="something else entirely")
    assert differ.status_code == 400 and "The two passwords differ" in differ.text
    short = await use(any_gateway.client, token, password="short")
    assert short.status_code == 400 and "at least 10 characters" in short.text
    assert (await use(any_gateway.client, token)).status_code == 303


async def test_an_expired_or_unknown_link_is_refused(any_gateway: Gateway) -> None:
    _, token = await new_link(any_gateway, ttl_s=-1)
    for candidate in (token, "not-a-real-token", ""):
        page = await any_gateway.client.get("/signin/once", params={"token": candidate})
        assert page.status_code == 400 and INVALID in page.text
    form = await any_gateway.client.get("/signin")
    posted = await any_gateway.client.post(
        "/signin/once",
        data={
            "csrf_token": csrf_of(form.text),
            "token": token,
            "password": NEW_PASSWORD,
            "password_again": NEW_PASSWORD,
        },
    )
    assert posted.status_code == 400 and INVALID in posted.text
    assert (await sign_in(any_gateway.client, EMAIL, NEW_PASSWORD)).status_code == 401


async def test_a_user_lands_on_the_account_page_and_csrf_is_required(
    any_gateway: Gateway,
) -> None:
    _, token = await new_link(any_gateway, role="user")
    forged = await any_gateway.client.post(
        "/signin/once",
        data={"token": token, "password": NEW_PASSWORD, "password_again": NEW_PASSWORD},
    )
    assert forged.status_code == 403
    signed = await use(any_gateway.client, token)
    assert signed.status_code == 303 and signed.headers["location"] == "/account"
