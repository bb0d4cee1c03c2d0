"""Rate limits, bans and the client address over HTTP (spec §1.1, §2.10, §6.1, §6.2), on
the in-process backend and on the real Redis.

The gateway trusts one proxy here, so each test picks its client address with
`X-Forwarded-For` — which also shows that the address is read the same way everywhere.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from image_router.db.session import unit_of_work
from image_router.limits import bans
from tests.conftest import Gateway

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IMAGE = "/v1/openai/images/generations"
EDIT = "/v1/openai/images/edits"
VIDEO = "/v1/openai/videos/generations"
TEST_IMAGE = {"model": "test/test", "prompt": "a lighthouse"}
TEST_VIDEO = {"model": "ir/test-video", "prompt": "a lighthouse"}
GENERAL = "Too many requests, please try again later."
GENERATION_IP = "Too many image generation requests, please try again later."
ACCOUNT = "API key rate limit exceeded, please try again later."


@pytest.fixture
async def redis_namespace() -> AsyncIterator[str]:
    name = f"test-limits-api-{os.urandom(6).hex()}"
    yield name
    redis = Redis.from_url(REDIS_URL)
    keys = [k async for k in redis.scan_iter(f"{name}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


@pytest.fixture(params=["memory", "redis"])
def gateway_overrides(request: pytest.FixtureRequest, redis_namespace: str) -> dict[str, Any]:
    overrides: dict[str, Any] = {
        "rate_limits_enabled": True,
        "rate_limit_general": "10/second",
        "rate_limit_generation_ip": "4/minute",
        "trusted_proxy_count": 1,
        "banned_networks": ["2001:db8:bad::/48", "192.0.2.0/24"],
        "bans_refresh_s": 0,
    }
    if request.param == "redis":
        overrides |= {"redis_url": REDIS_URL, "redis_namespace": redis_namespace}
    return overrides


def source(ip: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.100.250, {ip}"}


def policy(response: httpx.Response) -> tuple[str | None, ...]:
    h = response.headers
    return (
        h.get("ratelimit-policy"),
        h.get("ratelimit-limit"),
        h.get("ratelimit-remaining"),
        h.get("ratelimit-reset"),
        h.get("retry-after"),
    )


def assert_error(response: httpx.Response, status: int, message: str, kind: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["message"], error["type"]) == (message, kind)


async def test_every_route_is_limited_per_ip_by_the_general_limiter(gateway: Gateway) -> None:
    headers = {**source("203.0.113.10"), "Origin": "https://example.com"}
    answers = [await gateway.client.get("/health", headers=headers) for _ in range(11)]
    assert [r.status_code for r in answers] == [200] * 10 + [429]
    assert policy(answers[0]) == ("10;w=1", "10", "9", "1", None)
    assert policy(answers[9])[2] == "0"
    refused = answers[10]
    assert_error(refused, 429, GENERAL, "rate_limit_error")
    assert policy(refused) == ("10;w=1", "10", "0", "1", "1")
    assert refused.headers["access-control-allow-origin"] == "*"  # readable by browsers
    # Other routes from the same address are refused too; other addresses are not.
    assert (await gateway.client.get("/v1/models", headers=headers)).status_code == 429
    other = await gateway.client.get("/v1/models", headers=source("203.0.113.11"))
    assert other.status_code == 200
    assert policy(other)[:3] == ("10;w=1", "10", "9")
    # Signed webhook deliveries are judged by their signature, not counted per address:
    # a refused one here is Stripe's 404 (payments are off), not a 429.
    webhook = await gateway.client.post("/webhooks/stripe", headers=headers, content=b"{}")
    assert webhook.status_code != 429 and policy(webhook)[0] is None


async def test_the_generation_routes_share_one_per_ip_limiter(gateway: Gateway) -> None:
    here = source("203.0.113.20")
    keys = [(await gateway.account("1"))[1] for _ in range(3)]
    answers = [
        await gateway.post(IMAGE, keys[0], json=TEST_IMAGE, headers=here),
        await gateway.post(EDIT, keys[1], json=TEST_IMAGE, headers=here),
        await gateway.post(VIDEO, keys[2], json=TEST_VIDEO, headers=here),
        await gateway.post(IMAGE, None, json=TEST_IMAGE, headers=here),  # counted before auth
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 401]
    refused = await gateway.post(VIDEO, keys[0], json=TEST_VIDEO, headers=here)
    assert_error(refused, 429, GENERATION_IP, "rate_limit_error")
    assert policy(refused)[:3] == ("4;w=60", "4", "0")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    fresh = await gateway.post(IMAGE, keys[0], json=TEST_IMAGE, headers=source("203.0.113.21"))
    assert fresh.status_code == 200, fresh.text


async def test_an_account_is_limited_across_addresses_images_and_edits_together(
    gateway: Gateway,
) -> None:
    _, key = await gateway.account("0")  # $0: 6 images a second
    answers = []
    for i in range(7):
        path = IMAGE if i % 2 else EDIT
        answers.append(
            await gateway.post(path, key, json=TEST_IMAGE, headers=source(f"203.0.113.{30 + i}"))
        )
    assert [r.status_code for r in answers] == [200] * 6 + [429]
    # A success carries the headers of the last limiter that ran: the account's.
    assert policy(answers[0]) == ("6;w=1", "6", "5", "1", None)
    assert policy(answers[5])[2] == "0"
    assert_error(answers[6], 429, ACCOUNT, "rate_limit_error")
    assert policy(answers[6]) == ("6;w=1", "6", "0", "1", "1")


async def test_the_account_rate_grows_with_the_balance(gateway: Gateway) -> None:
    _, key = await gateway.account("10")
    image = await gateway.post(IMAGE, key, json=TEST_IMAGE, headers=source("203.0.113.40"))
    assert policy(image)[:3] == ("40;w=1", "40", "39")
    video = await gateway.post(VIDEO, key, json=TEST_VIDEO, headers=source("203.0.113.41"))
    assert policy(video)[:3] == ("1;w=1", "1", "0")  # $10 / 6 rounds down to 1 video


async def test_videos_have_their_own_account_limiter(gateway: Gateway) -> None:
    _, key = await gateway.account("0")
    first = await gateway.post(VIDEO, key, json=TEST_VIDEO, headers=source("203.0.113.50"))
    second = await gateway.post(VIDEO, key, json=TEST_VIDEO, headers=source("203.0.113.51"))
    assert first.status_code == 200, first.text
    assert_error(second, 429, ACCOUNT, "rate_limit_error")
    image = await gateway.post(IMAGE, key, json=TEST_IMAGE, headers=source("203.0.113.52"))
    assert image.status_code == 200


async def test_concurrent_requests_of_one_account_get_exactly_its_rate(gateway: Gateway) -> None:
    _, key = await gateway.account("0")
    answers = await asyncio.gather(
        *(
            gateway.post(IMAGE, key, json=TEST_IMAGE, headers=source(f"203.0.113.{60 + i}"))
            for i in range(10)
        )
    )
    assert sorted(r.status_code for r in answers) == [200] * 6 + [429] * 4


@pytest.mark.parametrize("banned", ["2001:db8:bad:7::1", "192.0.2.77", "::ffff:192.0.2.77"])
async def test_configured_bans_refuse_generation_before_authentication(
    gateway: Gateway, banned: str
) -> None:
    _, key = await gateway.account("1")
    for path, body in ((IMAGE, TEST_IMAGE), (EDIT, TEST_IMAGE), (VIDEO, TEST_VIDEO)):
        for auth in (key, None):
            response = await gateway.post(path, auth, json=body, headers=source(banned))
            assert_error(response, 403, "Access denied", "access_denied")
    # Only the generation routes are closed to them.
    assert (await gateway.client.get("/v1/models", headers=source(banned))).status_code == 200
    neighbour = await gateway.post(IMAGE, key, json=TEST_IMAGE, headers=source("2001:db8:bae::1"))
    assert neighbour.status_code == 200, neighbour.text
    # Refused requests never reached the usage log.
    assert [row["ip"] for row in await gateway.generations()] == ["2001:db8:bae::1"]


async def test_bans_stored_in_the_database_apply_and_lift(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    here = source("2a01:4f8:10::5")
    async with unit_of_work(gateway.res.engine) as conn:
        await bans.add_ban(conn, "2a01:4f8::/29", "abuse")
    refused = await gateway.post(IMAGE, key, json=TEST_IMAGE, headers=here)
    assert_error(refused, 403, "Access denied", "access_denied")
    async with unit_of_work(gateway.res.engine) as conn:
        await bans.remove_ban(conn, "2a01:4f8:0::/29")
    allowed = await gateway.post(IMAGE, key, json=TEST_IMAGE, headers=here)
    assert allowed.status_code == 200, allowed.text


async def test_the_usage_log_records_the_forwarded_client(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    response = await gateway.post(
        IMAGE, key, json=TEST_IMAGE, headers={"X-Forwarded-For": "6.6.6.6, 2001:DB8::42"}
    )
    assert response.status_code == 200, response.text
    [row] = await gateway.generations()
    assert row["ip"] == "2001:db8::42"  # the rightmost hop, canonical; never the spoofed left
