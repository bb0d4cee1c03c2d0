"""Breach runbook (SEC-7): every account with a trace in a time window is listed, and only
those: generations and charges, browser sessions alive in it, sign-ups, audited accesses."""

from __future__ import annotations

from datetime import timedelta

import pytest

from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.privacy import audit, breach
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
LONG_AGO = utcnow() - timedelta(days=400)


async def backdated_account(gateway: Gateway) -> str:
    account_id, _ = await gateway.account()
    await gateway.execute(
        "UPDATE accounts SET created_at = :t WHERE id = :id", t=LONG_AGO, id=account_id
    )
    return account_id


async def session(gateway: Gateway, account_id: str, **times: object) -> None:
    await gateway.execute(
        "INSERT INTO web_sessions (id, account_id, csrf_token, created_at, expires_at, "
        "last_seen_at, reauthenticated_at, revoked_at) VALUES (:id, :account, 'x', :created, "
        ":expires, :seen, :created, :revoked)",
        id=f"session-{account_id}",
        account=account_id,
        created=LONG_AGO,
        expires=utcnow() + timedelta(days=1),
        **times,
    )


async def test_the_window_lists_exactly_the_accounts_with_traces_in_it(
    any_gateway: Gateway,
) -> None:
    start = utcnow() - timedelta(minutes=5)
    generated, key = await any_gateway.account("5")
    response = await any_gateway.post(
        IMAGE, key, json={"model": "openai/dall-e-2", "prompt": "a lighthouse"}
    )
    assert response.status_code == 200
    seen = await backdated_account(any_gateway)
    await session(any_gateway, seen, seen=utcnow(), revoked=None)
    logged_out = await backdated_account(any_gateway)
    await session(any_gateway, logged_out, seen=utcnow(), revoked=start - timedelta(days=1))
    looked_at = await backdated_account(any_gateway)
    quiet = await backdated_account(any_gateway)
    async with unit_of_work(any_gateway.res.engine) as conn:
        await audit.record(
            conn,
            actor_type="operator",
            actor_id="alice",
            subject_account_id=looked_at,
            action="operator_view",
            fields=("email",),
            reason="support",
        )
    end = utcnow() + timedelta(minutes=5)

    async with unit_of_work(any_gateway.res.engine) as conn:
        found = {a.account_id: a.traces for a in await breach.affected_accounts(conn, start, end)}
        earlier = await breach.affected_accounts(conn, LONG_AGO - timedelta(days=1), start)
    assert found[generated]["generations"] == 1
    assert set(found[generated]) == {"generations", "ledger", "signups", "api_keys"}
    assert found[seen] == {"sessions": 1}
    assert found[looked_at] == {"audit": 1}
    assert logged_out not in found and quiet not in found
    # Before the window: the backdated sign-ups (and the long-lived sessions), nothing else.
    assert {a.account_id for a in earlier} == {seen, logged_out, looked_at, quiet}
    with pytest.raises(ValueError, match="end after it starts"):
        async with unit_of_work(any_gateway.res.engine) as conn:
            await breach.affected_accounts(conn, end, start)
