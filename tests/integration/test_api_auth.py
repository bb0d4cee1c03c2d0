"""Authentication errors of spec §2.10 and key life-cycle (revocation, last use)."""

from __future__ import annotations

import pytest

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
BODY = {"model": "test/test", "prompt": "cat"}


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "Authorization header must be provided as Bearer token"),
        ("Basic abc", "Authorization header must be provided as Bearer token"),
        ("bearer " + "x" * 64, "Authorization header must be provided as Bearer token"),
        ("Bearer short", "Invalid authorization token length: 5"),
        ("Bearer " + "x" * 80, "Invalid authorization token length: 80"),
        ("Bearer " + "x" * 64, "Invalid API key"),
        ("Bearer " + "x" * 120, "Invalid or expired JWT token"),
    ],
)
async def test_bad_credentials_get_401(gateway: Gateway, header: str | None, message: str) -> None:
    headers = {} if header is None else {"Authorization": header}
    for path in (IMAGE, "/v1/auth/test"):
        response = await gateway.client.post(path, json=BODY, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["message"] == message
        assert response.json()["error"]["type"] == "unauthorized"
    credits = await gateway.client.get("/v1/credits", headers=headers)
    assert credits.status_code == 401


async def test_auth_test_returns_raw_credits(gateway: Gateway) -> None:
    _, key = await gateway.account("10")
    response = await gateway.post("/v1/auth/test", key)
    assert response.json() == {"success": True, "credits": 100_000}


async def test_revoked_key_is_refused_at_once(any_gateway: Gateway) -> None:
    account, key = await any_gateway.account("1")
    assert (await any_gateway.post(IMAGE, key, json=BODY)).status_code == 200
    async with unit_of_work(any_gateway.res.engine) as conn:
        [view] = await accounts.list_keys(conn, account)
        assert view.last_used_at is not None
        assert key.startswith(view.prefix) and key.endswith(view.last_four)
        await accounts.revoke_key(conn, view.id)
    response = await any_gateway.post(IMAGE, key, json=BODY)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid API key"


async def test_keys_are_stored_hashed(gateway: Gateway) -> None:
    _, key = await gateway.account()
    rows = await gateway.rows("SELECT key_hash, prefix, last_four FROM api_keys")
    assert len(key) == 64 and key.startswith("ir-")
    assert all(key not in str(row.values()) for row in rows)
