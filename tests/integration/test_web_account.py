"""The account's own pages: `/billing`'s balance movements and spend chart, the contact for
adding credit without payments, `/account`'s next steps, and changing the password."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd, usd_to_credits
from image_router.ledger import service as ledger
from tests.conftest import Gateway
from tests.integration.web_helpers import PASSWORD, csrf_of, form_token, sign_in, sign_up

IMAGE = "/v1/openai/images/generations"
NEW_PASSWORD = "a much better passphrase"


async def signed_up(gw: Gateway, email: str) -> str:
    assert (await sign_up(gw.client, email)).status_code == 303
    return str((await gw.client.get("/v1/account")).json()["id"])


def movements(page: str) -> list[tuple[str, str, str]]:
    """(kind, words, amount) of each movement row, in order."""
    return re.findall(
        r'<tr id="movement-[^"]+" data-kind="([^"]+)">\s*<td[^>]*>[^<]*</td>\s*'
        r'<td data-label="What" class="movement-kind">([^<]+)</td>\s*'
        r'<td data-label="Amount" class="num [^"]+">([^<]+)</td>',
        page,
    )


async def test_billing_lists_every_balance_movement(any_gateway: Gateway) -> None:
    gw = any_gateway
    account_id = await signed_up(gw, "movements@example.com")
    async with unit_of_work(gw.res.engine) as conn:
        # What `image-router credits grant EMAIL 2 --reason …` writes.
        await ledger.grant(conn, account_id, usd_to_credits("2"), reason="welcome credit")
        _, key = await accounts.create_key(conn, account_id, "spender")
    for prompt in ("one", "two"):  # a paid model, served by the fake OpenAI
        made = await gw.post(
            IMAGE, key, json={"model": "openai/dall-e-2", "prompt": prompt, "size": "1024x1024"}
        )
        assert made.status_code == 200, made.text
    async with unit_of_work(gw.res.engine) as conn:
        await ledger.deduct(conn, account_id, usd_to_credits("0.5"), reason="correction")

    spent = sum(r["cost"] for r in await gw.rows("SELECT cost FROM generations"))
    assert spent > 0
    page = (await gw.client.get("/billing")).text
    today = utcnow().date().isoformat()
    # Newest first; a day's generations are placed at the end of that day.
    assert movements(page) == [
        ("generations", "Generations (the day&#39;s total)", f"-${format_usd(spent)}"),
        ("deduction", "Deducted by the operator", "-$0.5000"),
        ("grant", "Credit granted by the operator", "+$2.0000"),
    ]
    assert "welcome credit" in page and "correction" in page
    assert f'href="/usage?from={today}&amp;to={today}"' in page
    balance = 20_000 - 5_000 - spent
    assert f'id="billing-balance">${format_usd(balance)}<' in page
    assert f'id="billing-spent">${format_usd(spent)}<' in page
    # The spend chart: this month holds the two requests.
    assert f'<td>{today[:7]}</td><td class="num">${format_usd(spent)}</td>' in page
    # The movements add up to the balance.
    assert await gw.balance(account_id) == await gw.ledger_sum(account_id) == balance


async def test_billing_pages_its_movements(gateway: Gateway) -> None:
    account_id = await signed_up(gateway, "pages@example.com")
    async with unit_of_work(gateway.res.engine) as conn:
        for i in range(55):
            await ledger.grant(conn, account_id, 100 + i, reason=f"grant {i}")
    first = (await gateway.client.get("/billing")).text
    older = re.search(r'href="/billing\?before=(\d+)" id="older"', first)
    assert older is not None and len(movements(first)) == 50
    second = (await gateway.client.get(f"/billing?before={older.group(1)}")).text
    assert len(movements(second)) == 5 and 'id="older"' not in second
    assert "grant 0" in second and "grant 0<" not in first


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"support_email": "credit@example.com"},
            'To add credit, write to\n  <a href="mailto:credit@example.com"',
        ),
        ({}, "<code>image-router credits grant</code>"),
    ],
)
async def test_adding_credit_without_payments_names_who_to_ask(
    db_url: str, tmp_path: Any, overrides: dict[str, Any], expected: str
) -> None:
    from tests.conftest import _gateway

    async for gw in _gateway(db_url, tmp_path, overrides):
        await signed_up(gw, "ask@example.com")
        page = (await gw.client.get("/billing")).text
        assert 'id="payments-disabled"' in page and expected in page
        assert 'id="topup"' not in page


async def test_the_former_billing_address_redirects(gateway: Gateway) -> None:
    await signed_up(gateway, "oldbilling@example.com")
    old = await gateway.client.get("/account/billing?topup=x")
    assert old.status_code == 308 and old.headers["location"] == "/billing?topup=x"


async def test_the_account_page_shows_next_steps(gateway: Gateway) -> None:
    account_id = await signed_up(gateway, "steps@example.com")
    page = (await gateway.client.get("/account")).text
    assert re.findall(r'data-done="(\w+)"', page) == ["no", "no", "no"]
    assert "Create an API key" in page and "Add credit" in page
    assert 'href="/playground"' in page and 'href="/account/password"' in page
    async with unit_of_work(gateway.res.engine) as conn:
        await accounts.create_key(conn, account_id, "first")
        await ledger.grant(conn, account_id, 10_000, reason="test")
    page = (await gateway.client.get("/account")).text
    assert re.findall(r'data-done="(\w+)"', page) == ["yes", "no", "yes"]


async def _change(client: httpx.AsyncClient, **fields: str) -> httpx.Response:
    token = await form_token(client, "/account/password")
    return await client.post("/account/password", data={"csrf_token": token, **fields})


async def test_changing_the_password(any_gateway: Gateway) -> None:
    gw = any_gateway
    await signed_up(gw, "pw@example.com")
    async with httpx.AsyncClient(
        transport=gw.client._transport, base_url="http://gateway.test"
    ) as elsewhere:
        assert (await sign_in(elsewhere, "pw@example.com")).status_code == 303
        assert (await elsewhere.get("/account")).status_code == 200

        wrong = await _change(
            gw.client,
            current_password="not it at all",
            new_password=NEW_PASSWORD,
            new_password_again=NEW_PASSWORD,
        )
        assert wrong.status_code == 403 and "current password is not correct" in wrong.text
        mismatch = await _change(
            gw.client,
            current_password=PASSWORD,
            new_password=NEW_PASSWORD,
            new_password_again=NEW_PASSWORD + "!",
        )
        assert mismatch.status_code == 400 and "not the same" in mismatch.text
        short = await _change(
            gw.client, current_password=PASSWORD, new_password="short", new_password_again="short"
        )
        assert short.status_code == 400 and "at least 10 characters" in short.text
        assert (await elsewhere.get("/account")).status_code == 200  # nothing changed yet

        done = await _change(
            gw.client,
            current_password=PASSWORD,
            new_password=NEW_PASSWORD,
            new_password_again=NEW_PASSWORD,
        )
        assert (
            done.status_code == 303 and done.headers["location"] == "/account/password?done=changed"
        )
        # This browser stays signed in; the other session has ended.
        assert (
            "Your password has been changed" in (await gw.client.get(done.headers["location"])).text
        )
        ended = await elsewhere.get("/account")
        assert ended.status_code == 303 and ended.headers["location"] == "/signin"

    async with httpx.AsyncClient(
        transport=gw.client._transport, base_url="http://gateway.test"
    ) as fresh:
        assert (await sign_in(fresh, "pw@example.com")).status_code == 401  # the old one
        assert (await sign_in(fresh, "pw@example.com", NEW_PASSWORD)).status_code == 303


async def test_changing_the_password_is_throttled(gateway: Gateway) -> None:
    await signed_up(gateway, "throttle@example.com")
    statuses = []
    for _ in range(12):
        response = await _change(
            gateway.client,
            current_password="wrong guess here",
            new_password=NEW_PASSWORD,
            new_password_again=NEW_PASSWORD,
        )
        statuses.append(response.status_code)
    assert 403 in statuses and statuses[-1] == 429
    assert "Too many attempts" in response.text and int(response.headers["retry-after"]) >= 1


async def test_the_password_form_needs_the_csrf_token(gateway: Gateway) -> None:
    await signed_up(gateway, "csrf@example.com")
    page = await gateway.client.get("/account/password")
    assert page.status_code == 200 and csrf_of(page.text)
    forged = await gateway.client.post(
        "/account/password",
        data={
            "csrf_token": "forged",
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        },
    )
    assert forged.status_code == 403
