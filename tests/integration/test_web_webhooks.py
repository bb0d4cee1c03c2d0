"""The webhooks page over HTTP: list, create (secret shown once), delete, the delivery log
and its "Resend", the disabled-endpoint banner, CSRF, and another account's endpoints and
deliveries answered 404. On SQLite and PostgreSQL where the database matters."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from image_router.kit.clock import utcnow
from tests.integration.web_helpers import csrf_of, sign_up
from tests.integration.webhook_helpers import HOOK, IMAGE, OTHER, Hooks, hooks_gateway

PAGE = "/account/webhooks"
SECRET = re.compile(r'<code id="new-webhook-secret">([^<]+)</code>')


@pytest.fixture
async def site(any_db_url: str, tmp_path: Path) -> AsyncIterator[Hooks]:
    async for made in hooks_gateway(any_db_url, tmp_path):
        assert (await sign_up(made.gw.client, "hooks@example.com")).status_code == 303
        yield made


async def page(client: httpx.AsyncClient, path: str = PAGE) -> httpx.Response:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return response


async def post_form(client: httpx.AsyncClient, path: str, **fields: str) -> httpx.Response:
    token = csrf_of((await page(client)).text)
    return await client.post(path, data={"csrf_token": token, **fields})


def endpoint_ids(text: str) -> list[str]:
    return re.findall(r'data-endpoint-id="([^"]+)"', text)


def delivery_ids(text: str) -> list[str]:
    return re.findall(r'data-delivery-id="([^"]+)"', text)


async def web_key(site: Hooks) -> str:
    """An API key of the signed-in account, made through the keys page."""
    client = site.gw.client
    token = csrf_of((await page(client, "/account/keys")).text)
    made = await client.post("/account/keys", data={"csrf_token": token, "name": "k"})
    found = re.search(r'<code id="new-key-secret">([^<]+)</code>', made.text)
    assert found is not None, made.text
    return found.group(1)


async def test_the_page_lists_creates_and_deletes_endpoints(site: Hooks) -> None:
    client = site.gw.client
    empty = await page(client)
    assert 'id="no-endpoints"' in empty.text and 'id="no-deliveries"' in empty.text

    created = await post_form(client, PAGE, url=HOOK, description="my server")
    assert created.status_code == 201, created.text
    assert created.headers["cache-control"] == "no-store"
    found = SECRET.search(created.text)
    assert found is not None
    secret = found.group(1)
    assert secret.startswith("whsec_")

    listed = await page(client)
    assert html.escape(HOOK) in listed.text and "my server" in listed.text
    assert secret not in listed.text  # shown once
    [endpoint_id] = endpoint_ids(listed.text)

    deleted = await post_form(client, f"{PAGE}/{endpoint_id}/delete")
    assert deleted.status_code == 303
    assert deleted.headers["location"] == f"{PAGE}?done=deleted"
    after = await page(client, deleted.headers["location"])
    assert endpoint_ids(after.text) == []
    assert "has been deleted" in after.text


async def test_a_refused_url_is_shown_with_the_form_kept(site: Hooks) -> None:
    client = site.gw.client
    refused = await post_form(client, PAGE, url="http://127.0.0.1:9/hook", description="local")
    assert refused.status_code == 400
    assert "not a public address" in html.unescape(refused.text)
    assert 'value="http://127.0.0.1:9/hook"' in refused.text
    assert endpoint_ids(refused.text) == []


async def test_the_delivery_log_shows_attempts_and_resends(site: Hooks) -> None:
    client, gw = site.gw.client, site.gw
    assert (await post_form(client, PAGE, url=HOOK)).status_code == 201
    key = await web_key(site)
    site.receiver.fail_next(500)
    assert (
        await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    ).status_code == 200
    assert await site.run() == 1

    failing = await page(client)
    [delivery_id] = delivery_ids(failing.text)
    row = failing.text.split(f'data-delivery-id="{delivery_id}"')[1].split("</tr>")[0]
    assert "generation.completed" in row and "pending" in row and "HTTP 500" in row
    assert 'class="delivery-response">500<' in row
    assert "resend" not in row  # a pending delivery is on its way already
    assert "failing since" in failing.text

    assert await site.run(utcnow() + timedelta(minutes=1)) == 1
    delivered = await page(client)
    row = delivered.text.split(f'data-delivery-id="{delivery_id}"')[1].split("</tr>")[0]
    assert "delivered" in row and 'class="delivery-attempts">2<' in row

    resent = await post_form(client, f"{PAGE}/deliveries/{delivery_id}/resend")
    assert resent.status_code == 303
    assert resent.headers["location"] == f"{PAGE}?done=resent"
    assert await site.run() == 1
    assert len(site.receiver.requests) == 3
    assert {r.headers["webhook-id"] for r in site.receiver.requests} == {delivery_id}


async def test_a_disabled_endpoint_gets_a_banner_and_can_be_enabled(site: Hooks) -> None:
    client, gw = site.gw.client, site.gw
    assert (await post_form(client, PAGE, url=HOOK)).status_code == 201
    key = await web_key(site)
    site.receiver.fail_next(500, times=10)
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    start = utcnow()
    await site.run(start)
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "y"})
    await site.run(start + timedelta(days=3, minutes=1))

    warned = await page(client)
    [endpoint_id] = endpoint_ids(warned.text)
    assert f'id="disabled-{endpoint_id}"' in warned.text
    assert "was disabled on" in warned.text

    # The deliveries of a disabled endpoint cannot be resent until it is enabled.
    delivery_id = delivery_ids(warned.text)[0]
    refused = await post_form(client, f"{PAGE}/deliveries/{delivery_id}/resend")
    assert refused.status_code == 409
    assert "enable it first" in refused.text

    enabled = await post_form(client, f"{PAGE}/{endpoint_id}/enable")
    assert enabled.status_code == 303
    after = await page(client, enabled.headers["location"])
    assert f'id="disabled-{endpoint_id}"' not in after.text
    assert "events are sent to it again" in after.text


async def test_the_request_secret_is_on_the_page(site: Hooks) -> None:
    client = site.gw.client
    shown = await page(client)
    found = re.search(r'<code id="request-secret">([^<]+)</code>', shown.text)
    assert found is not None
    key = await web_key(site)
    api = await site.gw.client.get(
        "/v1/webhooks/default/secret", headers={"Authorization": f"Bearer {key}"}
    )
    assert api.json()["key"] == found.group(1)


async def test_forms_need_the_csrf_token_and_a_session(site: Hooks) -> None:
    client = site.gw.client
    forged = await client.post(PAGE, data={"csrf_token": "forged", "url": HOOK})
    assert forged.status_code == 403
    assert endpoint_ids((await page(client)).text) == []
    await client.post("/signout", data={"csrf_token": csrf_of((await page(client)).text)})
    assert (await client.get(PAGE)).status_code == 303


async def test_another_accounts_endpoints_and_deliveries_are_not_found(site: Hooks) -> None:
    client, gw = site.gw.client, site.gw
    assert (await post_form(client, PAGE, url=OTHER)).status_code == 201
    key = await web_key(site)
    await gw.post(IMAGE, key, json={"model": "test/test", "prompt": "x"})
    mine = await page(client)
    [endpoint_id], [delivery_id] = endpoint_ids(mine.text), delivery_ids(mine.text)

    async with httpx.AsyncClient(
        transport=client._transport, base_url="http://gateway.test"
    ) as stranger:
        assert (await sign_up(stranger, "stranger@example.com")).status_code == 303
        theirs = await page(stranger)
        assert endpoint_ids(theirs.text) == [] and delivery_ids(theirs.text) == []
        token = csrf_of(theirs.text)
        for path in (
            f"{PAGE}/{endpoint_id}/delete",
            f"{PAGE}/{endpoint_id}/enable",
            f"{PAGE}/deliveries/{delivery_id}/resend",
        ):
            answer = await stranger.post(path, data={"csrf_token": token})
            assert answer.status_code == 404, path
    assert endpoint_ids((await page(client)).text) == [endpoint_id]
