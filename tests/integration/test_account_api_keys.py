"""`/v1/account/api-keys`: the signed-in owner manages every key of the account as JSON."""

from __future__ import annotations

import httpx

from tests.conftest import Gateway
from tests.integration.test_account_api import signed_in_browser

IMAGE = "/v1/openai/images/generations"
FREE = {"model": "test/test", "prompt": "a kite", "size": "64x64"}


async def test_the_owner_creates_uses_renames_and_revokes_a_key(gateway: Gateway) -> None:
    _, csrf = await signed_in_browser(gateway, "owner@example.com")
    created = await gateway.client.post(
        "/v1/account/api-keys",
        json={"name": "laptop", "spend_limit": "1.5", "spend_limit_period": "day"},
        headers=csrf,
    )
    assert created.status_code == 201, created.text
    key = created.json()
    assert key["name"] == "laptop" and key["spend_limit"] == "1.5000" and len(key["key"]) == 64

    used = await gateway.post(IMAGE, key["key"], json=FREE)
    assert used.status_code == 200, used.text

    listed = (await gateway.client.get("/v1/account/api-keys")).json()["data"]
    assert [(k["id"], k["name"]) for k in listed] == [(key["id"], "laptop")]
    assert all("key" not in k for k in listed)  # shown once, never again

    renamed = await gateway.client.patch(
        f"/v1/account/api-keys/{key['id']}", json={"name": "old laptop"}, headers=csrf
    )
    assert renamed.status_code == 200 and renamed.json()["name"] == "old laptop"

    revoked = await gateway.client.delete(f"/v1/account/api-keys/{key['id']}", headers=csrf)
    assert revoked.json() == {"id": key["id"], "deleted": True}
    refused = await gateway.post(IMAGE, key["key"], json=FREE)
    assert refused.status_code == 401
    assert (await gateway.client.get("/v1/account/api-keys")).json()["data"] == []


async def test_the_owner_may_revoke_a_management_key(gateway: Gateway) -> None:
    _, csrf = await signed_in_browser(gateway, "boss@example.com")
    created = await gateway.client.post(
        "/v1/account/api-keys", json={"name": "ci manager", "management": True}, headers=csrf
    )
    manager = created.json()
    assert manager["is_management"] is True
    listing = await gateway.client.get(
        "/v1/api-keys", headers={"Authorization": f"Bearer {manager['key']}"}
    )
    assert listing.status_code == 200
    gone = await gateway.client.delete(f"/v1/account/api-keys/{manager['id']}", headers=csrf)
    assert gone.status_code == 200
    after = await gateway.client.get(
        "/v1/api-keys", headers={"Authorization": f"Bearer {manager['key']}"}
    )
    assert after.status_code == 401


async def test_keys_are_managed_only_by_their_signed_in_owner(gateway: Gateway) -> None:
    _, key = await gateway.account()
    # An API key, even a valid one, is not a sign-in.
    by_key = await gateway.client.get(
        "/v1/account/api-keys", headers={"Authorization": f"Bearer {key}"}
    )
    assert by_key.status_code == 403 and by_key.json()["error"]["code"] == "sign_in_required"
    anonymous = await httpx.AsyncClient(
        transport=gateway.client._transport, base_url=str(gateway.client.base_url)
    ).get("/v1/account/api-keys")
    assert anonymous.status_code == 401

    _, csrf = await signed_in_browser(gateway, "other@example.com")
    keys = await gateway.rows("SELECT id FROM api_keys")
    foreign = keys[0]["id"]
    for response in (
        await gateway.client.delete(f"/v1/account/api-keys/{foreign}", headers=csrf),
        await gateway.client.patch(
            f"/v1/account/api-keys/{foreign}", json={"name": "mine now"}, headers=csrf
        ),
    ):
        assert response.status_code == 404
    # A state change without the page's CSRF token is refused.
    no_csrf = await gateway.client.post("/v1/account/api-keys", json={"name": "x"})
    assert no_csrf.status_code == 403 and no_csrf.json()["error"]["code"] == "csrf_failed"


async def test_creating_a_key_needs_a_recent_sign_in(gateway: Gateway) -> None:
    account_id, csrf = await signed_in_browser(gateway, "stale@example.com")
    await gateway.execute(
        "UPDATE web_sessions SET reauthenticated_at = created_at - INTERVAL '1 day' "
        "WHERE account_id = :a"
        if not gateway.res.settings.storage.is_sqlite
        else "UPDATE web_sessions SET reauthenticated_at = '2000-01-01 00:00:00' "
        "WHERE account_id = :a",
        a=account_id,
    )
    refused = await gateway.client.post("/v1/account/api-keys", json={"name": "late"}, headers=csrf)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "reverification_required"
