"""The account API: view, rectify, preferences with consent proof, restriction, usage list
(privacy-payments.md DSR-1, DSR-3, DSR-4, DSR-5)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.legal.documents import load_documents
from tests.conftest import Gateway
from tests.integration.web_helpers import sign_in, sign_up

IMAGE = "/v1/openai/images/generations"
DALLE2 = {"model": "openai/dall-e-2", "size": "1024x1024"}


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def signed_in_browser(gateway: Gateway, email: str) -> tuple[str, dict[str, str]]:
    """Sign `gateway.client` up as `email`; returns (account id, the CSRF header)."""
    assert (await sign_up(gateway.client, email)).status_code == 303
    page = await gateway.client.get("/account")
    csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    account_id = (await gateway.client.get("/v1/account")).json()["id"]
    return account_id, {"X-CSRF-Token": csrf}


async def consents(gateway: Gateway, account_id: str) -> list[dict[str, Any]]:
    return await gateway.rows(
        "SELECT purpose, granted, document_version, source FROM consents "
        "WHERE account_id = :a ORDER BY id",
        a=account_id,
    )


async def test_the_account_shows_profile_balance_choices_and_legal_state(
    gateway: Gateway,
) -> None:
    account_id, key = await gateway.account("2.5", email="Viewer@Example.com")

    response = await gateway.client.get("/v1/account", headers=auth(key))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == account_id
    assert body["email"] == "viewer@example.com"
    assert body["name"] is None
    assert body["status"] == "active" and body["role"] == "user"
    assert body["auth_provider"] == "local"
    assert body["balance"] == {"usd": "2.5000", "credits": 25_000}
    assert body["preferences"] == {
        "store_prompts": True,
        "allow_routing_improvement": True,
        "marketing_emails": False,
    }
    assert body["restriction"]["restricted"] is False
    assert set(body["legal"]) == {
        "terms_version_accepted",
        "terms_accepted_at",
        "privacy_version_notified",
    }
    assert body["created_at"].endswith("Z")


async def test_the_account_needs_a_session_or_a_key(gateway: Gateway) -> None:
    response = await gateway.client.get("/v1/account")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "sign_in_required"


async def test_a_signed_in_browser_reads_and_changes_its_own_account(gateway: Gateway) -> None:
    await sign_up(gateway.client, "browser@example.com")
    page = await gateway.client.get("/account")
    csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]

    seen = await gateway.client.get("/v1/account")
    refused = await gateway.client.patch("/v1/account/preferences", json={"store_prompts": False})
    changed = await gateway.client.patch(
        "/v1/account/preferences", json={"store_prompts": False}, headers={"X-CSRF-Token": csrf}
    )

    assert seen.json()["email"] == "browser@example.com"
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    assert changed.status_code == 200 and changed.json()["store_prompts"] is False


async def test_rectifying_name_and_email_reseals_them_and_moves_the_sign_in(
    any_gateway: Gateway,
) -> None:
    account_id, csrf = await signed_in_browser(any_gateway, "old@example.com")

    response = await any_gateway.client.patch(
        "/v1/account",
        json={"name": "  Ada Lovelace ", "email": " New@Example.COM "},
        headers=csrf,
    )

    assert response.status_code == 200, response.text
    assert response.json()["email"] == "new@example.com"
    assert response.json()["name"] == "Ada Lovelace"
    raw = (await any_gateway.rows("SELECT * FROM accounts WHERE id = :a", a=account_id))[0]
    assert b"new@example.com" not in raw["email_enc"] and b"Ada" not in raw["name_enc"]
    async with unit_of_work(any_gateway.res.engine) as conn:
        assert await accounts.find_account_id(conn, any_gateway.res.vault, "new@example.com") == (
            account_id
        )
        assert (
            await accounts.find_account_id(conn, any_gateway.res.vault, "old@example.com") is None
        )
    requests = await any_gateway.rows(
        "SELECT type, status FROM data_subject_requests WHERE account_id = :a", a=account_id
    )
    assert requests == [{"type": "rectification", "status": "completed"}]

    fresh = httpx.AsyncClient(
        transport=any_gateway.client._transport, base_url="http://any_gateway.test"
    )
    async with fresh:
        assert (await sign_in(fresh, "old@example.com")).status_code == 401
        assert (await sign_in(fresh, "new@example.com")).status_code == 303


async def test_clearing_the_name(gateway: Gateway) -> None:
    _, key = await gateway.account()
    await gateway.client.patch("/v1/account", json={"name": "Temp"}, headers=auth(key))

    response = await gateway.client.patch("/v1/account", json={"name": ""}, headers=auth(key))

    assert response.status_code == 200 and response.json()["name"] is None


async def test_an_email_of_another_account_is_refused_with_409(gateway: Gateway) -> None:
    await gateway.account(email="taken@example.com")
    _, csrf = await signed_in_browser(gateway, "mine@example.com")

    response = await gateway.client.patch(
        "/v1/account", json={"email": "TAKEN@example.com"}, headers=csrf
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "email_taken"
    assert (await gateway.client.get("/v1/account")).json()["email"] == "mine@example.com"


async def test_an_api_key_or_an_old_sign_in_cannot_change_the_email(gateway: Gateway) -> None:
    account_id, csrf = await signed_in_browser(gateway, "kept@example.com")
    async with unit_of_work(gateway.res.engine) as conn:
        _, key = await accounts.create_key(conn, account_id, "leaked")

    by_key = await gateway.client.patch(
        "/v1/account", json={"email": "thief@example.com"}, headers=auth(key)
    )
    name_by_key = await gateway.client.patch(
        "/v1/account", json={"name": "Renamed"}, headers=auth(key)
    )
    await gateway.execute(
        "UPDATE web_sessions SET reauthenticated_at = :t WHERE account_id = :a",
        t=utcnow() - timedelta(minutes=11),
        a=account_id,
    )
    stale = await gateway.client.patch(
        "/v1/account", json={"email": "thief@example.com"}, headers=csrf
    )

    assert by_key.status_code == 403
    assert by_key.json()["error"]["code"] == "session_required"
    assert name_by_key.status_code == 200 and name_by_key.json()["name"] == "Renamed"
    assert stale.status_code == 403
    assert stale.json()["error"]["code"] == "reverification_required"
    assert (await gateway.client.get("/v1/account")).json()["email"] == "kept@example.com"


async def test_bad_rectification_bodies_are_400_with_an_openai_style_error(
    gateway: Gateway,
) -> None:
    _, csrf = await signed_in_browser(gateway, "bad-bodies@example.com")
    cases: list[tuple[Any, str | None]] = [
        ({"email": "not an address"}, "email"),
        ({"display_name": "x"}, "display_name"),
        ({"name": 5}, "name"),
        ({"name": "x" * 201}, None),
        ({}, None),
        ([1, 2], None),
    ]
    for body, param in cases:
        response = await gateway.client.patch("/v1/account", json=body, headers=csrf)
        assert response.status_code == 400, (body, response.text)
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"], body
        assert error["param"] == param, body
    garbage = await gateway.client.patch(
        "/v1/account", content=b"{not json", headers=csrf | {"content-type": "text/plain"}
    )
    assert garbage.status_code == 400


async def test_name_and_email_of_a_clerk_account_are_changed_in_clerk(gateway: Gateway) -> None:
    account_id, key = await gateway.account(email="clerk-user@example.com")
    await gateway.execute(
        "UPDATE accounts SET auth_provider = 'clerk', auth_subject = 'user_1' WHERE id = :a",
        a=account_id,
    )

    response = await gateway.client.patch("/v1/account", json={"name": "X"}, headers=auth(key))

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "managed_by_identity_provider"
    assert "Clerk" in error["message"]


async def test_preferences_change_and_each_change_leaves_a_consent_row(
    any_gateway: Gateway,
) -> None:
    account_id, key = await any_gateway.account()
    version = load_documents().privacy.version  # the shipped policy, as the any_gateway's

    first = await any_gateway.client.patch(
        "/v1/account/preferences",
        json={"store_prompts": False, "marketing_emails": True},
        headers=auth(key),
    )
    again = await any_gateway.client.patch(
        "/v1/account/preferences", json={"store_prompts": False}, headers=auth(key)
    )
    back = await any_gateway.client.patch(
        "/v1/account/preferences",
        json={"store_prompts": True, "allow_routing_improvement": False},
        headers=auth(key),
    )
    read = await any_gateway.client.get("/v1/account/preferences", headers=auth(key))

    assert first.json() == {
        "store_prompts": False,
        "allow_routing_improvement": True,
        "marketing_emails": True,
    }
    assert again.status_code == 200
    assert (
        read.json()
        == back.json()
        == {
            "store_prompts": True,
            "allow_routing_improvement": False,
            "marketing_emails": True,
        }
    )
    rows = await consents(any_gateway, account_id)
    assert [(r["purpose"], bool(r["granted"])) for r in rows] == [
        ("store_prompts", False),
        ("marketing_emails", True),
        ("store_prompts", True),
        ("routing_improvement", False),
    ]
    assert {r["source"] for r in rows} == {"api"}
    assert {r["document_version"] for r in rows} == {version}


async def test_unknown_or_non_boolean_preferences_are_refused_and_change_nothing(
    gateway: Gateway,
) -> None:
    account_id, key = await gateway.account()
    for body, param in (
        ({"store_prompts": False, "sell_my_data": True}, "sell_my_data"),
        ({"store_prompts": "no"}, "store_prompts"),
        ({"marketing_emails": 1}, "marketing_emails"),
    ):
        response = await gateway.client.patch(
            "/v1/account/preferences", json=body, headers=auth(key)
        )
        assert response.status_code == 400, body
        assert response.json()["error"]["param"] == param
    empty = await gateway.client.patch("/v1/account/preferences", json={}, headers=auth(key))
    assert empty.status_code == 400
    assert (await gateway.client.get("/v1/account/preferences", headers=auth(key))).json()[
        "store_prompts"
    ] is True
    assert await consents(gateway, account_id) == []


async def test_restriction_stops_generation_and_only_an_operator_lifts_it(
    any_gateway: Gateway,
) -> None:
    account_id, key = await any_gateway.account("1")

    asked = await any_gateway.client.post(
        "/v1/account/restriction",
        json={"restricted": True, "reason": "my data is wrong"},
        headers=auth(key),
    )
    again = await any_gateway.client.post(
        "/v1/account/restriction", json={"restricted": True}, headers=auth(key)
    )
    lift = await any_gateway.client.post(
        "/v1/account/restriction", json={"restricted": False}, headers=auth(key)
    )
    generated = await any_gateway.post(IMAGE, key, json={**DALLE2, "prompt": "a lighthouse"})
    shown = (await any_gateway.client.get("/v1/account", headers=auth(key))).json()

    assert asked.status_code == 201, asked.text
    assert asked.json()["restricted"] is True and asked.json()["changed"] is True
    assert again.status_code == 200 and again.json()["changed"] is False
    assert lift.status_code == 403
    assert lift.json()["error"]["code"] == "operator_only"
    assert "operator" in lift.json()["error"]["message"]
    assert generated.status_code == 403
    assert generated.json()["error"]["code"] == "account_restricted"
    assert shown["restriction"]["restricted"] is True
    assert shown["restriction"]["reason"] == "my data is wrong"
    requests = await any_gateway.rows(
        "SELECT type, channel FROM data_subject_requests WHERE account_id = :a", a=account_id
    )
    assert requests == [{"type": "restriction", "channel": "api"}]


async def test_a_restriction_request_needs_restricted_true(gateway: Gateway) -> None:
    _, key = await gateway.account()
    for body in ({}, {"restricted": "yes"}, {"restricted": True, "reason": 3}, {"why": 1}):
        response = await gateway.client.post(
            "/v1/account/restriction", json=body, headers=auth(key)
        )
        assert response.status_code == 400, body


async def test_usage_is_paged_newest_first_with_prompts_and_costs(any_gateway: Gateway) -> None:
    account_id, key = await any_gateway.account("5")
    _, other_key = await any_gateway.account("1")
    for prompt in ("first kite", "second kite", "third kite"):
        done = await any_gateway.post(IMAGE, key, json={**DALLE2, "prompt": prompt})
        assert done.status_code == 200, done.text
    await any_gateway.post(IMAGE, other_key, json={**DALLE2, "prompt": "someone else"})

    first = await any_gateway.client.get("/v1/account/usage?limit=2", headers=auth(key))
    cursor = first.json()["next_before"]
    second = await any_gateway.client.get(
        f"/v1/account/usage?limit=2&before={cursor}", headers=auth(key)
    )

    page_one, page_two = first.json(), second.json()
    assert [r["prompt"] for r in page_one["data"]] == ["third kite", "second kite"]
    assert page_one["has_more"] is True
    assert [r["prompt"] for r in page_two["data"]] == ["first kite"]
    assert page_two["has_more"] is False and page_two["next_before"] is None
    row = page_one["data"][0]
    assert row["status"] == "success" and row["model"] == "openai/dall-e-2"
    spent = 5 * 10_000 - await any_gateway.balance(account_id)
    assert Decimal(row["cost"]) * 3 * 10_000 == spent > 0
    assert row["prompt_stored"] is True
    assert row["output_urls"]


async def test_usage_before_a_time_and_bad_paging_parameters(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    await gateway.post(IMAGE, key, json={**DALLE2, "prompt": "a kite"})

    past = await gateway.client.get(
        "/v1/account/usage?before=2000-01-01T00:00:00Z", headers=auth(key)
    )
    assert past.status_code == 200 and past.json()["data"] == []
    for query, param in (
        ("limit=0", "limit"),
        ("limit=500", "limit"),
        ("limit=ten", "limit"),
        ("before=no-such-row", "before"),
    ):
        response = await gateway.client.get(f"/v1/account/usage?{query}", headers=auth(key))
        assert response.status_code == 400, query
        assert response.json()["error"]["param"] == param
