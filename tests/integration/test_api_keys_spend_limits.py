"""Per-key spend limits: windows (with an injected clock), enforcement under concurrency,
and what `/v1/credits?by_api_key=true` and `/v1/api-keys` report. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, update

from image_router.account import service as accounts
from image_router.account import spend_limits
from image_router.db.session import unit_of_work
from image_router.db.tables import ApiKey, Generation
from image_router.kit.clock import iso, utcnow
from image_router.kit.ids import new_id
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
DALLE2 = {"model": "openai/dall-e-2", "prompt": "a lighthouse", "size": "1024x1024"}
FREE = {"model": "test/test", "prompt": "a cat"}
PRICE = 160  # dall-e-2 through the OpenAI fake: $0.016
MICRO = timedelta(microseconds=1)


async def _limited_key(
    gw: Gateway, limit: int | None, period: str | None, usd: str = "1"
) -> tuple[str, str, str]:
    """(account id, key id, key secret) of a new funded account's limited key."""
    account, _ = await gw.account(usd)
    async with unit_of_work(gw.res.engine) as conn:
        view, secret = await accounts.create_key(
            conn, account, "limited", spend_limit=limit, spend_limit_period=period
        )
    return account, view.id, secret


async def _usage_row(
    gw: Gateway,
    account: str,
    key_id: str,
    at: datetime,
    *,
    cost: int = 0,
    held: int = 0,
    status: str = "success",
) -> None:
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(
            insert(Generation).values(
                id=new_id(),
                account_id=account,
                api_key_id=key_id,
                via_web_token=False,
                modality="image",
                model="openai/dall-e-2",
                provider="openai",
                size="1024x1024",
                status=status,
                held=held,
                cost=cost,
                input_types=["PROMPT"],
                output_urls=[],
                attempts=[],
                created_at=at,
                deadline_at=at + timedelta(minutes=5),
            )
        )


# Each case: the period, a moment inside a window (at its very end), that window's start
# and the next window's start.
WINDOWS = [
    pytest.param(
        "day",
        datetime(2026, 3, 4, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 4, tzinfo=UTC),
        datetime(2026, 3, 5, tzinfo=UTC),
        id="day",
    ),
    pytest.param(
        "week",  # Sunday 8 March 2026 ends the ISO week that began on Monday 2 March
        datetime(2026, 3, 8, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 2, tzinfo=UTC),
        datetime(2026, 3, 9, tzinfo=UTC),
        id="week",
    ),
    pytest.param(
        "month",
        datetime(2026, 2, 28, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 2, 1, tzinfo=UTC),
        datetime(2026, 3, 1, tzinfo=UTC),
        id="month",
    ),
]


@pytest.mark.parametrize(("period", "late", "start", "next_start"), WINDOWS)
async def test_window_boundaries_with_an_injected_clock(
    any_gateway: Gateway, period: str, late: datetime, start: datetime, next_start: datetime
) -> None:
    gw = any_gateway
    account, key_id, _ = await _limited_key(gw, 300, period)
    await _usage_row(gw, account, key_id, start - MICRO, cost=100)  # the previous window
    await _usage_row(gw, account, key_id, start, cost=200)  # first instant of this one
    await _usage_row(gw, account, key_id, next_start, cost=40)  # first instant of the next
    async with unit_of_work(gw.res.engine) as conn:
        assert await spend_limits.period_spend(conn, key_id, period, late) == (200, start)
        assert await spend_limits.period_spend(conn, key_id, period, start) == (200, start)
        # Exactly up to the limit is allowed; one credit more is not.
        assert await spend_limits.check(conn, key_id, 100, clock=lambda: late) is None
        refusal = await spend_limits.check(conn, key_id, 101, clock=lambda: late)
        assert refusal is not None
        assert refusal.status == 402
        assert refusal.code == "key_spend_limit"
        adjective = {"day": "daily", "week": "weekly", "month": "monthly"}[period]
        assert f"{adjective} spend limit of $0.0300" in refusal.message
        assert "$0.0200 spent since " + iso(start) in refusal.message
        assert "needs $0.0101" in refusal.message
        assert f"starts afresh at {iso(next_start)}" in refusal.message
        # The next window starts afresh, with only what was spent in it.
        assert await spend_limits.period_spend(conn, key_id, period, next_start) == (
            40,
            next_start,
        )
        assert await spend_limits.check(conn, key_id, 260, clock=lambda: next_start) is None
        assert await spend_limits.check(conn, key_id, 261, clock=lambda: next_start) is not None


async def test_lifetime_limit_counts_everything_and_holds_not_failures(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    account, key_id, _ = await _limited_key(gw, 1000, None)
    await _usage_row(gw, account, key_id, datetime(2001, 1, 1, tzinfo=UTC), cost=300)
    await _usage_row(gw, account, key_id, utcnow(), held=500, status="processing")
    await _usage_row(gw, account, key_id, utcnow(), held=900, status="error")  # released
    await _usage_row(gw, account, "another-key", utcnow(), cost=900)
    far = datetime(2099, 1, 1, tzinfo=UTC)
    async with unit_of_work(gw.res.engine) as conn:
        assert await spend_limits.period_spend(conn, key_id, None, far) == (800, None)
        assert await spend_limits.check(conn, key_id, 200, clock=lambda: far) is None
        refusal = await spend_limits.check(conn, key_id, 201, clock=lambda: far)
        assert refusal is not None
        assert "lifetime spend limit of $0.1000" in refusal.message
        assert "Raise the key's limit or use another key" in refusal.message


async def test_limit_holds_under_twenty_concurrent_requests(any_gateway: Gateway) -> None:
    """A $0.05 daily limit at $0.016 a request: exactly 3 of 20 parallel requests succeed."""
    gw = any_gateway
    limit = 500
    account, _, secret = await _limited_key(gw, limit, "day")
    gw.openai.delay = 0.05  # keep requests in flight together
    responses = await asyncio.gather(*(gw.post(IMAGE, secret, json=DALLE2) for _ in range(20)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == limit // PRICE, statuses
    assert statuses.count(402) == 20 - limit // PRICE, statuses
    refused = next(r for r in responses if r.status_code == 402).json()["error"]
    assert refused["code"] == "key_spend_limit"
    assert refused["message"].startswith("This API key's daily spend limit of $0.0500")
    assert await gw.balance(account) == 10_000 - 3 * PRICE
    assert await gw.ledger_sum(account) == await gw.balance(account)
    rows = await gw.rows("SELECT status, cost FROM generations")
    assert [r["status"] for r in rows] == ["success"] * 3
    assert len(gw.openai.requests) == 3


async def test_free_models_pass_a_zero_limit_and_limit_changes_apply_at_once(
    any_gateway: Gateway,
) -> None:
    gw = any_gateway
    account, key_id, secret = await _limited_key(gw, 0, "month")
    assert (await gw.post(IMAGE, secret, json=FREE)).status_code == 200
    refused = await gw.post(IMAGE, secret, json=DALLE2)
    assert refused.status_code == 402
    assert "monthly spend limit of $0.0000" in refused.json()["error"]["message"]
    assert await gw.balance(account) == 10_000
    await _set_key(gw, key_id, spend_limit=PRICE, spend_limit_period="month")
    assert (await gw.post(IMAGE, secret, json=DALLE2)).status_code == 200
    assert (await gw.post(IMAGE, secret, json=DALLE2)).status_code == 402
    await _set_key(gw, key_id, spend_limit=None, spend_limit_period=None)
    assert (await gw.post(IMAGE, secret, json=DALLE2)).status_code == 200
    assert await gw.balance(account) == 10_000 - 2 * PRICE


async def _set_key(gw: Gateway, key_id: str, **values: Any) -> None:
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values))


def _item(body: dict[str, Any], key_id: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = body["usage_by_api_key"]
    return next(i for i in items if i["api_key_id"] == key_id)


async def test_credits_and_key_list_report_limits_and_window_spend(any_gateway: Gateway) -> None:
    gw = any_gateway
    account, key_id, secret = await _limited_key(gw, 10_000, "week")
    expiry = datetime(2999, 5, 6, 7, 8, 9, tzinfo=UTC)
    await _set_key(gw, key_id, expires_at=expiry)
    assert (await gw.post(IMAGE, secret, json=DALLE2)).status_code == 200
    # The account's unlimited key, used once for free.
    [plain] = await gw.rows(
        "SELECT id FROM api_keys WHERE account_id = :a AND spend_limit IS NULL", a=account
    )
    now = utcnow()
    monday = (now - timedelta(days=now.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    response = await gw.client.get(
        "/v1/credits?by_api_key=true", headers={"Authorization": f"Bearer {secret}"}
    )
    body = response.json()
    assert _item(body, key_id) == {
        "api_key_id": key_id,
        "api_key_name": "limited",
        "credit_usage": "0.0160",
        "total_requests": 1,
        "created_at": _item(body, key_id)["created_at"],
        "is_active": True,
        "spend_limit": "1.0000",
        "spend_limit_period": "week",
        "period_spend": "0.0160",
        "period_start": iso(monday),
        "expires_at": "2999-05-06T07:08:09.000Z",
    }
    assert plain["id"] not in {i["api_key_id"] for i in body["usage_by_api_key"]}
    async with unit_of_work(gw.res.engine) as conn:
        _, manager = await accounts.create_key(conn, account, "manager", management=True)
    listing = await gw.client.get("/v1/api-keys", headers={"Authorization": f"Bearer {manager}"})
    limited = next(k for k in listing.json()["data"] if k["id"] == key_id)
    assert (limited["period_spend"], limited["period_start"]) == (
        "0.0160",
        iso(monday),
    )
    unlimited = next(k for k in listing.json()["data"] if k["id"] == plain["id"])
    assert (unlimited["spend_limit"], unlimited["period_spend"], unlimited["period_start"]) == (
        None,
        None,
        None,
    )


async def test_credits_items_without_a_limit_carry_nulls(any_gateway: Gateway) -> None:
    gw = any_gateway
    _, key = await gw.account("1")
    assert (await gw.post(IMAGE, key, json=FREE)).status_code == 200
    body = (
        await gw.client.get(
            "/v1/credits?by_api_key=true", headers={"Authorization": f"Bearer {key}"}
        )
    ).json()
    [item] = body["usage_by_api_key"]
    assert {k: item[k] for k in spend_fields()} == dict.fromkeys(spend_fields())


def spend_fields() -> tuple[str, ...]:
    return ("spend_limit", "spend_limit_period", "period_spend", "period_start", "expires_at")
