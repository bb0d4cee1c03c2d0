"""Restriction of processing (DSR-4): who may set and lift it, what is recorded each time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account import service as accounts
from image_router.account.personal_data import Vault
from image_router.db.session import make_engine, unit_of_work
from image_router.db.tables import Account, DataSubjectRequest
from image_router.privacy import audit, restriction
from image_router.privacy import requests as dsr
from tests.conftest import vault_for_tests

T0 = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)


@pytest.fixture
async def engine(any_db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(any_db_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def vault(tmp_path: Path) -> AsyncIterator[Vault]:
    made = vault_for_tests(tmp_path)
    yield made
    await made.close()


@pytest.fixture
async def account_id(engine: AsyncEngine, vault: Vault) -> str:
    async with unit_of_work(engine) as conn:
        return (await accounts.create_account(conn, vault, "ada@example.com")).id


async def account_row(engine: AsyncEngine, account_id: str) -> Any:
    async with unit_of_work(engine) as conn:
        return (await conn.execute(select(Account).where(Account.id == account_id))).one()


async def log(engine: AsyncEngine) -> list[audit.AuditRecord]:
    async with unit_of_work(engine) as conn:
        return await audit.entries(conn)


async def requests(engine: AsyncEngine) -> list[dsr.RequestView]:
    async with unit_of_work(engine) as conn:
        return await dsr.list_requests(conn)


async def test_the_account_holder_restricts_at_once_and_asking_again_changes_nothing(
    engine: AsyncEngine, account_id: str, vault: Vault
) -> None:
    words = "my name is spelled wrong and I contest it"
    async with unit_of_work(engine) as conn:
        done = await restriction.request_restriction(
            conn, vault, account_id, reason=words, request_id="req-1", now=T0
        )
    assert done.changed and done.restricted
    row = await account_row(engine, account_id)
    assert row.processing_restricted and words.encode() not in row.restricted_reason_enc
    assert done.reason == words  # sealed in the row, opened for the holder
    assert row.restricted_at == T0
    [entry] = await log(engine)
    assert (entry.actor_type, entry.actor_id, entry.action) == (
        "user",
        account_id,
        "restriction_set",
    )
    assert entry.fields == ("processing_restricted",) and entry.request_id == "req-1"
    assert entry.reason == restriction.HOLDER_REASON  # the person's words stay off the log
    [request] = await requests(engine)
    assert (request.type, request.channel, request.status) == ("restriction", "api", "completed")
    assert request.received_at == request.completed_at == T0

    async with unit_of_work(engine) as conn:
        again = await restriction.request_restriction(conn, vault, account_id, reason="again")
    assert not again.changed and again.restricted_at == T0
    assert len(await log(engine)) == 1 and len(await requests(engine)) == 1


async def test_lifting_needs_the_notice_to_the_person_first(
    engine: AsyncEngine, account_id: str, vault: Vault
) -> None:
    async with unit_of_work(engine) as conn:
        await restriction.request_restriction(conn, vault, account_id, now=T0)
    with pytest.raises(restriction.RestrictionError, match=r"Art\. 18\(3\)"):
        async with unit_of_work(engine) as conn:
            await restriction.lift(
                conn, vault, account_id, reason="resolved", notified=False, operator="alice"
            )
    assert (await account_row(engine, account_id)).processing_restricted

    lifted_at = T0 + timedelta(days=3)
    async with unit_of_work(engine) as conn:
        state = await restriction.lift(
            conn,
            vault,
            account_id,
            reason="accuracy checked",
            notified=True,
            operator="alice",
            now=lifted_at,
        )
    assert not state.restricted and state.lift_notified_at == lifted_at
    row = await account_row(engine, account_id)
    assert not row.processing_restricted and row.restricted_reason_enc is None
    assert row.restriction_lift_notified_at == lifted_at
    entry = (await log(engine))[-1]
    assert (entry.actor_type, entry.actor_id, entry.action, entry.reason) == (
        "operator",
        "alice",
        "restriction_lifted",
        "accuracy checked",
    )
    async with unit_of_work(engine) as conn:
        assert (await audit.verify(conn)).checked == 2

    with pytest.raises(restriction.RestrictionError, match="not restricted"):
        async with unit_of_work(engine) as conn:
            await restriction.lift(
                conn, vault, account_id, reason="x", notified=True, operator="alice"
            )


async def test_an_operator_restriction_closes_the_recorded_request(
    engine: AsyncEngine, account_id: str, vault: Vault
) -> None:
    async with unit_of_work(engine) as conn:
        emailed = await dsr.open_request(
            conn, account_id=account_id, type="restriction", channel="email", received_at=T0
        )
        access = await dsr.open_request(
            conn, account_id=account_id, type="access", channel="email", received_at=T0
        )
    # The wrong request: nothing happens at all (the unit of work rolls back).
    with pytest.raises(restriction.RestrictionError, match="not a restriction request"):
        async with unit_of_work(engine) as conn:
            await restriction.restrict(
                conn,
                vault,
                account_id,
                reason="objection pending",
                actor_type="operator",
                actor_id="alice",
                channel="cli",
                dsr_id=access.id,
            )
    assert not (await account_row(engine, account_id)).processing_restricted
    assert await log(engine) == []

    async with unit_of_work(engine) as conn:
        await restriction.restrict(
            conn,
            vault,
            account_id,
            reason="objection pending",
            actor_type="operator",
            actor_id="alice",
            channel="cli",
            dsr_id=emailed.id,
            now=T0 + timedelta(days=1),
        )
    async with unit_of_work(engine) as conn:
        closed = await dsr.get_request(conn, emailed.id)
        count = len((await conn.execute(select(DataSubjectRequest.id))).all())
    assert (closed.status, closed.handled_by) == ("completed", "alice")
    assert count == 2  # no extra request recorded
    [entry] = await log(engine)
    assert (entry.actor_id, entry.reason) == ("alice", "objection pending")


async def test_restricting_needs_a_reason_and_a_live_account(
    engine: AsyncEngine, account_id: str, vault: Vault
) -> None:
    async with unit_of_work(engine) as conn:
        with pytest.raises(restriction.RestrictionError, match="reason"):
            await restriction.restrict(
                conn,
                vault,
                account_id,
                reason="  ",
                actor_type="operator",
                actor_id="alice",
                channel="cli",
            )
        with pytest.raises(restriction.RestrictionError, match="no account"):
            await restriction.request_restriction(conn, vault, "no-such-account")
        with pytest.raises(restriction.RestrictionError, match="reason"):
            await restriction.lift(conn, vault, account_id, reason="", notified=True, operator="a")
        await conn.execute(update(Account).where(Account.id == account_id).values(status="deleted"))
        with pytest.raises(restriction.RestrictionError, match="is deleted"):
            await restriction.request_restriction(conn, vault, account_id)
