"""The `:free` models (spec §6.3): the API-key gate for unfunded accounts and the daily caps
per account and per IP, counted from the usage log over UTC days (an injected clock crosses
midnight). Runs on SQLite and on the real PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import create_async_engine

from image_router.db.session import unit_of_work
from image_router.db.tables import Generation
from image_router.errors import InternalError, RateLimited
from image_router.kit.ids import new_id
from image_router.limits.free_tier import DepositRequired, FreeTier
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
FREE = {"model": "openai/gpt-image-1.5:free", "prompt": "a lighthouse", "quality": "low"}
HERE = "127.0.0.1"  # the in-process client's address
# The links name this server's own pages (PUBLIC_URL is http://gateway.test in tests).
WEBSITE_ONLY = (
    "Free models are only available on the website (eg http://gateway.test/playground). To "
    "gain API access, please deposit any amount (free models cost $0, but one time deposit "
    "needed to prevent abuse). More info about pricing: http://gateway.test/pricing"
)
FUNDED_CAP = (
    "Daily limit of 50 free requests reached. There is no limit on paid models, so you can "
    'continue by removing ":free" from the model name.'
)
UNFUNDED_CAP = (
    "Daily limit of 10 free requests reached. Please deposit any amount to get access to 50 "
    "daily free generations: http://gateway.test/pricing"
)
DAY = datetime(2030, 1, 15, tzinfo=UTC)


async def log_usage(
    gateway: Gateway,
    count: int,
    *,
    account_id: str,
    at: datetime,
    ip: str | None = HERE,
    model: str = "openai/gpt-image-1.5:free",
) -> None:
    """Usage rows as earlier requests left them; every status counts."""
    statuses = ["success", "error", "processing"]
    rows = [
        {
            "id": new_id(),
            "account_id": account_id,
            "api_key_id": None,
            "via_web_token": False,
            "modality": "image",
            "model": model,
            "provider": "openai",
            "size": "auto",
            "status": statuses[i % 3],
            "ip": ip,
            "created_at": at,
            "deadline_at": at,
        }
        for i in range(count)
    ]
    async with unit_of_work(gateway.res.engine) as conn:
        await conn.execute(insert(Generation), rows)


@pytest.fixture
def clock(any_gateway: Gateway) -> list[datetime]:
    """The free tier's clock: set `clock[0]` to move it."""
    now = [DAY.replace(hour=12)]
    any_gateway.res.limits.free_tier.clock = lambda: now[0]
    return now


async def test_unfunded_api_keys_may_not_use_free_models(any_gateway: Gateway) -> None:
    _, key = await any_gateway.account("0")
    response = await any_gateway.post(IMAGE, key, json=FREE)
    assert response.status_code == 403
    assert response.json()["error"]["message"] == WEBSITE_ONLY
    assert response.json()["error"]["type"] == "access_denied"
    assert any_gateway.openai.requests == []
    assert await any_gateway.generations() == []
    # Paid models are not gated; validation still answers first.
    assert (await any_gateway.post(IMAGE, key, json={"model": "test/test"})).status_code == 200
    too_big = await any_gateway.post(IMAGE, key, json={**FREE, "size": "1536x1024"})
    assert too_big.status_code == 400


async def test_funded_accounts_get_fifty_a_day(any_gateway: Gateway, clock: list[datetime]) -> None:
    account, key = await any_gateway.account("1")
    await log_usage(any_gateway, 49, account_id=account, at=DAY.replace(hour=1))
    await log_usage(any_gateway, 5, account_id=account, at=DAY - timedelta(seconds=1))  # yesterday
    await log_usage(any_gateway, 5, account_id=account, at=DAY, model="openai/gpt-image-1.5")
    allowed = await any_gateway.post(IMAGE, key, json=FREE)
    assert allowed.status_code == 200, allowed.text
    # The request just served is the 50th of the day (rows are dated by the real clock).
    await log_usage(any_gateway, 1, account_id=account, at=DAY.replace(hour=2))
    refused = await any_gateway.post(IMAGE, key, json=FREE)
    assert refused.status_code == 429
    assert refused.json()["error"] == {
        "message": FUNDED_CAP,
        "type": "rate_limit_error",
        "code": "rate_limited",
        "param": None,
    }
    assert refused.headers["retry-after"] == str(12 * 3600)  # until UTC midnight
    paid = await any_gateway.post(IMAGE, key, json={**FREE, "model": "openai/gpt-image-1.5"})
    assert paid.status_code == 200, paid.text  # no limit on paid models


async def test_the_cap_also_binds_each_address(any_gateway: Gateway, clock: list[datetime]) -> None:
    other, _ = await any_gateway.account("1")
    _, key = await any_gateway.account("1")
    await log_usage(any_gateway, 50, account_id=other, at=DAY.replace(hour=3))
    refused = await any_gateway.post(IMAGE, key, json=FREE)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"] == FUNDED_CAP
    # Moved to another address, those rows no longer count against this one.
    await any_gateway.execute("UPDATE generations SET ip = '203.0.113.9'")
    assert (await any_gateway.post(IMAGE, key, json=FREE)).status_code == 200


async def test_the_day_ends_at_utc_midnight(any_gateway: Gateway, clock: list[datetime]) -> None:
    account, key = await any_gateway.account("1")
    await log_usage(any_gateway, 50, account_id=account, at=DAY)  # the first instant
    clock[0] = DAY.replace(hour=23, minute=59, second=59, microsecond=999_999)
    refused = await any_gateway.post(IMAGE, key, json=FREE)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    clock[0] = DAY + timedelta(days=1)
    allowed = await any_gateway.post(IMAGE, key, json=FREE)
    assert allowed.status_code == 200, allowed.text
    clock[0] = DAY - timedelta(microseconds=1)  # the day before knows nothing of them
    assert (await any_gateway.post(IMAGE, key, json=FREE)).status_code == 200


async def test_unfunded_website_users_get_ten_a_day(
    any_gateway: Gateway, clock: list[datetime]
) -> None:
    """Website tokens are minted by the accounts feature; the policy is checked directly."""
    tier = any_gateway.res.limits.free_tier
    account, _ = await any_gateway.account("0")
    await log_usage(any_gateway, 9, account_id=account, at=DAY, ip="198.51.100.1")

    async def web_request(account_id: str | None, ip: str) -> None:
        await tier.check(
            "openai/gpt-image-1.5:free",
            account_id=account_id,
            funded=False,
            via_web_token=True,
            ip=ip,
        )

    await web_request(account, "198.51.100.2")
    await log_usage(any_gateway, 1, account_id=account, at=DAY, ip="198.51.100.1")
    with pytest.raises(DepositRequired) as refused:
        await web_request(account, "198.51.100.2")
    assert refused.value.status == 403
    assert refused.value.body()["error"]["message"] == UNFUNDED_CAP
    assert refused.value.body()["error"]["type"] == "deposit_required"
    # Guests (the shared guest account) are bound by the per-IP cap only.
    await web_request(None, "203.0.113.1")
    with pytest.raises(DepositRequired):
        await web_request(None, "198.51.100.1")
    # A funded website user is held to the funded cap, with its message.
    await log_usage(any_gateway, 40, account_id=account, at=DAY, ip="198.51.100.1")
    with pytest.raises(RateLimited):
        await tier.check("x:free", account_id=account, funded=True, via_web_token=True, ip=None)


async def test_a_failing_count_is_a_500_with_the_reference_message() -> None:
    engine = create_async_engine("sqlite+aiosqlite:////nonexistent/dir/usage.db")
    tier = FreeTier(engine)
    with pytest.raises(InternalError) as failed:
        await tier.check("a:free", account_id="x", funded=True, via_web_token=False, ip=None)
    assert failed.value.message == "Failed to verify free-tier usage limit"
    await engine.dispose()


async def test_without_rate_limits_no_ratelimit_headers_are_sent(any_gateway: Gateway) -> None:
    _, key = await any_gateway.account("1")
    response = await any_gateway.post(IMAGE, key, json={"model": "test/test"})
    assert response.status_code == 200
    assert not any(h.startswith("ratelimit") for h in response.headers)
