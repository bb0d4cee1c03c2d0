"""`POST /webhooks/clerk` (SVX-1…6): Svix signatures, redeliveries, order, tombstones and
the erasure that `user.deleted` starts. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from image_router.account.personal_data import Vault
from image_router.legal.documents import load_documents
from tests.conftest import Gateway
from tests.fakes.clerk import (
    FakeClerk,
    clerk_gateway,
    clerk_user,
    svix_headers,
    svix_signature,
    user_event,
)

OLD_SECRET = "whsec_" + "b2xkLXNlY3JldC1vbGQtc2VjcmV0LW9sZC1zZWNyZXQ="


@pytest.fixture
def fake() -> FakeClerk:
    return FakeClerk()


@pytest.fixture
async def gw(any_db_url: str, tmp_path: Path, fake: FakeClerk) -> AsyncIterator[Gateway]:
    # Background jobs wait for `res.jobs.run_due` in the test, so states are not racing them.
    async with clerk_gateway(any_db_url, tmp_path / "data", fake, jobs_interval_s=3600) as gateway:
        yield gateway


def _sub() -> str:
    return f"user_{uuid.uuid4().hex[:24]}"


async def send(
    gw: Gateway, body: bytes, headers: dict[str, str] | None = None, **sign: Any
) -> httpx.Response:
    return await gw.client.post(
        "/webhooks/clerk", content=body, headers=headers or svix_headers(body, **sign)
    )


async def profile(gw: Gateway, subject: str) -> dict[str, Any] | None:
    """The mirrored account of a Clerk user, personal data opened, or None."""
    vault: Vault = gw.res.vault
    rows = await gw.rows(
        "SELECT id, status, email_enc, name_enc FROM accounts WHERE auth_subject_hmac = :h",
        h=vault.subject_index(subject),
    )
    if not rows:
        return None
    assert len(rows) == 1
    row = rows[0]
    return {
        "id": row["id"],
        "status": row["status"],
        "email": await vault.open(row["id"], row["email_enc"]),
        "name": await vault.open(row["id"], row["name_enc"]),
    }


async def messages(gw: Gateway) -> int:
    return len(await gw.rows("SELECT message_id FROM webhook_messages"))


# ------------------------------------------------------------------------ signatures (SVX-1)


async def test_a_signed_user_created_mirrors_the_user(gw: Gateway) -> None:
    sub = _sub()
    body = user_event("user.created", clerk_user(sub, email="new@example.com"))

    response = await send(gw, body)

    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "outcome": "created"}
    account = await profile(gw, sub)
    assert account is not None
    assert (account["status"], account["email"], account["name"]) == (
        "active",
        "new@example.com",
        "Ada Lovelace",
    )


def _tampered(body: bytes) -> tuple[bytes, dict[str, str]]:
    headers = svix_headers(body)
    return body.replace(b"Ada", b"Eve"), headers


def _shifted(seconds: int) -> Any:
    def make(body: bytes) -> tuple[bytes, dict[str, str]]:
        return body, svix_headers(body, timestamp=int(time.time()) + seconds)

    return make


def _without(name: str) -> Any:
    def make(body: bytes) -> tuple[bytes, dict[str, str]]:
        headers = svix_headers(body)
        del headers[name]
        return body, headers

    return make


def _signature(value: str) -> Any:
    def make(body: bytes) -> tuple[bytes, dict[str, str]]:
        return body, svix_headers(body) | {"svix-signature": value}

    return make


def _other_secret(body: bytes) -> tuple[bytes, dict[str, str]]:
    return body, svix_headers(body, OLD_SECRET)


def _not_utf8(body: bytes) -> tuple[bytes, dict[str, str]]:
    bad = body + b"\xff"
    return bad, svix_headers(bad)


REFUSED = {
    "tampered body": _tampered,
    "400 s old": _shifted(-400),
    "400 s ahead": _shifted(400),
    "no svix-id": _without("svix-id"),
    "no svix-timestamp": _without("svix-timestamp"),
    "no svix-signature": _without("svix-signature"),
    "v1,bogus": _signature("v1,bogus"),
    "no comma": _signature("v1bogus"),
    "empty signature": _signature(""),
    "v2 only": _signature("v2," + "A" * 44),
    "another secret": _other_secret,
    "not utf-8": _not_utf8,
}


@pytest.mark.parametrize("make", REFUSED.values(), ids=REFUSED.keys())
async def test_every_bad_signature_is_a_400_and_changes_nothing(gw: Gateway, make: Any) -> None:
    sub = _sub()
    body, headers = make(user_event("user.created", clerk_user(sub)))

    response = await send(gw, body, headers)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_signature"
    assert await profile(gw, sub) is None and await messages(gw) == 0


async def test_webhook_style_headers_are_accepted_too(gw: Gateway) -> None:
    sub = _sub()
    body = user_event("user.created", clerk_user(sub))
    headers = {k.replace("svix-", "webhook-"): v for k, v in svix_headers(body).items()}
    assert (await send(gw, body, headers)).status_code == 200
    assert await profile(gw, sub) is not None


async def test_during_secret_rotation_any_listed_signature_may_match(gw: Gateway) -> None:
    sub = _sub()
    body = user_event("user.created", clerk_user(sub))
    headers = svix_headers(body)
    old = svix_signature(OLD_SECRET, headers["svix-id"], int(headers["svix-timestamp"]), body)
    headers["svix-signature"] = f"{old} {headers['svix-signature']}"

    assert (await send(gw, body, headers)).status_code == 200
    assert await profile(gw, sub) is not None


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"type": "user.created"}'])
async def test_a_signed_body_that_is_no_clerk_event_is_a_400(gw: Gateway, body: bytes) -> None:
    response = await send(gw, body)
    assert response.status_code == 400
    assert await messages(gw) == 0


async def test_a_huge_body_is_refused_before_anything_else(gw: Gateway) -> None:
    body = b"{" + b" " * (1024 * 1024 + 1) + b"}"
    assert (await send(gw, body)).status_code == 413


async def test_clerks_legal_acceptance_is_recorded_with_the_terms_in_force(gw: Gateway) -> None:
    sub = _sub()
    user = clerk_user(sub, legal_accepted_at=1_760_000_000_000)
    await send(gw, user_event("user.created", user))

    consents = await gw.rows("SELECT purpose, granted, source, document_version FROM consents")
    terms = load_documents(gw.res.settings.legal.legal_dir).terms.version
    assert consents == [
        {"purpose": "terms", "granted": True, "source": "clerk", "document_version": terms}
    ]


# ------------------------------------------------------------------------ idempotency (SVX-2)


async def test_a_redelivered_message_has_one_effect(gw: Gateway) -> None:
    sub = _sub()
    first = user_event("user.updated", clerk_user(sub, first_name="First", updated_at=1000))
    later = user_event("user.updated", clerk_user(sub, first_name="Later", updated_at=2000))

    one = await send(gw, first, msg_id="msg_same")
    two = await send(gw, later, msg_id="msg_same")  # same svix-id: a redelivery

    assert (one.status_code, two.status_code) == (200, 200)
    assert two.json()["outcome"] == "duplicate: already processed"
    assert (await profile(gw, sub) or {})["name"] == "First Lovelace"
    assert await messages(gw) == 1


# ------------------------------------------------------------------------ order (SVX-3)


async def test_an_update_arriving_before_the_creation(gw: Gateway) -> None:
    sub = _sub()
    updated = user_event("user.updated", clerk_user(sub, email="new@example.com", updated_at=2))
    created = user_event("user.created", clerk_user(sub, email="old@example.com", updated_at=1))

    assert (await send(gw, updated)).json()["outcome"] == "created"
    assert (await send(gw, created)).json()["outcome"] == "stale"
    assert (await profile(gw, sub) or {})["email"] == "new@example.com"


async def test_a_stale_update_is_ignored(gw: Gateway) -> None:
    sub = _sub()
    await send(gw, user_event("user.created", clerk_user(sub, first_name="Now", updated_at=5)))
    stale = user_event("user.updated", clerk_user(sub, first_name="Then", updated_at=4))
    assert (await send(gw, stale)).json()["outcome"] == "stale"
    assert (await profile(gw, sub) or {})["name"] == "Now Lovelace"


# ------------------------------------------------------------------------ deletion (SVX-3, SVX-5)


async def test_user_deleted_erases_the_account_without_calling_clerk_back(
    gw: Gateway, fake: FakeClerk
) -> None:
    sub = _sub()
    fake.add_user(sub)
    await send(gw, user_event("user.created", clerk_user(sub)))
    account_id = (await profile(gw, sub) or {})["id"]
    _, key = await gw.account()
    await gw.execute("UPDATE api_keys SET account_id = :a", a=account_id)

    deleted = await send(
        gw, user_event("user.deleted", {"id": sub, "object": "user", "deleted": True})
    )

    assert deleted.status_code == 200
    assert deleted.json()["outcome"].startswith("erasure queued")
    assert (await profile(gw, sub) or {})["status"] == "deletion_pending"
    assert (
        await gw.client.post("/v1/auth/test", headers={"authorization": f"Bearer {key}"})
    ).status_code == 401
    jobs = await gw.rows("SELECT kind, payload FROM jobs WHERE account_id = :a", a=account_id)
    assert [j["kind"] for j in jobs] == ["erasure"]
    payload = jobs[0]["payload"]
    payload = json.loads(payload) if isinstance(payload, str) else payload
    assert payload["delete_clerk_user"] is False
    requests = await gw.rows("SELECT type, channel FROM data_subject_requests")
    assert requests == [{"type": "erasure", "channel": "clerk"}]
    assert not [r for r in fake.requests if r.method == "DELETE"]


async def test_an_update_after_the_deletion_is_ignored(gw: Gateway) -> None:
    sub = _sub()
    await send(gw, user_event("user.created", clerk_user(sub, first_name="Gone", updated_at=1)))
    await send(gw, user_event("user.deleted", {"id": sub, "deleted": True}))

    late = await send(
        gw, user_event("user.updated", clerk_user(sub, first_name="Back", updated_at=9))
    )
    again = await send(gw, user_event("user.deleted", {"id": sub, "deleted": True}))

    assert late.json()["outcome"] == "ignored: account deleted"
    assert again.json()["outcome"] == "ignored: account already deleted"
    account = await profile(gw, sub)
    assert account is not None and account["status"] == "deletion_pending"
    assert account["name"] == "Gone Lovelace"


async def test_a_deletion_before_the_creation_keeps_the_user_out(
    gw: Gateway, fake: FakeClerk
) -> None:
    sub = _sub()
    await send(gw, user_event("user.deleted", {"id": sub, "deleted": True}))
    created = await send(gw, user_event("user.created", clerk_user(sub)))

    assert created.json()["outcome"] == "ignored: account deleted"
    account = await profile(gw, sub)
    assert account is not None and account["status"] == "deleted" and account["email"] is None
    # Nor can the person sign in with a token minted before the deletion reached us.
    token = fake.mint(sub)
    response = await gw.client.get("/v1/account", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 401


async def test_after_the_erasure_job_only_the_tombstone_remains(
    gw: Gateway, fake: FakeClerk
) -> None:
    sub = _sub()
    fake.add_user(sub)
    await send(gw, user_event("user.created", clerk_user(sub, email="gone@example.com")))
    await send(gw, user_event("user.deleted", {"id": sub, "deleted": True}))

    assert await gw.res.jobs.run_due() == 1

    rows = await gw.rows("SELECT status, auth_subject, email_enc, email_bidx FROM accounts")
    assert rows == [
        {"status": "deleted", "auth_subject": None, "email_enc": None, "email_bidx": None}
    ]
    late = user_event("user.updated", clerk_user(sub, email="back@example.com", updated_at=9**9))
    assert (await send(gw, late)).json()["outcome"] == "ignored: account deleted"
    token = fake.mint(sub)
    response = await gw.client.get("/v1/account", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert len(await gw.rows("SELECT id FROM accounts")) == 1
    assert not [r for r in fake.requests if r.method == "DELETE"]  # Clerk deleted it itself


# ------------------------------------------------------------------------ other events (SVX-6)


async def test_unknown_event_types_are_acknowledged(gw: Gateway) -> None:
    body = user_event("session.created", {"id": "sess_1", "user_id": _sub()})
    response = await send(gw, body)
    assert response.status_code == 200
    assert response.json()["outcome"] == "ignored: session.created is not handled"
    assert await gw.rows("SELECT id FROM accounts") == []
