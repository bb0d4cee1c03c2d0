"""Website tokens (spec §4): minted by POST /v1/web-token, accepted as Bearer tokens."""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

import jwt
import pytest

from image_router.account import web_tokens
from image_router.db.session import unit_of_work
from image_router.kit.money import usd_to_credits
from image_router.ledger import service as ledger
from tests.conftest import Gateway
from tests.integration.web_helpers import sign_up

SECRET = "web-token-test-secret-0123456789abcdef"
IMAGE = "/v1/openai/images/generations"
BODY = {"model": "test/test", "prompt": "a lighthouse"}
PEER = "127.0.0.1"  # httpx's ASGITransport client address
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    return {"jwt_secret": SECRET}


async def _signed_in(gateway: Gateway, email: str = "web@example.com") -> tuple[str, str]:
    """Sign up through the pages; returns (account id, the page's CSRF token)."""
    await sign_up(gateway.client, email)
    page = await gateway.client.get("/account")
    found = META_CSRF.search(page.text)
    assert found is not None
    [row] = await gateway.rows(
        "SELECT id FROM accounts WHERE email_bidx = :e", e=gateway.res.vault.email_index(email)
    )
    return row["id"], found.group(1)


async def _grant(gateway: Gateway, account_id: str, usd: str) -> None:
    async with unit_of_work(gateway.res.engine) as conn:
        await ledger.grant(conn, account_id, usd_to_credits(usd), reason="test")


def _forge(user_id: str, ip: str | None, *, exp_in: int = 60, secret: str = SECRET) -> str:
    now = int(time.time())
    claims = {"userId": user_id, "jwtGeneratedWithIp": ip, "iat": now, "exp": now + exp_in}
    return jwt.encode(claims, secret, algorithm="HS256")


def _flip_signature(token: str) -> str:
    head, signature = token.rsplit(".", 1)
    return f"{head}.{'B' if signature[0] == 'A' else 'A'}{signature[1:]}"


def _swap_user(token: str, user_id: str) -> str:
    """The same token with another userId and the original signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["userId"] = user_id
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{forged}.{signature}"


async def test_signed_in_browser_gets_a_token_for_its_account(any_gateway: Gateway) -> None:
    account_id, csrf = await _signed_in(any_gateway)
    response = await any_gateway.client.post("/v1/web-token", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200
    token = response.json()["token"]
    assert len(token) >= 100
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["userId"] == account_id == response.json()["user_id"]
    assert claims["jwtGeneratedWithIp"] == PEER
    assert 55 <= claims["exp"] - time.time() <= 61

    await _grant(any_gateway, account_id, "1")
    generated = await any_gateway.post(IMAGE, token, json=BODY)
    assert generated.status_code == 200, generated.text
    [row] = await any_gateway.generations()
    assert row["account_id"] == account_id
    assert row["via_web_token"] is True and row["api_key_id"] is None
    auth = await any_gateway.post("/v1/auth/test", token)
    assert auth.json() == {"success": True, "credits": usd_to_credits("1") - row["cost"]}


async def test_signed_in_browser_must_send_the_csrf_header(gateway: Gateway) -> None:
    await _signed_in(gateway)
    for headers in ({}, {"X-CSRF-Token": "forged"}):
        response = await gateway.client.post("/v1/web-token", headers=headers)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "csrf_failed"


async def test_guests_share_one_guest_account(any_gateway: Gateway) -> None:
    first = (await any_gateway.client.post("/v1/web-token")).json()
    second = (await any_gateway.client.post("/v1/web-token")).json()
    assert first["user_id"] == second["user_id"] == "anon_user"
    for token in (first["token"], second["token"]):
        response = await any_gateway.post("/v1/auth/test", token)
        assert response.json() == {"success": True, "credits": 0}
    guests = await any_gateway.rows("SELECT email_bidx, role, balance FROM accounts")
    index = any_gateway.res.vault.email_index("guest@localhost")
    assert guests == [{"email_bidx": index, "role": "guest", "balance": 0}]


async def test_unfunded_tokens_are_bound_to_their_address(any_gateway: Gateway) -> None:
    response = await any_gateway.post("/v1/auth/test", _forge("anon_user", "10.0.0.9"))
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["message"] == f"Guest token IP mismatch: {PEER} !== 10.0.0.9"
    assert error["type"] == "unauthorized"

    account_id, _ = await _signed_in(any_gateway)
    assert (
        await any_gateway.post("/v1/auth/test", _forge(account_id, "10.0.0.9"))
    ).status_code == 403
    assert (await any_gateway.post("/v1/auth/test", _forge(account_id, PEER))).status_code == 200


async def test_funded_tokens_work_from_anywhere(gateway: Gateway) -> None:
    account_id, _ = await _signed_in(gateway)
    await _grant(gateway, account_id, "2")
    response = await gateway.post(IMAGE, _forge(account_id, "10.0.0.9"), json=BODY)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda t: _forge("anon_user", PEER, exp_in=-5), id="expired"),
        pytest.param(lambda t: _forge("anon_user", PEER, secret="x" * 40), id="other-secret"),
        pytest.param(lambda t: _flip_signature(t), id="signature"),
        pytest.param(lambda t: _swap_user(t, "someone-else"), id="claims"),
        pytest.param(
            lambda t: jwt.encode({"userId": "anon_user", "pad": "x" * 80}, SECRET), id="no-exp"
        ),
    ],
)
async def test_bad_tokens_are_refused(gateway: Gateway, mangle: Any) -> None:
    good = (await gateway.client.post("/v1/web-token")).json()["token"]
    bad = mangle(good)
    assert len(bad) >= 100 and bad != good
    response = await gateway.post(IMAGE, bad, json=BODY)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "Invalid or expired JWT token"


async def test_token_of_a_missing_account(gateway: Gateway) -> None:
    response = await gateway.post("/v1/auth/test", _forge("no-such-account", PEER))
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User not found for this JWT token"


def test_minted_tokens_are_long_enough_for_the_shortest_claims() -> None:
    token, _ = web_tokens.mint("k" * 32, "anon_user", None, 1)
    assert len(token) >= web_tokens.MIN_TOKEN_LENGTH


@pytest.mark.parametrize("gateway_overrides", [{}])
async def test_without_jwt_secret_a_key_file_signs_the_tokens(gateway: Gateway) -> None:
    """A default install (no JWT_SECRET) still has website tokens, hence a playground: the
    secret is a key file created on first start under DATA_DIR/keys, like the PII KEK."""
    key_file = gateway.res.settings.storage.data_dir / "keys" / "web-token.key"
    assert key_file.exists() and key_file.stat().st_mode & 0o777 == 0o600
    secret = key_file.read_text().strip()
    assert gateway.res.web_token_secret == secret

    response = await gateway.client.post("/v1/web-token")
    assert response.status_code == 200
    token = response.json()["token"]
    assert jwt.decode(token, secret, algorithms=["HS256"])["userId"] == "anon_user"
    assert (await gateway.post("/v1/auth/test", token)).status_code == 200
    # A token signed with anything else is refused.
    refused = await gateway.post("/v1/auth/test", _forge("anon_user", PEER))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "Invalid or expired JWT token"
