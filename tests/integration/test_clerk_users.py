"""The Clerk user mirror on SQLite and PostgreSQL: sealing, minimisation, ordering,
tombstones, just-in-time accounts and their race (CLK-7, SVX-2…4, LEG-4)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account import clerk_users
from image_router.account import service as accounts
from image_router.account.clerk import ClerkBackend
from image_router.account.clerk_users import MirrorPolicy, profile_from_user
from image_router.account.personal_data import Vault
from image_router.db.session import make_engine, unit_of_work
from image_router.db.tables import Account, Consent, WebhookMessage
from tests.conftest import vault_for_tests
from tests.fakes.clerk import SECRET_KEY, FakeClerk, clerk_user

POLICY = MirrorPolicy()
SENTINELS = (
    "+15555550123",
    "secondary-address@example.net",
    "external-account@example.org",
    "private-metadata-sentinel",
    "unsafe-metadata-sentinel",
)


@dataclass
class Mirror:
    engine: AsyncEngine
    vault: Vault
    clerk: FakeClerk
    backend: ClerkBackend

    async def apply(self, user: dict[str, Any], policy: MirrorPolicy = POLICY) -> str:
        async with unit_of_work(self.engine) as conn:
            return (
                await clerk_users.apply_profile(conn, self.vault, profile_from_user(user), policy)
            ).outcome

    async def account(self, subject: str) -> dict[str, Any]:
        """The account row of a Clerk user with its sealed fields opened."""
        async with unit_of_work(self.engine) as conn:
            row = (
                await conn.execute(
                    select(Account).where(
                        Account.auth_subject_hmac == self.vault.subject_index(subject)
                    )
                )
            ).one()
            opened = dict(row._mapping)
            for name in ("email_enc", "name_enc", "image_url_enc"):
                opened[name.removesuffix("_enc")] = await self.vault.open(
                    row.id, getattr(row, name)
                )
            return opened

    async def count(self, subject: str) -> int:
        async with unit_of_work(self.engine) as conn:
            found = await conn.scalar(
                select(text("count(*)"))
                .select_from(Account)
                .where(Account.auth_subject_hmac == self.vault.subject_index(subject))
            )
            return int(found or 0)

    async def jit(self, subject: str, *, backend: bool = True) -> str | None:
        return await clerk_users.account_for_session(
            self.engine, self.vault, self.backend if backend else None, subject, POLICY
        )


@pytest.fixture
async def mirror(any_db_url: str, tmp_path: Path) -> AsyncIterator[Mirror]:
    engine = make_engine(any_db_url)
    fake = FakeClerk()
    vault = vault_for_tests(tmp_path)
    async with fake.client("http://clerk.test") as http:
        backend = ClerkBackend(http, secret_key=SECRET_KEY, api_url="http://clerk.test")
        yield Mirror(engine, vault, fake, backend)
    await vault.close()
    await engine.dispose()


def _sub() -> str:
    return f"user_{uuid.uuid4().hex[:24]}"


# ------------------------------------------------------------------ what is kept (SVX-4)


async def test_a_new_user_is_mirrored_sealed_with_only_the_minimal_fields(mirror: Mirror) -> None:
    sub = _sub()
    user = clerk_user(sub, email="Ada@Example.com", first_name="Ada", last_name="Lovelace")

    assert await mirror.apply(user) == "created"

    account = await mirror.account(sub)
    assert account["auth_provider"] == "clerk" and account["auth_subject"] == sub
    assert account["status"] == "active"
    assert account["email"] == "ada@example.com"  # the primary address, not the first one
    assert account["name"] == "Ada Lovelace"
    assert account["image_url"] == f"https://img.clerk.test/{sub}.png"
    assert account["auth_updated_at_ms"] == user["updated_at"]
    assert account["email_bidx"] == mirror.vault.email_index("ada@example.com")
    async with unit_of_work(mirror.engine) as conn:
        assert (
            await accounts.find_account_id(conn, mirror.vault, "ADA@example.com") == account["id"]
        )
    dump = await _dump(mirror.engine)
    assert "ada@example.com" not in dump and "Lovelace" not in dump  # only sealed
    for sentinel in SENTINELS:
        assert sentinel not in dump


async def _dump(engine: AsyncEngine) -> str:
    """Every value of every row of the tables a Clerk user touches, as text."""
    async with unit_of_work(engine) as conn:
        parts = []
        for table in ("accounts", "consents", "webhook_messages"):
            for row in (await conn.execute(text(f"SELECT * FROM {table}"))).all():
                parts.extend(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in row)
        return "\n".join(parts)


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [("Ada", None, "Ada"), (None, "Lovelace", "Lovelace"), (None, None, None), (" ", "", None)],
)
async def test_the_name_joins_whatever_parts_exist(
    mirror: Mirror, first: str | None, last: str | None, expected: str | None
) -> None:
    sub = _sub()
    await mirror.apply(clerk_user(sub, first_name=first, last_name=last))
    assert (await mirror.account(sub))["name"] == expected


async def test_a_user_without_a_primary_email_has_none(mirror: Mirror) -> None:
    sub = _sub()
    await mirror.apply(clerk_user(sub, primary_email_address_id=None))
    account = await mirror.account(sub)
    assert account["email"] is None and account["email_bidx"] is None


async def test_an_email_held_by_another_account_is_not_merged(mirror: Mirror) -> None:
    async with unit_of_work(mirror.engine) as conn:
        local = await accounts.create_account(conn, mirror.vault, "shared@example.com")
    sub = _sub()

    assert await mirror.apply(clerk_user(sub, email="shared@example.com")) == "created"

    account = await mirror.account(sub)
    assert account["id"] != local.id and account["email"] == "shared@example.com"
    assert account["email_bidx"] is None
    async with unit_of_work(mirror.engine) as conn:
        assert await accounts.find_account_id(conn, mirror.vault, "shared@example.com") == local.id


# ------------------------------------------------------------------ ordering (SVX-3)


async def test_updates_apply_only_when_newer(mirror: Mirror) -> None:
    sub = _sub()
    await mirror.apply(clerk_user(sub, first_name="One", updated_at=1000))

    assert await mirror.apply(clerk_user(sub, first_name="Two", updated_at=2000)) == "updated"
    assert await mirror.apply(clerk_user(sub, first_name="Old", updated_at=1500)) == "stale"
    assert await mirror.apply(clerk_user(sub, first_name="Same", updated_at=2000)) == "stale"

    account = await mirror.account(sub)
    assert account["name"] == "Two Lovelace" and account["auth_updated_at_ms"] == 2000


async def test_an_update_before_the_creation_wins(mirror: Mirror) -> None:
    sub = _sub()
    assert (
        await mirror.apply(clerk_user(sub, email="new@example.com", updated_at=2000)) == "created"
    )
    assert await mirror.apply(clerk_user(sub, email="old@example.com", updated_at=1000)) == "stale"
    assert (await mirror.account(sub))["email"] == "new@example.com"
    assert await mirror.count(sub) == 1


async def test_a_changed_email_moves_the_blind_index(mirror: Mirror) -> None:
    sub = _sub()
    await mirror.apply(clerk_user(sub, email="before@example.com", updated_at=1000))
    await mirror.apply(clerk_user(sub, email="after@example.com", updated_at=2000))
    async with unit_of_work(mirror.engine) as conn:
        assert await accounts.find_account_id(conn, mirror.vault, "before@example.com") is None
        assert await accounts.find_account_id(conn, mirror.vault, "after@example.com") is not None


# ------------------------------------------------------------------ tombstones (SVX-3)


@pytest.mark.parametrize("status", ["deletion_pending", "deleted"])
async def test_a_deleted_account_is_never_changed_or_recreated(mirror: Mirror, status: str) -> None:
    sub = _sub()
    await mirror.apply(clerk_user(sub, first_name="Kept", updated_at=1000))
    await _erase(mirror, sub, status)

    assert await mirror.apply(clerk_user(sub, first_name="Late", updated_at=9000)) == (
        "ignored: account deleted"
    )
    assert await mirror.jit(sub) is None
    assert await mirror.count(sub) == 1
    account = await mirror.account(sub)
    assert account["status"] == status and account["auth_updated_at_ms"] == 1000


async def _erase(mirror: Mirror, subject: str, status: str) -> None:
    """What erasure leaves: the status, and (once done) no subject, only its HMAC."""
    async with unit_of_work(mirror.engine) as conn:
        values: dict[str, Any] = {"status": status}
        if status == "deleted":
            values |= {"auth_subject": None, "email_enc": None, "email_bidx": None}
        await conn.execute(
            update(Account)
            .where(Account.auth_subject_hmac == mirror.vault.subject_index(subject))
            .values(**values)
        )


async def test_a_deletion_of_an_unseen_user_keeps_a_late_creation_out(mirror: Mirror) -> None:
    sub = _sub()
    async with unit_of_work(mirror.engine) as conn:
        assert await clerk_users.erasure_target(conn, mirror.vault, sub) is None

    assert await mirror.apply(clerk_user(sub)) == "ignored: account deleted"
    account = await mirror.account(sub)
    assert account["status"] == "deleted" and account["auth_subject"] is None
    assert account["email"] is None and await mirror.count(sub) == 1


async def test_erasure_target_is_the_live_account_once(mirror: Mirror) -> None:
    sub = _sub()
    await mirror.apply(clerk_user(sub))
    account_id = (await mirror.account(sub))["id"]
    async with unit_of_work(mirror.engine) as conn:
        assert await clerk_users.erasure_target(conn, mirror.vault, sub) == account_id
    await _erase(mirror, sub, "deletion_pending")
    async with unit_of_work(mirror.engine) as conn:
        assert await clerk_users.erasure_target(conn, mirror.vault, sub) is None


# ------------------------------------------------------------------ dedup (SVX-2)


async def test_a_message_is_claimed_once(mirror: Mirror) -> None:
    async with unit_of_work(mirror.engine) as conn:
        assert await clerk_users.claim_message(conn, "msg_1", "user.created") is True
        assert await clerk_users.claim_message(conn, "msg_1", "user.created") is False
    async with unit_of_work(mirror.engine) as conn:
        rows = (await conn.execute(select(WebhookMessage.source, WebhookMessage.type))).all()
    assert [tuple(r) for r in rows] == [("clerk", "user.created")]


# ------------------------------------------------------------------ consent (LEG-4)


async def test_clerks_legal_acceptance_is_recorded_once(mirror: Mirror) -> None:
    sub = _sub()
    accepted = 1_760_000_000_000
    policy = MirrorPolicy(terms_version="2026-01")
    await mirror.apply(clerk_user(sub, legal_accepted_at=accepted, updated_at=1), policy)
    await mirror.apply(clerk_user(sub, legal_accepted_at=accepted, updated_at=2), policy)

    account = await mirror.account(sub)
    async with unit_of_work(mirror.engine) as conn:
        rows = (
            await conn.execute(select(Consent).where(Consent.account_id == account["id"]))
        ).all()
    assert [(r.purpose, r.granted, r.source, r.document_version) for r in rows] == [
        ("terms", True, "clerk", "2026-01")
    ]
    assert rows[0].created_at == datetime.fromtimestamp(accepted / 1000, rows[0].created_at.tzinfo)
    assert account["terms_version_accepted"] == "2026-01"


async def test_no_legal_acceptance_no_consent_row(mirror: Mirror) -> None:
    sub = _sub()
    await mirror.apply(clerk_user(sub))
    async with unit_of_work(mirror.engine) as conn:
        assert await conn.scalar(select(text("count(*)")).select_from(Consent)) == 0


# ------------------------------------------------------------------ just in time (CLK-7)


async def test_first_sign_in_creates_the_account_from_the_backend_api(mirror: Mirror) -> None:
    user = mirror.clerk.add_user(_sub(), email="jit@example.com")

    account_id = await mirror.jit(user["id"])

    account = await mirror.account(user["id"])
    assert account["id"] == account_id and account["email"] == "jit@example.com"
    assert [(r.method, r.path) for r in mirror.clerk.requests] == [
        ("GET", f"/v1/users/{user['id']}")
    ]
    assert await mirror.jit(user["id"]) == account_id
    assert len(mirror.clerk.requests) == 1  # known now: no more calls to Clerk


async def test_without_a_secret_key_the_account_comes_from_the_token_alone(mirror: Mirror) -> None:
    sub = _sub()
    account_id = await mirror.jit(sub, backend=False)
    account = await mirror.account(sub)
    assert account["id"] == account_id and account["email"] is None
    assert account["auth_updated_at_ms"] is None
    # The webhook then fills in the profile.
    assert await mirror.apply(clerk_user(sub, email="later@example.com")) == "updated"
    assert (await mirror.account(sub))["email"] == "later@example.com"


async def test_a_user_clerk_does_not_know_gets_no_account(mirror: Mirror) -> None:
    sub = _sub()
    assert await mirror.jit(sub) is None
    assert await mirror.count(sub) == 0


async def test_clerk_down_does_not_block_the_first_sign_in(mirror: Mirror) -> None:
    user = mirror.clerk.add_user(_sub())
    mirror.clerk.fail_next(503)
    assert await mirror.jit(user["id"]) is not None
    assert (await mirror.account(user["id"]))["email"] is None


async def test_concurrent_first_requests_create_one_account(mirror: Mirror) -> None:
    user = mirror.clerk.add_user(_sub())
    mirror.clerk.delay = 0.05  # every request is inside the race window

    ids = await asyncio.gather(*(mirror.jit(user["id"]) for _ in range(6)))

    assert len(set(ids)) == 1 and ids[0] is not None
    assert await mirror.count(user["id"]) == 1
    assert await mirror.vault.keys.get(ids[0]) is not None  # one key (the store's key)


async def test_a_webhook_racing_the_first_sign_in_makes_one_account(mirror: Mirror) -> None:
    user = mirror.clerk.add_user(_sub(), email="race@example.com")
    mirror.clerk.delay = 0.02

    async def webhook() -> str:
        return await mirror.apply(user)

    results = await asyncio.gather(mirror.jit(user["id"]), webhook(), mirror.jit(user["id"]))

    assert await mirror.count(user["id"]) == 1
    assert results[0] == results[2] == (await mirror.account(user["id"]))["id"]
