"""The sign-in throttle counts the e-mail across addresses and the address across e-mails,
in process and in the real Redis (127.0.0.1:6379), whose keys hold neither in clear."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.conftest import Gateway
from tests.integration.web_helpers import form_token, sign_in, sign_up

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
EMAIL = "ada.throttle@example.com"


@pytest.fixture
async def redis_namespace() -> AsyncIterator[str]:
    name = f"test-signin-{os.urandom(6).hex()}"
    yield name
    redis = Redis.from_url(REDIS_URL)
    keys = [k async for k in redis.scan_iter(f"{name}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture(params=["memory", "redis"])
def gateway_overrides(request: pytest.FixtureRequest, redis_namespace: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "signin_throttle": "5/minute",
        "signin_throttle_email": "10/minute",
        "signin_throttle_ip": "20/minute",
        "trusted_proxy_count": 1,  # the address comes from X-Forwarded-For
    }
    if request.param == "redis":
        overrides |= {"redis_url": REDIS_URL, "redis_namespace": redis_namespace}
    return overrides


async def attempt(gw: Gateway, email: str, ip: str, password: str = "wrong password!") -> int:
    gw.client.headers["X-Forwarded-For"] = ip
    return (await sign_in(gw.client, email, password)).status_code


async def forgot(gw: Gateway, email: str, ip: str) -> int:
    gw.client.headers["X-Forwarded-For"] = ip
    token = await form_token(gw.client, "/password/forgot")
    response = await gw.client.post("/password/forgot", data={"csrf_token": token, "email": email})
    return response.status_code


async def test_one_address_trying_many_e_mails_is_throttled(gateway: Gateway) -> None:
    statuses = [await attempt(gateway, f"user{i}@example.com", "203.0.113.7") for i in range(30)]
    assert statuses == [401] * 20 + [429] * 10
    # Another address is not held back by this one.
    assert await attempt(gateway, "user0@example.com", "203.0.113.8") == 401


async def test_one_e_mail_tried_from_many_addresses_is_throttled(gateway: Gateway) -> None:
    await sign_up(gateway.client, EMAIL)
    gateway.client.cookies.clear()
    statuses = [await attempt(gateway, EMAIL, f"198.51.100.{i}") for i in range(12)]
    assert statuses == [401] * 10 + [429] * 2
    refused = await sign_in(gateway.client, EMAIL)  # even the right password, from anywhere
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Case and spaces do not make another e-mail.
    assert await attempt(gateway, f"  {EMAIL.upper()} ", "198.51.100.99") == 429
    # Other e-mails still sign in.
    assert await attempt(gateway, "someone.else@example.com", "198.51.100.1") == 401


async def test_password_reset_requests_are_throttled_the_same_way(gateway: Gateway) -> None:
    statuses = [await forgot(gateway, EMAIL, f"192.0.2.{i}") for i in range(11)]
    assert statuses == [200] * 10 + [429]


async def limiter_keys(gw: Gateway, overrides: dict[str, Any]) -> list[str]:
    """Every key the throttle stored: in Redis, or in this process's memory storage."""
    if "redis_url" not in overrides:
        app = gw.client._transport.app  # type: ignore[attr-defined]  # httpx.ASGITransport
        return [str(k) for k in app.state.web.throttle.storage.storage]
    redis = Redis.from_url(REDIS_URL)
    try:
        return [k.decode() async for k in redis.scan_iter(f"{overrides['redis_namespace']}:*")]
    finally:
        await redis.aclose()


async def test_limiter_keys_hold_no_e_mail_or_address(
    gateway: Gateway, gateway_overrides: dict[str, Any]
) -> None:
    ip = "203.0.113.66"
    assert await attempt(gateway, EMAIL, ip) == 401
    assert await forgot(gateway, EMAIL, ip) == 200
    keys = await limiter_keys(gateway, gateway_overrides)
    assert len(keys) == 6, keys  # sign-in and reset: the pair, the e-mail, the address
    for key in keys:
        lowered = key.lower()
        assert "example.com" not in lowered and "ada.throttle" not in lowered, key
        assert ip not in key, key
