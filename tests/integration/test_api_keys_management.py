"""`/v1/api-keys` with a management key: life-cycle, refusals, validation, expiry.

Runs on SQLite and on the real PostgreSQL where the database matters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.db.tables import ApiKey
from image_router.kit.clock import utcnow
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
VIDEO = "/v1/openai/videos/generations"
KEYS = "/v1/api-keys"
FREE = {"model": "test/test", "prompt": "a cat"}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _manager(gw: Gateway, usd: str = "1") -> tuple[str, str, str]:
    """(account id, its normal key, its management key)."""
    account, normal = await gw.account(usd)
    async with unit_of_work(gw.res.engine) as conn:
        _, secret = await accounts.create_key(conn, account, "manager", management=True)
    return account, normal, secret


async def _key_id(gw: Gateway, secret: str) -> str:
    [row] = await gw.rows("SELECT id FROM api_keys WHERE prefix = :p", p=secret[:8])
    return str(row["id"])


async def _set_key(gw: Gateway, key_id: str, **values: Any) -> None:
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))


async def test_management_key_life_cycle(any_gateway: Gateway) -> None:
    gw = any_gateway
    _, normal, manager = await _manager(gw)
    expiry = (utcnow() + timedelta(days=30)).replace(microsecond=0)
    created = await gw.post(
        KEYS,
        manager,
        json={
            "name": "  ci runner ",
            "spend_limit": 0.05,
            "spend_limit_period": "day",
            "expires_at": expiry.isoformat(),
        },
    )
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["key"]
    assert len(secret) == 64
    assert body["name"] == "ci runner"
    assert (body["prefix"], body["last_four"]) == (secret[:8], secret[-4:])
    assert (body["spend_limit"], body["spend_limit_period"]) == ("0.0500", "day")
    assert body["expires_at"] == expiry.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert body["is_management"] is False and body["disabled"] is False
    assert datetime.fromisoformat(body["created_at"]) <= utcnow()
    assert (await gw.post(IMAGE, secret, json=FREE)).status_code == 200

    listing = await gw.client.get(KEYS, headers=_auth(manager))
    assert listing.status_code == 200
    assert secret not in listing.text and manager not in listing.text and normal not in listing.text
    by_name = {k["name"]: k for k in listing.json()["data"]}
    assert set(by_name) == {"test key", "manager", "ci runner"}
    assert by_name["manager"]["is_management"] is True
    assert by_name["ci runner"]["last_used_at"] is not None
    assert by_name["ci runner"]["period_spend"] == "0.0000"

    changed = await gw.client.patch(
        f"{KEYS}/{body['id']}",
        headers=_auth(manager),
        json={"name": "nightly", "spend_limit": "2", "spend_limit_period": None},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "nightly"
    assert (changed.json()["spend_limit"], changed.json()["spend_limit_period"]) == (
        "2.0000",
        None,
    )
    assert changed.json()["expires_at"] == body["expires_at"]  # untouched fields stay

    for disabled, status in ((True, 401), (False, 200)):
        patched = await gw.client.patch(
            f"{KEYS}/{body['id']}", headers=_auth(manager), json={"disabled": disabled}
        )
        assert patched.json()["disabled"] is disabled
        assert (await gw.post(IMAGE, secret, json=FREE)).status_code == status

    deleted = await gw.client.delete(f"{KEYS}/{body['id']}", headers=_auth(manager))
    assert deleted.json() == {"id": body["id"], "deleted": True}
    refused = await gw.post(IMAGE, secret, json=FREE)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "Invalid API key"
    listing = await gw.client.get(KEYS, headers=_auth(manager))
    assert body["id"] not in {k["id"] for k in listing.json()["data"]}
    again = await gw.client.delete(f"{KEYS}/{body['id']}", headers=_auth(manager))
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "api_key_not_found"


async def _refusal(gw: Gateway, method: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await gw.client.request(
        method,
        KEYS if method in ("GET", "POST") else f"{KEYS}/some-id",
        headers=headers,
        json={"name": "x"} if method in ("POST", "PATCH") else None,
    )
    assert response.status_code == 401, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["type"] == "unauthorized"
    return error


@pytest.mark.parametrize("method", ["POST", "GET", "PATCH", "DELETE"])
async def test_only_a_valid_management_key_may_manage_keys(gateway: Gateway, method: str) -> None:
    _, normal, manager = await _manager(gateway)
    manager_id = await _key_id(gateway, manager)
    assert (await _refusal(gateway, method, {}))["code"] == "missing_authorization"
    error = await _refusal(gateway, method, _auth(normal))
    assert error["code"] == "not_management_key"
    assert "--management" in error["message"]
    for token in ("x" * 64, "x" * 150, "short"):  # unknown key, a website token, garbage
        error = await _refusal(gateway, method, _auth(token))
        assert (error["code"], error["message"]) == (
            "invalid_management_key",
            "Invalid management API key",
        )
    for values in (
        {"is_active": False},  # disabled
        {"is_active": True, "expires_at": utcnow() - timedelta(seconds=1)},  # expired
        {"expires_at": None, "revoked_at": utcnow()},  # revoked
    ):
        await _set_key(gateway, manager_id, **values)
        assert (await _refusal(gateway, method, _auth(manager)))["code"] == (
            "invalid_management_key"
        )
    assert await gateway.rows("SELECT id FROM api_keys WHERE name = 'x'") == []


async def test_management_key_cannot_generate(any_gateway: Gateway) -> None:
    _, _, manager = await _manager(any_gateway)
    for path, body in ((IMAGE, FREE), (IMAGE, {"model": "openai/dall-e-2", "prompt": "x"})):
        response = await any_gateway.post(path, manager, json=body)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "management_key"
        assert "POST /v1/api-keys" in response.json()["error"]["message"]
    video = await any_gateway.post(VIDEO, manager, json={"model": "ir/test-video", "prompt": "x"})
    assert video.status_code == 403
    assert await any_gateway.generations() == []
    assert any_gateway.openai.requests == []
    # The account itself may still be inspected with it.
    assert (await any_gateway.post("/v1/auth/test", manager)).json()["success"] is True
    credits = await any_gateway.client.get("/v1/credits", headers=_auth(manager))
    assert credits.json()["remaining_credits"] == "1.0000"


async def test_management_keys_and_other_accounts_keys_are_out_of_reach(gateway: Gateway) -> None:
    _, _, manager = await _manager(gateway)
    _, other_key = await gateway.account()
    other_id = await _key_id(gateway, other_key)
    manager_id = await _key_id(gateway, manager)
    for method in ("PATCH", "DELETE"):
        kwargs: dict[str, Any] = {"json": {"name": "mine"}} if method == "PATCH" else {}
        foreign = await gateway.client.request(
            method, f"{KEYS}/{other_id}", headers=_auth(manager), **kwargs
        )
        assert foreign.status_code == 404
        own = await gateway.client.request(
            method, f"{KEYS}/{manager_id}", headers=_auth(manager), **kwargs
        )
        assert own.status_code == 403
        assert own.json()["error"]["code"] == "management_key_protected"
    assert (await gateway.post("/v1/auth/test", other_key)).status_code == 200
    listing = await gateway.client.get(KEYS, headers=_auth(manager))
    assert other_id not in listing.text


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({}, "name", "name is required"),
        ({"name": "  "}, "name", "1 to 200"),
        ({"name": "x" * 201}, "name", "1 to 200"),
        ({"name": 5}, "name", "1 to 200"),
        ({"name": "a", "spend_limit": -1}, "spend_limit", "negative"),
        ({"name": "a", "spend_limit": "ten"}, "spend_limit", "not a USD amount"),
        ({"name": "a", "spend_limit": True}, "spend_limit", "USD amount"),
        ({"name": "a", "spend_limit": 0.00001}, "spend_limit", "multiple of $0.0001"),
        ({"name": "a", "spend_limit": 1e12}, "spend_limit", "at most"),
        (
            {"name": "a", "spend_limit": 1, "spend_limit_period": "year"},
            "spend_limit_period",
            "day",
        ),
        ({"name": "a", "spend_limit_period": "day"}, "spend_limit_period", "needs a spend_limit"),
        ({"name": "a", "expires_at": "tomorrow"}, "expires_at", "ISO 8601"),
        ({"name": "a", "expires_at": 1767225600}, "expires_at", "ISO 8601"),
        ({"name": "a", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at", "future"),
        ({"name": "a", "management": True}, "management", "unknown field"),
    ],
)
async def test_bad_key_settings_are_400_and_create_nothing(
    gateway: Gateway, body: dict[str, Any], param: str, words: str
) -> None:
    _, _, manager = await _manager(gateway)
    response = await gateway.post(KEYS, manager, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"]
    assert len(await gateway.rows("SELECT id FROM api_keys")) == 2


async def test_bad_bodies_and_patches(gateway: Gateway) -> None:
    _, normal, manager = await _manager(gateway)
    for raw in (b"[1]", b"{", b""):
        response = await gateway.post(KEYS, manager, content=raw)
        assert response.status_code == 400
        assert response.json()["error"]["message"] == "Request body must be a JSON object"
    key_id = await _key_id(gateway, normal)
    path = f"{KEYS}/{key_id}"
    period_alone = await gateway.client.patch(
        path, headers=_auth(manager), json={"spend_limit_period": "week"}
    )
    assert period_alone.status_code == 400
    assert period_alone.json()["error"]["param"] == "spend_limit_period"
    not_bool = await gateway.client.patch(path, headers=_auth(manager), json={"disabled": "yes"})
    assert not_bool.json()["error"]["param"] == "disabled"
    limited = await gateway.client.patch(
        path, headers=_auth(manager), json={"spend_limit": 3, "spend_limit_period": "week"}
    )
    assert limited.json()["spend_limit_period"] == "week"
    # Removing the limit removes its period with it.
    cleared = await gateway.client.patch(path, headers=_auth(manager), json={"spend_limit": None})
    assert (cleared.json()["spend_limit"], cleared.json()["spend_limit_period"]) == (None, None)
    missing = await gateway.client.patch(
        f"{KEYS}/no-such-key", headers=_auth(manager), json={"name": "x"}
    )
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (0.1, "0.1000"),
        (5, "5.0000"),
        ("$2.5", "2.5000"),
        (0, "0.0000"),
        (None, None),
    ],
)
async def test_spend_limit_amounts_are_exact(
    gateway: Gateway, given: object, stored: str | None
) -> None:
    _, _, manager = await _manager(gateway)
    response = await gateway.post(KEYS, manager, json={"name": "a", "spend_limit": given})
    assert response.status_code == 201, response.text
    assert response.json()["spend_limit"] == stored


async def test_expiry_without_offset_is_utc(gateway: Gateway) -> None:
    _, _, manager = await _manager(gateway)
    response = await gateway.post(
        KEYS, manager, json={"name": "a", "expires_at": "2999-01-02T03:04:05"}
    )
    assert response.json()["expires_at"] == "2999-01-02T03:04:05.000Z"


async def test_expired_keys_are_refused_at_authentication(any_gateway: Gateway) -> None:
    _, _, manager = await _manager(any_gateway)
    soon = await any_gateway.post(
        KEYS,
        manager,
        json={"name": "temp", "expires_at": (utcnow() + timedelta(hours=1)).isoformat()},
    )
    secret, key_id = soon.json()["key"], soon.json()["id"]
    assert (await any_gateway.post(IMAGE, secret, json=FREE)).status_code == 200
    await _set_key(any_gateway, key_id, expires_at=datetime.now(UTC) - timedelta(milliseconds=1))
    for path in (IMAGE, "/v1/auth/test"):
        response = await any_gateway.post(path, secret, json=FREE)
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "Invalid API key"
    # An expiry moved into the future again brings it back.
    await _set_key(any_gateway, key_id, expires_at=utcnow() + timedelta(minutes=5))
    assert (await any_gateway.post(IMAGE, secret, json=FREE)).status_code == 200


async def test_key_routes_are_documented(gateway: Gateway) -> None:
    paths = (await gateway.client.get("/openapi.json")).json()["paths"]
    create = paths["/v1/api-keys"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"]["required"] == ["name"]
    assert "disabled" in str(paths["/v1/api-keys/{key_id}"]["patch"]["requestBody"])
    assert "delete" in paths["/v1/api-keys/{key_id}"]
