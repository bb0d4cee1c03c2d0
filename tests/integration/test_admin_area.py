"""The operator area (`/admin`) over HTTP: only admins, CSRF on every form, the accounts list
masked unless a reason is given (audited), grants and deductions with their reason in the
ledger and the audit log, the grant cap and its override, usage, provider health and the
catalog. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from image_router.account import service as accounts
from image_router.admin.credits import OVERRIDE_NOTE
from image_router.db.session import unit_of_work
from tests.conftest import Gateway
from tests.integration.web_helpers import csrf_of, sign_up

ADMIN_EMAIL = "boss@example.com"
USER_EMAIL = "person@example.com"


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    return {"admin_grant_max_usd": "100"}


async def credits_of(gw: Gateway, account_id: str) -> dict[str, Any]:
    """What `/v1/credits` tells the account (through a new key of its own)."""
    async with unit_of_work(gw.res.engine) as conn:
        _, key = await accounts.create_key(conn, account_id, "check")
    answer = await gw.client.get("/v1/credits", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


@pytest.fixture
async def admin(any_gateway: Gateway) -> httpx.AsyncClient:
    """The gateway's client, signed in as an admin account."""
    assert (await sign_up(any_gateway.client, ADMIN_EMAIL)).status_code == 303
    [row] = await any_gateway.rows("SELECT id FROM accounts")
    await any_gateway.execute("UPDATE accounts SET role = 'admin' WHERE id = :id", id=row["id"])
    return any_gateway.client


@pytest.fixture
async def person(
    any_gateway: Gateway, admin: httpx.AsyncClient
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """Another account (not an admin), signed in in its own browser: (account id, browser)."""
    async with httpx.AsyncClient(
        transport=any_gateway.client._transport, base_url="http://gateway.test"
    ) as client:
        assert (await sign_up(client, USER_EMAIL)).status_code == 303
        [row] = await any_gateway.rows("SELECT id FROM accounts WHERE role = 'user'")
        yield str(row["id"]), client


async def token_of(client: httpx.AsyncClient, path: str) -> str:
    page = await client.get(path)
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def audit_rows(gw: Gateway, action: str) -> list[dict[str, Any]]:
    return await gw.rows(
        "SELECT actor_type, actor_id, subject_account_id, action, fields, reason "
        "FROM audit_log WHERE action = :action ORDER BY id",
        action=action,
    )


async def admin_id(gw: Gateway) -> str:
    [row] = await gw.rows("SELECT id FROM accounts WHERE role = 'admin'")
    return str(row["id"])


async def grant(
    client: httpx.AsyncClient, account_id: str, usd: str, reason: str, **extra: str
) -> httpx.Response:
    path = f"/admin/accounts/{account_id}"
    token = await token_of(client, path)
    return await client.post(
        f"{path}/grant", data={"csrf_token": token, "amount_usd": usd, "reason": reason, **extra}
    )


async def deduct(
    client: httpx.AsyncClient, account_id: str, usd: str, reason: str
) -> httpx.Response:
    path = f"/admin/accounts/{account_id}"
    token = await token_of(client, path)
    return await client.post(
        f"{path}/deduct", data={"csrf_token": token, "amount_usd": usd, "reason": reason}
    )


# ------------------------------------------------------------------------------ access


ADMIN_PAGES = ["/admin", "/admin/accounts", "/admin/usage", "/admin/providers", "/admin/catalog"]


async def test_non_admins_get_404_and_signed_out_browsers_the_sign_in_page(
    any_gateway: Gateway, person: tuple[str, httpx.AsyncClient]
) -> None:
    person_id, browser = person
    for path in [*ADMIN_PAGES, f"/admin/accounts/{person_id}"]:
        page = await browser.get(path)
        assert page.status_code == 404, path
        assert "There is no page at this address." in page.text
        assert 'href="/admin"' not in page.text  # no "Operator" link for them
    token = csrf_of((await browser.get("/account")).text)
    for action in ("grant", "deduct"):
        refused = await browser.post(
            f"/admin/accounts/{person_id}/{action}",
            data={"csrf_token": token, "amount_usd": "50", "reason": "mine"},
        )
        assert refused.status_code == 404
    refused = await browser.post("/admin/accounts", data={"csrf_token": token, "reason": "look"})
    assert refused.status_code == 404
    assert await any_gateway.balance(person_id) == 0
    assert await audit_rows(any_gateway, "operator_list") == []

    async with httpx.AsyncClient(
        transport=any_gateway.client._transport, base_url="http://gateway.test"
    ) as stranger:
        for path in ADMIN_PAGES:
            answer = await stranger.get(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/signin"


async def test_every_admin_page_renders_for_an_admin(admin: httpx.AsyncClient) -> None:
    for path in ADMIN_PAGES:
        page = await admin.get(path)
        assert page.status_code == 200, path
        assert 'aria-label="Operator area"' in page.text
    assert 'href="/admin"' in (await admin.get("/account")).text  # the nav's "Operator"


async def test_admin_forms_need_the_session_csrf_token(
    any_gateway: Gateway, admin: httpx.AsyncClient, person: tuple[str, httpx.AsyncClient]
) -> None:
    person_id, _ = person
    for path, data in [
        (f"/admin/accounts/{person_id}/grant", {"amount_usd": "5", "reason": "x"}),
        (f"/admin/accounts/{person_id}/deduct", {"amount_usd": "5", "reason": "x"}),
        ("/admin/accounts", {"reason": "x"}),
    ]:
        for token in (None, "forged-" + "z" * 40):
            sent = data | ({"csrf_token": token} if token else {})
            assert (await admin.post(path, data=sent)).status_code == 403, path
    assert await any_gateway.balance(person_id) == 0
    assert await audit_rows(any_gateway, "operator_list") == []


# ------------------------------------------------------------------------------ accounts


async def test_the_list_is_masked_and_a_reason_shows_emails_audited(
    any_gateway: Gateway, admin: httpx.AsyncClient, person: tuple[str, httpx.AsyncClient]
) -> None:
    page = (await admin.get("/admin/accounts")).text
    assert "p***@example.com" in page and "b***@example.com" in page
    assert USER_EMAIL not in page
    assert await audit_rows(any_gateway, "operator_list") == []

    token = csrf_of(page)
    blank = await admin.post("/admin/accounts", data={"csrf_token": token, "reason": "  "})
    assert blank.status_code == 400 and "a reason is required" in blank.text
    assert USER_EMAIL not in blank.text
    assert await audit_rows(any_gateway, "operator_list") == []

    shown = await admin.post(
        "/admin/accounts", data={"csrf_token": token, "reason": "support ticket 7"}
    )
    assert shown.status_code == 200
    assert USER_EMAIL in shown.text and ADMIN_EMAIL in shown.text
    assert "shown in full (audited)" in shown.text
    [entry] = await audit_rows(any_gateway, "operator_list")
    assert entry == {
        "actor_type": "operator",
        "actor_id": f"web:{await admin_id(any_gateway)}",
        "subject_account_id": None,
        "action": "operator_list",
        "fields": "email",
        "reason": "support ticket 7",
    }


async def test_search_by_address_id_and_with_a_reason_part_of_an_address(
    any_gateway: Gateway, admin: httpx.AsyncClient, person: tuple[str, httpx.AsyncClient]
) -> None:
    person_id, _ = person

    def listed(page: str) -> list[str]:
        return re.findall(r'data-account-id="([^"]+)"', page)

    assert listed((await admin.get("/admin/accounts", params={"q": USER_EMAIL})).text) == [
        person_id
    ]
    by_id = (await admin.get("/admin/accounts", params={"q": person_id[:8]})).text
    assert listed(by_id) == [person_id] and USER_EMAIL not in by_id
    # Part of an address matches nothing while e-mails stay masked...
    assert listed((await admin.get("/admin/accounts", params={"q": "person"})).text) == []
    # ...and with a reason (audited) it does.
    token = csrf_of((await admin.get("/admin/accounts")).text)
    found = await admin.post(
        "/admin/accounts", data={"csrf_token": token, "q": "person", "reason": "ticket 8"}
    )
    assert listed(found.text) == [person_id] and USER_EMAIL in found.text
    assert len(await audit_rows(any_gateway, "operator_list")) == 1


# ------------------------------------------------------------------------------ credit


async def test_a_grant_with_its_reason_in_the_ledger_and_the_audit_log(
    any_gateway: Gateway, admin: httpx.AsyncClient, person: tuple[str, httpx.AsyncClient]
) -> None:
    person_id, _ = person
    answer = await grant(admin, person_id, "12.50", "  goodwill   for ticket 9 ")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/admin/accounts/{person_id}?done=granted"
    page = (await admin.get(answer.headers["location"])).text
    assert "The credit has been granted." in page
    assert 'id="admin-balance">$12.5000<' in page
    assert "goodwill for ticket 9" in page

    assert await any_gateway.balance(person_id) == 125_000
    assert await any_gateway.ledger_sum(person_id) == 125_000
    [entry] = await any_gateway.rows(
        "SELECT kind, amount, reason FROM ledger_entries WHERE account_id = :id", id=person_id
    )
    assert entry == {"kind": "grant", "amount": 125_000, "reason": "goodwill for ticket 9"}
    [audited] = await audit_rows(any_gateway, "credit_grant")
    assert audited["actor_id"] == f"web:{await admin_id(any_gateway)}"
    assert audited["subject_account_id"] == person_id
    assert audited["reason"] == "goodwill for ticket 9"

    assert await credits_of(any_gateway, person_id) == {
        "remaining_credits": "12.5000",
        "credit_usage": "0.0000",
        "total_deposits": "12.5000",
    }


async def test_a_grant_above_the_cap_needs_the_override(
    any_gateway: Gateway, admin: httpx.AsyncClient, person: tuple[str, httpx.AsyncClient]
) -> None:
    person_id, _ = person
    refused = await grant(admin, person_id, "150", "big customer")
    assert refused.status_code == 400
    assert "more than one grant may be without confirming" in refused.text
    assert "Grant more than $100.0000" in refused.text
    assert 'value="150"' in refused.text  # the form keeps what was typed
    assert await any_gateway.balance(person_id) == 0
    assert await audit_rows(any_gateway, "credit_grant") == []

    assert (await grant(admin, person_id, "100", "at the cap")).status_code == 303
    forced = await grant(admin, person_id, "150", "big customer", force="on")
    assert forced.status_code == 303
    assert await any_gateway.balance(person_id) == 2_500_000
    reasons = [row["reason"] for row in await audit_rows(any_gateway, "credit_grant")]
    assert reasons == ["at the cap", "big customer" + OVERRIDE_NOTE]


async def test_a_deduction_never_takes_the_balance_below_zero(
    any_gateway: Gateway, admin: httpx.AsyncClient, person: tuple[str, httpx.AsyncClient]
) -> None:
    person_id, _ = person
    assert (await grant(admin, person_id, "10", "trial")).status_code == 303
    answer = await deduct(admin, person_id, "2.5", "charged twice by mistake")
    assert answer.status_code == 303
    assert "The credit has been deducted." in (await admin.get(answer.headers["location"])).text
    assert await any_gateway.balance(person_id) == 75_000

    too_much = await deduct(admin, person_id, "7.5001", "too much")
    assert too_much.status_code == 400
    assert "the balance is $7.5000" in too_much.text
    assert await any_gateway.balance(person_id) == 75_000

    assert (await deduct(admin, person_id, "7.5", "all of it")).status_code == 303
    assert await any_gateway.balance(person_id) == 0
    assert await any_gateway.ledger_sum(person_id) == 0
    kinds = await any_gateway.rows(
        "SELECT kind, amount, reason FROM ledger_entries WHERE account_id = :id ORDER BY id",
        id=person_id,
    )
    assert kinds[1:] == [
        {"kind": "deduction", "amount": -25_000, "reason": "charged twice by mistake"},
        {"kind": "deduction", "amount": -75_000, "reason": "all of it"},
    ]
    assert [r["reason"] for r in await audit_rows(any_gateway, "credit_deduct")] == [
        "charged twice by mistake",
        "all of it",
    ]
    # A deduction takes money back out, it is not spending: usage stays zero.
    assert await credits_of(any_gateway, person_id) == {
        "remaining_credits": "0.0000",
        "credit_usage": "0.0000",
        "total_deposits": "0.0000",
    }


@pytest.mark.parametrize(
    ("usd", "reason", "message"),
    [
        ("ten", "x", "is not a USD amount"),
        ("0", "x", "must be more than $0"),
        ("-3", "x", "must be more than $0"),
        ("5", "   ", "a reason is required"),
    ],
)
async def test_bad_amounts_and_missing_reasons_change_nothing(
    any_gateway: Gateway,
    admin: httpx.AsyncClient,
    person: tuple[str, httpx.AsyncClient],
    usd: str,
    reason: str,
    message: str,
) -> None:
    person_id, _ = person
    for send in (grant, deduct):
        answer = await send(admin, person_id, usd, reason)
        assert answer.status_code == 400 and message in answer.text
    assert await any_gateway.ledger_sum(person_id) == 0
    assert await audit_rows(any_gateway, "credit_grant") == []


async def test_an_unknown_account_is_404(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/admin/accounts/no-such-account")).status_code == 404
    token = csrf_of((await admin.get("/admin/accounts")).text)
    answer = await admin.post(
        "/admin/accounts/no-such-account/grant",
        data={"csrf_token": token, "amount_usd": "5", "reason": "x"},
    )
    assert answer.status_code == 404


# ------------------------------------------------------------------------------ status


async def test_usage_providers_and_catalog(any_gateway: Gateway, admin: httpx.AsyncClient) -> None:
    _, key = await any_gateway.account("1")
    made = await any_gateway.post(
        "/v1/openai/images/generations",
        key,
        json={"model": "test/test", "prompt": "a lighthouse", "size": "256x256"},
    )
    assert made.status_code == 200, made.text
    usage = (await admin.get("/admin/usage")).text
    assert 'id="usage-requests">1<' in usage
    assert "<code>test/test</code>" in usage

    providers = (await admin.get("/admin/providers")).text
    assert "<code>openai</code>" in providers and "enabled" in providers
    assert "no key configured (RUNWARE_API_KEY)" in providers
    assert "test/test" in providers and "healthy" in providers  # the route used above

    catalog = (await admin.get("/admin/catalog")).text
    total = len(any_gateway.res.catalog.models)
    assert re.search(rf'id="catalog-enabled">\d+ of {total}<', catalog)
    assert "no key configured (RUNWARE_API_KEY)" in catalog
    disabled = (await admin.get("/admin/catalog", params={"show": "disabled"})).text
    assert 'data-model="test/test"' not in disabled
    assert 'data-model="test/test"' in catalog
