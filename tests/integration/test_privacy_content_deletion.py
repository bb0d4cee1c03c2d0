"""Deleting prompts and images short of closing the account (DSR-7), over HTTP.

`DELETE /v1/account/usage/{id}` and `DELETE /v1/account/usage[?before=]` remove the prompt,
the stored images (files too) and the vendor's error text, and keep what billing needs:
model, status, cost. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.db.tables import Generation
from image_router.kit.clock import utcnow
from image_router.ledger import service as ledger
from tests.conftest import Gateway
from tests.fakes.openai import openai_error
from tests.integration.web_helpers import sign_up

IMAGE = "/v1/openai/images/generations"
USAGE = "/v1/account/usage"
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


def body(prompt: str) -> dict[str, str]:
    return {"model": "openai/dall-e-2", "size": "1024x1024", "prompt": prompt}


class Browser:
    """A signed-in person: the cookie session on `client`, an API key, the CSRF token."""

    def __init__(self, gw: Gateway, client: httpx.AsyncClient, account_id: str, key: str) -> None:
        self.gw, self.client, self.id, self.key = gw, client, account_id, key
        self.csrf = ""

    async def delete(self, path: str, **params: str) -> httpx.Response:
        return await self.client.delete(path, params=params, headers={"X-CSRF-Token": self.csrf})

    async def generate(self, prompt: str) -> dict[str, Any]:
        response = await self.gw.post(IMAGE, self.key, json=body(prompt))
        assert response.status_code == 200, response.text
        [row] = [r for r in await self.gw.generations() if r["id"] in response.text]
        return row


async def signed_in(gw: Gateway, client: httpx.AsyncClient, email: str) -> Browser:
    assert (await sign_up(client, email)).status_code == 303
    async with unit_of_work(gw.res.engine) as conn:
        account_id = await accounts.find_account_id(conn, gw.res.vault, email)
        assert account_id is not None
        _, key = await accounts.create_key(conn, account_id, "k")
        await ledger.grant(conn, account_id, 50_000, reason="test")
    browser = Browser(gw, client, account_id, key)
    found = META_CSRF.search((await client.get("/account")).text)
    assert found is not None
    browser.csrf = found.group(1)
    return browser


@pytest.fixture
async def person(any_gateway: Gateway) -> Browser:
    return await signed_in(any_gateway, any_gateway.client, "dsr7@example.com")


def output_file(gw: Gateway, row: dict[str, Any]) -> Path:
    [name] = row["output_keys"]
    return Path(gw.res.settings.storage.data_dir) / "outputs" / name


async def row_of(gw: Gateway, generation_id: str) -> dict[str, Any]:
    [row] = [r for r in await gw.generations() if r["id"] == generation_id]
    return row


async def test_one_row_loses_its_prompt_and_image_and_keeps_its_cost(
    any_gateway: Gateway, person: Browser
) -> None:
    gw = any_gateway
    gone = await person.generate("a private portrait")
    kept = await person.generate("a public landscape")
    url = gone["output_urls"][0]
    assert (await gw.client.get(url)).status_code == 200
    balance = await gw.balance(person.id)

    response = await person.delete(f"{USAGE}/{gone['id']}")
    assert response.status_code == 200, response.text
    assert response.json() == {"id": gone["id"], "object": "usage", "deleted": True}

    after = await row_of(gw, gone["id"])
    assert after["prompt"] is None and after["prompt_enc"] is None
    assert after["output_urls"] == [] and after["output_keys"] == []
    assert after["content_deleted_at"] is not None
    assert (after["model"], after["status"], after["cost"]) == ("openai/dall-e-2", "success", 160)
    assert not output_file(gw, gone).exists()
    assert (await gw.client.get(url)).status_code == 404

    untouched = await row_of(gw, kept["id"])
    assert untouched["prompt"] == "a public landscape"
    assert output_file(gw, kept).exists()
    assert await gw.balance(person.id) == balance == await gw.ledger_sum(person.id)

    again = await person.delete(f"{USAGE}/{gone['id']}")
    assert again.status_code == 200


async def test_a_refusal_quoting_the_prompt_is_deleted_too(
    any_gateway: Gateway, person: Browser
) -> None:
    gw = any_gateway
    gw.openai.fail_next(400, openai_error("'a secret plan' is not allowed", code="policy"))
    assert (await gw.post(IMAGE, person.key, json=body("a secret plan"))).status_code == 400
    [row] = await gw.generations()
    # Stored with a placeholder in the first place; deleting the row's content empties it.
    assert "a secret plan" not in row["error"] and "[prompt]" in row["error"]
    assert (await person.delete(f"{USAGE}/{row['id']}")).status_code == 200
    [row] = await gw.generations()
    assert row["prompt"] is None and row["error"] is None and row["attempts"] == []
    assert row["status"] == "error"


async def test_another_accounts_row_is_not_found_and_untouched(
    any_gateway: Gateway, person: Browser
) -> None:
    gw = any_gateway
    _, other_key = await gw.account("1")
    response = await gw.post(IMAGE, other_key, json=body("someone else's idea"))
    assert response.status_code == 200
    [theirs] = await gw.generations()
    for target in (theirs["id"], "no-such-id"):
        refused = await person.delete(f"{USAGE}/{target}")
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "not_found"
    assert (await row_of(gw, theirs["id"]))["prompt"] == "someone else's idea"
    assert output_file(gw, theirs).exists()
    assert (await person.delete(USAGE)).json() == {"object": "list", "deleted": 0}
    assert (await row_of(gw, theirs["id"]))["prompt"] == "someone else's idea"


async def test_delete_all_or_only_before_a_moment(any_gateway: Gateway, person: Browser) -> None:
    gw = any_gateway
    rows = [await person.generate(f"prompt {n}") for n in range(3)]
    old = utcnow() - timedelta(days=10)
    async with unit_of_work(gw.res.engine) as conn:
        await conn.execute(
            update(Generation)
            .where(Generation.id.in_([r["id"] for r in rows[:2]]))
            .values(created_at=old)
        )
    cutoff = (utcnow() - timedelta(days=1)).isoformat().replace("+00:00", "Z")

    first = await person.delete(USAGE, before=cutoff)
    assert first.json() == {"object": "list", "deleted": 2}
    assert [(await row_of(gw, r["id"]))["prompt"] for r in rows] == [None, None, "prompt 2"]
    assert [output_file(gw, r).exists() for r in rows] == [False, False, True]

    everything = await person.delete(USAGE)
    assert everything.json() == {"object": "list", "deleted": 1}
    assert not output_file(gw, rows[2]).exists()
    assert (await person.delete(USAGE)).json() == {"object": "list", "deleted": 0}
    kept = [(r["model"], r["cost"], r["status"]) for r in await gw.generations()]
    assert kept == [("openai/dall-e-2", 160, "success")] * 3


async def test_a_running_generation_is_left_until_it_has_finished(
    any_gateway: Gateway, person: Browser
) -> None:
    gw = any_gateway
    row = await person.generate("still rendering")
    await gw.execute("UPDATE generations SET status = 'processing' WHERE id = :g", g=row["id"])
    refused = await person.delete(f"{USAGE}/{row['id']}")
    assert refused.status_code == 409
    assert "still running" in refused.json()["error"]["message"]
    assert (await person.delete(USAGE)).json()["deleted"] == 0
    assert (await row_of(gw, row["id"]))["prompt"] == "still rendering"
    assert output_file(gw, row).exists()


async def test_only_the_signed_in_person_may_delete(any_gateway: Gateway, person: Browser) -> None:
    gw = any_gateway
    row = await person.generate("keep me")
    by_key = await gw.client.delete(
        f"{USAGE}/{row['id']}", headers={"Authorization": f"Bearer {person.key}"}
    )
    assert by_key.status_code == 403
    assert by_key.json()["error"]["code"] == "session_required"
    no_csrf = await gw.client.delete(USAGE)
    assert no_csrf.status_code == 403
    async with httpx.AsyncClient(
        transport=gw.client._transport, base_url="http://gateway.test"
    ) as anonymous:
        assert (await anonymous.delete(USAGE)).status_code == 401
    bad = await person.delete(USAGE, before="last tuesday")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "before"
    assert (await row_of(gw, row["id"]))["prompt"] == "keep me"
