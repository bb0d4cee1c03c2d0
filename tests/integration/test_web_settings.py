"""The privacy settings pages: choices, data, restriction, deletion, profile, usage log
(privacy-payments.md §4.3)."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.kit.money import usd_to_credits
from image_router.ledger import service as ledger
from tests.conftest import Gateway
from tests.integration.web_helpers import csrf_of, form_token, sign_in, sign_up

IMAGE = "/v1/openai/images/generations"
EMAIL = "settings@example.com"


async def signed_up(gateway: Gateway, email: str = EMAIL, usd: str = "1") -> tuple[str, str]:
    """Sign up through the forms; returns (account id, an API key of the account)."""
    assert (await sign_up(gateway.client, email)).status_code == 303
    account_id = (await gateway.client.get("/v1/account")).json()["id"]
    async with unit_of_work(gateway.res.engine) as conn:
        _, key = await accounts.create_key(conn, account_id, "settings test")
        await ledger.grant(conn, account_id, usd_to_credits(usd), reason="test")
    return account_id, key


async def generate(gateway: Gateway, key: str, prompt: str, **headers: str) -> str:
    response = await gateway.post(
        IMAGE,
        key,
        json={"model": "openai/dall-e-2", "prompt": prompt, "size": "1024x1024"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    rows = await gateway.rows("SELECT id FROM generations ORDER BY created_at DESC LIMIT 1")
    return str(rows[0]["id"])


def checked(html: str, name: str) -> bool:
    tag = re.search(rf'<input type="checkbox" name="{name}"[^>]*>', html)
    assert tag is not None, f"no checkbox {name}"
    return "checked" in tag.group(0)


async def age_sign_in(gateway: Gateway, account_id: str, minutes: int) -> None:
    await gateway.execute(
        "UPDATE web_sessions SET reauthenticated_at = :t WHERE account_id = :a",
        t=utcnow() - timedelta(minutes=minutes),
        a=account_id,
    )


async def test_the_settings_pages_need_a_sign_in(gateway: Gateway) -> None:
    for path in (
        "/account/privacy",
        "/account/privacy/delete",
        "/account/profile",
        "/usage",
    ):
        response = await gateway.client.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/signin", path


async def test_switching_choices_on_the_page_is_saved_and_recorded(gateway: Gateway) -> None:
    account_id, _ = await signed_up(gateway)
    page = await gateway.client.get("/account/privacy")
    assert checked(page.text, "store_prompts") and not checked(page.text, "marketing_emails")
    assert "Keep your prompts (encrypted)" in page.text

    saved = await gateway.client.post(
        "/account/privacy/preferences",
        data={
            "csrf_token": csrf_of(page.text),
            "allow_routing_improvement": "on",
            "marketing_emails": "on",
        },
    )
    after = await gateway.client.get(saved.headers["location"])

    assert saved.status_code == 303
    assert "Your privacy choices have been saved." in after.text
    assert not checked(after.text, "store_prompts")
    assert checked(after.text, "marketing_emails") and checked(
        after.text, "allow_routing_improvement"
    )
    rows = await gateway.rows(
        "SELECT purpose, granted, source FROM consents WHERE account_id = :a "
        "AND purpose IN ('store_prompts', 'marketing_emails', 'routing_improvement') ORDER BY id",
        a=account_id,
    )
    assert [(r["purpose"], bool(r["granted"]), r["source"]) for r in rows] == [
        ("store_prompts", False, "settings"),
        ("marketing_emails", True, "settings"),
    ]


async def test_a_form_without_the_csrf_token_changes_nothing(gateway: Gateway) -> None:
    _, key = await signed_up(gateway)
    for path, data in (
        ("/account/privacy/preferences", {}),
        ("/account/privacy/restriction", {"reason": "x"}),
        ("/account/privacy/delete", {"confirm": "DELETE MY ACCOUNT"}),
    ):
        response = await gateway.client.post(path, data=data)
        assert response.status_code == 403, path
    account = await gateway.client.get("/v1/account", headers={"Authorization": f"Bearer {key}"})
    assert account.json()["status"] == "active"
    assert account.json()["preferences"]["store_prompts"] is True
    assert account.json()["restriction"]["restricted"] is False


async def test_deleting_the_prompt_history_keeps_the_billing_facts(gateway: Gateway) -> None:
    _, key = await signed_up(gateway)
    await generate(gateway, key, "a secret lighthouse")
    page = await gateway.client.get("/account/privacy")

    deleted = await gateway.client.post(
        "/account/privacy/history/delete", data={"csrf_token": csrf_of(page.text)}
    )

    assert deleted.status_code == 303
    notice = await gateway.client.get(deleted.headers["location"])
    assert "Your prompt history and stored images have been deleted." in notice.text
    row = (await gateway.generations())[0]
    assert row["prompt"] is None and row["output_keys"] == [] and row["output_urls"] == []
    assert row["cost"] > 0 and row["model"] == "openai/dall-e-2"


async def test_requesting_a_restriction_on_the_page_pauses_generation(gateway: Gateway) -> None:
    _, key = await signed_up(gateway)
    page = await gateway.client.get("/account/privacy")

    asked = await gateway.client.post(
        "/account/privacy/restriction",
        data={"csrf_token": csrf_of(page.text), "reason": "I contest my data"},
    )
    after = await gateway.client.get(asked.headers["location"])
    refused = await gateway.post(
        IMAGE, key, json={"model": "openai/dall-e-2", "prompt": "x", "size": "1024x1024"}
    )

    assert "Processing of your account is now restricted" in after.text
    assert 'id="restricted-state"' in after.text and "request-restriction" not in after.text
    assert refused.status_code == 403


async def test_the_delete_page_shows_the_balance_and_what_is_kept(gateway: Gateway) -> None:
    await signed_up(gateway, usd="3.5")

    page = await gateway.client.get("/account/privacy/delete")

    assert page.status_code == 200
    assert "$3.5000" in page.text and "forfeited" in page.text
    assert "What is kept" in page.text and "DELETE MY ACCOUNT" in page.text


async def test_deleting_the_account_needs_the_typed_confirmation(gateway: Gateway) -> None:
    account_id, _ = await signed_up(gateway)
    token = await form_token(gateway.client, "/account/privacy/delete")

    refused = await gateway.client.post(
        "/account/privacy/delete", data={"csrf_token": token, "confirm": "delete my account"}
    )

    assert refused.status_code == 400
    assert "Type DELETE MY ACCOUNT exactly" in refused.text
    status = await gateway.rows("SELECT status FROM accounts WHERE id = :a", a=account_id)
    assert status == [{"status": "active"}]


async def test_deleting_the_account_signs_out_and_stops_sign_in_and_keys(gateway: Gateway) -> None:
    account_id, key = await signed_up(gateway)
    token = await form_token(gateway.client, "/account/privacy/delete")

    done = await gateway.client.post(
        "/account/privacy/delete", data={"csrf_token": token, "confirm": "DELETE MY ACCOUNT"}
    )

    assert done.status_code == 200
    assert "Your account is being deleted" in done.text and "What happens next" in done.text
    assert "Sign in" in done.text  # the page is shown signed out
    assert (await gateway.client.get("/account")).status_code == 303
    status = await gateway.rows("SELECT status FROM accounts WHERE id = :a", a=account_id)
    assert status == [{"status": "deletion_pending"}]
    async with httpx.AsyncClient(
        transport=gateway.client._transport, base_url="http://gateway.test"
    ) as fresh:
        assert (await sign_in(fresh, EMAIL)).status_code == 401
    assert (
        await gateway.client.post("/v1/auth/test", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 401


async def test_an_old_sign_in_is_asked_to_sign_in_again_before_deleting(gateway: Gateway) -> None:
    account_id, _ = await signed_up(gateway)
    await age_sign_in(gateway, account_id, minutes=11)

    page = await gateway.client.get("/account/privacy/delete")
    refused = await gateway.client.post(
        "/account/privacy/delete",
        data={"csrf_token": csrf_of(page.text), "confirm": "DELETE MY ACCOUNT"},
    )
    privacy = await gateway.client.get("/account/privacy")

    assert 'id="reverify"' in page.text and 'id="delete-account"' not in page.text
    assert "sign in again" in page.text.lower()
    assert refused.status_code == 403
    status = await gateway.rows("SELECT status FROM accounts WHERE id = :a", a=account_id)
    assert status == [{"status": "active"}]
    assert 'id="download-data"' not in privacy.text and 'id="download-reverify"' in privacy.text


async def test_the_profile_page_corrects_name_and_email(gateway: Gateway) -> None:
    await signed_up(gateway)
    await gateway.account(email="someone-else@example.com")
    token = await form_token(gateway.client, "/account/profile")

    taken = await gateway.client.post(
        "/account/profile",
        data={"csrf_token": token, "name": "Ada", "email": "someone-else@example.com"},
    )
    malformed = await gateway.client.post(
        "/account/profile", data={"csrf_token": token, "name": "Ada", "email": "nope"}
    )
    saved = await gateway.client.post(
        "/account/profile", data={"csrf_token": token, "name": "Ada", "email": "ada@example.com"}
    )
    after = await gateway.client.get(saved.headers["location"])

    assert taken.status_code == 400 and "already uses" in taken.text
    assert malformed.status_code == 400 and "not an e-mail address" in malformed.text
    assert "Your profile has been updated." in after.text
    assert 'value="Ada"' in after.text and 'value="ada@example.com"' in after.text
    assert "ada@example.com" in (await gateway.client.get("/account")).text


async def test_an_old_sign_in_cannot_change_the_email_but_can_change_the_name(
    gateway: Gateway,
) -> None:
    account_id, _ = await signed_up(gateway)
    await age_sign_in(gateway, account_id, minutes=11)
    token = await form_token(gateway.client, "/account/profile")

    refused = await gateway.client.post(
        "/account/profile", data={"csrf_token": token, "name": "", "email": "new@example.com"}
    )
    renamed = await gateway.client.post(
        "/account/profile", data={"csrf_token": token, "name": "Bo", "email": EMAIL}
    )

    assert refused.status_code == 403 and "sign in again" in refused.text
    assert renamed.status_code == 303
    shown = (await gateway.client.get("/v1/account")).json()
    assert shown["email"] == EMAIL and shown["name"] == "Bo"


async def test_a_clerk_account_profile_points_to_clerk(gateway: Gateway) -> None:
    account_id, _ = await signed_up(gateway)
    await gateway.execute("UPDATE accounts SET auth_provider = 'clerk' WHERE id = :a", a=account_id)

    page = await gateway.client.get("/account/profile")
    posted = await gateway.client.post(
        "/account/profile", data={"csrf_token": csrf_of(page.text), "email": "x@example.com"}
    )

    assert 'id="profile-managed"' in page.text and 'id="profile"' not in page.text
    assert posted.status_code == 400 and "Clerk" in posted.text


async def test_the_usage_log_shows_stored_prompts_and_deletes_them(gateway: Gateway) -> None:
    _, key = await signed_up(gateway)
    kept = await generate(gateway, key, "a kept kite")
    hidden = await generate(gateway, key, "a hidden kite", **{"X-Store-Prompt": "false"})
    _, other_key = await gateway.account("1")
    foreign = await generate(gateway, other_key, "not yours")

    page = await gateway.client.get("/usage")
    assert "a kept kite" in page.text and "a hidden kite" not in page.text
    assert f'id="log-{hidden}"' in page.text and "not stored" in page.text
    assert "not yours" not in page.text
    token = csrf_of(page.text)

    not_mine = await gateway.client.post(
        f"/account/logs/{foreign}/delete", data={"csrf_token": token}
    )
    one = await gateway.client.post(f"/account/logs/{kept}/delete", data={"csrf_token": token})
    after = await gateway.client.get(one.headers["location"])

    assert not_mine.status_code == 404
    assert "a kept kite" not in after.text and "deleted" in after.text
    assert [r["prompt"] for r in await gateway.generations() if r["id"] == foreign] == ["not yours"]


async def test_delete_all_on_the_usage_log(gateway: Gateway) -> None:
    account_id, key = await signed_up(gateway)
    for prompt in ("one", "two"):
        await generate(gateway, key, f"prompt {prompt}")
    token = await form_token(gateway.client, "/usage")

    done = await gateway.client.post("/account/logs/delete-all", data={"csrf_token": token})

    assert done.status_code == 303
    rows = [r for r in await gateway.generations() if r["account_id"] == account_id]
    assert len(rows) == 2 and all(r["prompt"] is None and not r["output_urls"] for r in rows)


async def test_the_navigation_leads_to_the_settings_pages(gateway: Gateway) -> None:
    await signed_up(gateway)

    account = await gateway.client.get("/account")
    privacy = await gateway.client.get("/account/privacy")

    assert 'href="/account/privacy"' in account.text and 'href="/usage"' in account.text
    assert 'href="/account/profile"' in privacy.text
    assert 'href="/v1/account/export"' in privacy.text  # "Download my data"
    for path in ("/usage", "/account/profile"):
        assert (await gateway.client.get(path)).status_code == 200
