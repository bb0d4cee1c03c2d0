"""The API keys pages over HTTP: list, create (secret shown once), rename, revoke, CSRF,
and another account's keys answered 404. On SQLite and PostgreSQL where the database
matters."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest

from image_router.kit.clock import utcnow
from image_router.kit.ids import hash_secret
from tests.conftest import Gateway
from tests.integration.web_helpers import csrf_of, sign_up

KEYS = "/account/keys"
SECRET = re.compile(r'<code id="new-key-secret">([^<]+)</code>')
FORGED = "forged-" + "z" * 40


def secret_of(page: httpx.Response) -> str:
    found = SECRET.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def key_ids(page: str) -> list[str]:
    return re.findall(r'data-key-id="([^"]+)"', page)


async def keys_page(client: httpx.AsyncClient) -> httpx.Response:
    page = await client.get(KEYS)
    assert page.status_code == 200, page.text
    return page


async def create(client: httpx.AsyncClient, name: str, **fields: str) -> httpx.Response:
    token = csrf_of((await keys_page(client)).text)
    return await client.post(KEYS, data={"csrf_token": token, "name": name, **fields})


async def works(gw: Gateway, key: str) -> bool:
    response = await gw.post("/v1/auth/test", key)
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


@pytest.fixture
async def browser(any_gateway: Gateway) -> httpx.AsyncClient:
    """The gateway's client, signed up and in."""
    assert (await sign_up(any_gateway.client, "keys@example.com")).status_code == 303
    return any_gateway.client


@pytest.fixture
async def other_browser(any_gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    """Another person's browser on the same site, signed in to their own account."""
    async with httpx.AsyncClient(
        transport=any_gateway.client._transport, base_url="http://gateway.test"
    ) as client:
        assert (await sign_up(client, "other@example.com")).status_code == 303
        yield client


async def test_a_new_key_is_shown_once_and_works(
    any_gateway: Gateway, browser: httpx.AsyncClient
) -> None:
    assert "You have no API keys yet" in (await keys_page(browser)).text
    created = await create(browser, "  laptop ", spend_limit="5", spend_limit_period="day")
    assert created.status_code == 201
    assert created.headers["cache-control"] == "no-store"
    secret = secret_of(created)
    assert "only time it is shown" in created.text
    assert await works(any_gateway, secret)

    listed = (await keys_page(browser)).text
    assert secret not in listed  # a reload never shows it again
    assert 'value="laptop"' in listed
    assert f"{secret[:8]}…{secret[-4:]}" in listed
    assert "$5.0000 per UTC day ($0.0000 spent)" in listed
    assert ">active<" in listed
    # Used once above: the list says when.
    assert re.search(r'class="key-last-used">\d{4}-\d\d-\d\d \d\d:\d\d UTC<', listed)
    [row] = await any_gateway.rows("SELECT key_hash FROM api_keys")
    assert row["key_hash"] == hash_secret(secret)  # only its fingerprint is kept


async def test_rename_then_revoke_after_confirming(
    any_gateway: Gateway, browser: httpx.AsyncClient
) -> None:
    secret = secret_of(await create(browser, "first name"))
    [key_id] = key_ids((await keys_page(browser)).text)
    token = csrf_of((await keys_page(browser)).text)

    renamed = await browser.post(
        f"{KEYS}/{key_id}/rename", data={"csrf_token": token, "name": "ci runner"}
    )
    assert renamed.status_code == 303 and renamed.headers["location"] == f"{KEYS}?done=renamed"
    page = (await browser.get(renamed.headers["location"])).text
    assert "The key has been renamed." in page
    assert 'value="ci runner"' in page and "first name" not in page

    confirm = await browser.get(f"{KEYS}/{key_id}/revoke")
    assert confirm.status_code == 200
    assert html.escape("Revoke “ci runner”?") in confirm.text
    assert f'action="/account/keys/{key_id}/revoke"' in confirm.text
    assert await works(any_gateway, secret)  # asking is not revoking

    revoked = await browser.post(f"{KEYS}/{key_id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    page = (await browser.get(revoked.headers["location"])).text
    assert "The key has been revoked" in page
    assert key_ids(page) == []
    assert not await works(any_gateway, secret)
    # Revoked is final: the key is gone from every page.
    again = await browser.post(f"{KEYS}/{key_id}/revoke", data={"csrf_token": token})
    assert again.status_code == 404


async def test_changes_need_the_sessions_csrf_token(
    any_gateway: Gateway, browser: httpx.AsyncClient
) -> None:
    secret = secret_of(await create(browser, "kept"))
    [key_id] = key_ids((await keys_page(browser)).text)
    for data in ({}, {"csrf_token": FORGED}):
        attempts = [
            await browser.post(KEYS, data={**data, "name": "sneaky"}),
            await browser.post(f"{KEYS}/{key_id}/rename", data={**data, "name": "sneaky"}),
            await browser.post(f"{KEYS}/{key_id}/revoke", data=data),
        ]
        for refused in attempts:
            assert refused.status_code == 403
            assert "did not come from this site" in refused.text
    names = [r["name"] for r in await any_gateway.rows("SELECT name FROM api_keys")]
    assert names == ["kept"]
    assert await works(any_gateway, secret)


async def test_another_accounts_key_is_not_found(
    any_gateway: Gateway, browser: httpx.AsyncClient, other_browser: httpx.AsyncClient
) -> None:
    secret = secret_of(await create(browser, "mine"))
    [key_id] = key_ids((await keys_page(browser)).text)
    assert key_ids((await keys_page(other_browser)).text) == []
    token = csrf_of((await keys_page(other_browser)).text)
    for missing in (key_id, "no-such-key"):
        answers = [
            await other_browser.get(f"{KEYS}/{missing}/revoke"),
            await other_browser.post(
                f"{KEYS}/{missing}/rename", data={"csrf_token": token, "name": "taken"}
            ),
            await other_browser.post(f"{KEYS}/{missing}/revoke", data={"csrf_token": token}),
        ]
        for answer in answers:
            assert answer.status_code == 404
            assert "no such API key in your account" in answer.text
    [row] = await any_gateway.rows("SELECT name, revoked_at FROM api_keys")
    assert row == {"name": "mine", "revoked_at": None}
    assert await works(any_gateway, secret)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "  "}, "Name must be a string of 1 to 200 characters"),
        ({"spend_limit": "-1"}, "Spend limit must not be negative"),
        ({"spend_limit": "lots"}, "Spend limit: 'lots' is not a USD amount"),
        ({"spend_limit_period": "week"}, "The limit period needs a spend limit"),
        ({"expires_at": "2001-01-01T00:00"}, "Expiry must be in the future"),
    ],
)
async def test_bad_settings_are_explained_and_kept(
    gateway: Gateway, fields: dict[str, str], message: str
) -> None:
    await sign_up(gateway.client, "settings@example.com")
    response = await create(gateway.client, **{"name": "named", **fields})
    assert response.status_code == 400
    assert message in html.unescape(response.text)
    # What was typed is still in the form, to be corrected rather than typed again.
    for name, value in fields.items():
        shown = (
            f'<option value="{value}" selected>' if name.endswith("period") else f'value="{value}"'
        )
        assert shown in response.text
    assert await gateway.rows("SELECT id FROM api_keys") == []


async def test_management_key_with_expiry_manages_and_is_revoked_by_its_owner(
    gateway: Gateway,
) -> None:
    client = gateway.client
    await sign_up(client, "owner@example.com")
    normal = secret_of(await create(client, "worker"))
    expiry = (utcnow() + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M")
    created = await create(client, "manager", management="on", expires_at=expiry)
    assert "Your new management key" in created.text
    manager = secret_of(created)
    page = (await keys_page(client)).text
    assert "management</span>" in page
    assert f"expires {expiry.replace('T', ' ')} UTC" in page

    # The management key does what the API allows it: here, disable the normal key.
    listed = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {manager}"})
    assert [k["name"] for k in listed.json()["data"]] == ["worker", "manager"]
    worker_id = listed.json()["data"][0]["id"]
    patched = await client.patch(
        f"/v1/api-keys/{worker_id}",
        json={"disabled": True},
        headers={"Authorization": f"Bearer {manager}"},
    )
    assert patched.status_code == 200
    assert ">disabled<" in (await keys_page(client)).text
    assert not await works(gateway, normal)

    # The owner may revoke the management key, which the API never lets a key do.
    manager_id = listed.json()["data"][1]["id"]
    token = csrf_of(page)
    revoked = await client.post(f"{KEYS}/{manager_id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    again = await client.get("/v1/api-keys", headers={"Authorization": f"Bearer {manager}"})
    assert again.status_code == 401


async def test_signed_out_browsers_are_sent_to_sign_in(gateway: Gateway) -> None:
    for response in (
        await gateway.client.get(KEYS),
        await gateway.client.get(f"{KEYS}/any/revoke"),
        await gateway.client.post(KEYS, data={"name": "x"}),
        await gateway.client.post(f"{KEYS}/any/revoke", data={}),
    ):
        assert response.status_code == 303
        assert response.headers["location"] == "/signin"
    assert await gateway.rows("SELECT id FROM api_keys") == []


async def test_disable_then_enable_a_key(
    any_gateway: Gateway, browser: httpx.AsyncClient, other_browser: httpx.AsyncClient
) -> None:
    secret = secret_of(await create(browser, "ci"))
    [key_id] = key_ids((await keys_page(browser)).text)
    token = csrf_of((await keys_page(browser)).text)
    assert await works(any_gateway, secret)

    disabled = await browser.post(f"{KEYS}/{key_id}/disable", data={"csrf_token": token})
    assert disabled.status_code == 303 and disabled.headers["location"] == f"{KEYS}?done=disabled"
    assert not await works(any_gateway, secret)  # refused at once
    page = (await browser.get(disabled.headers["location"])).text
    assert "The key has been disabled" in page and ">disabled<" in page
    assert f'action="/account/keys/{key_id}/enable"' in page

    # Another person can neither enable nor disable it.
    foreign = csrf_of((await keys_page(other_browser)).text)
    refused = await other_browser.post(f"{KEYS}/{key_id}/enable", data={"csrf_token": foreign})
    assert refused.status_code == 404 and not await works(any_gateway, secret)
    forged = await browser.post(f"{KEYS}/{key_id}/enable", data={"csrf_token": FORGED})
    assert forged.status_code == 403 and not await works(any_gateway, secret)

    enabled = await browser.post(f"{KEYS}/{key_id}/enable", data={"csrf_token": token})
    assert enabled.status_code == 303
    assert await works(any_gateway, secret)
    page = (await browser.get(enabled.headers["location"])).text
    assert "The key has been enabled" in page and ">active<" in page
