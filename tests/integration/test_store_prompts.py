"""Prompt storage follows the account's choice and the request's header (DSR-5, DSR-6,
SEC-1, SEC-5): not stored means no sealed prompt in the database and no prompt in the
logs; stored means sealed in the database and readable only through the account."""

from __future__ import annotations

import logging
import os

import pytest

from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"


def sentinel() -> str:
    return f"zebra-sentinel-{os.urandom(6).hex()}"


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def generate(gateway: Gateway, key: str, prompt: str, **headers: str) -> None:
    response = await gateway.post(
        IMAGE,
        key,
        json={"model": "openai/dall-e-2", "prompt": prompt, "size": "1024x1024"},
        headers=headers,
    )
    assert response.status_code == 200, response.text


async def stored_prompt(gateway: Gateway) -> bytes | None:
    """The raw `prompt_enc` column of the newest usage row."""
    rows = await gateway.rows("SELECT prompt_enc FROM generations ORDER BY created_at")
    assert rows, "no usage row was written"
    value = rows[-1]["prompt_enc"]
    return None if value is None else bytes(value)


def assert_not_logged(
    prompt: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    for record in caplog.records:
        assert prompt not in record.getMessage(), record.getMessage()
        assert prompt not in repr(record.__dict__)
    out, err = capfd.readouterr()
    assert prompt not in out and prompt not in err  # the JSON log stream


async def test_an_account_that_switched_storing_off_keeps_no_prompt_anywhere(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    _, key = await gateway.account("1")
    switched = await gateway.client.patch(
        "/v1/account/preferences", json={"store_prompts": False}, headers=auth(key)
    )
    assert switched.status_code == 200
    prompt = sentinel()

    await generate(gateway, key, prompt)

    assert await stored_prompt(gateway) is None
    usage = (await gateway.client.get("/v1/account/usage", headers=auth(key))).json()
    assert usage["data"][0]["prompt"] is None
    assert usage["data"][0]["prompt_stored"] is False
    assert_not_logged(prompt, caplog, capfd)


async def test_the_header_keeps_one_requests_prompt_out(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    _, key = await gateway.account("1")
    prompt = sentinel()

    await generate(gateway, key, prompt, **{"X-Store-Prompt": "false"})

    assert await stored_prompt(gateway) is None
    assert_not_logged(prompt, caplog, capfd)
    kept = sentinel()
    await generate(gateway, key, kept)
    assert await stored_prompt(gateway) is not None  # the next request is stored again


async def test_the_header_cannot_turn_storing_on(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    await gateway.client.patch(
        "/v1/account/preferences", json={"store_prompts": False}, headers=auth(key)
    )

    await generate(gateway, key, sentinel(), **{"X-Store-Prompt": "true"})

    assert await stored_prompt(gateway) is None


async def test_a_stored_prompt_is_sealed_in_the_database_and_shown_to_its_owner(
    any_gateway: Gateway,
) -> None:
    _, key = await any_gateway.account("1")
    prompt = sentinel()

    await generate(any_gateway, key, prompt)

    raw = await stored_prompt(any_gateway)
    assert raw is not None and prompt.encode() not in raw
    usage = (await any_gateway.client.get("/v1/account/usage", headers=auth(key))).json()
    assert usage["data"][0]["prompt"] == prompt


async def test_switching_storing_off_applies_to_the_next_request_and_is_recorded(
    gateway: Gateway,
) -> None:
    account_id, key = await gateway.account("1")
    before, after = sentinel(), sentinel()
    await generate(gateway, key, before)

    await gateway.client.patch(
        "/v1/account/preferences", json={"store_prompts": False}, headers=auth(key)
    )
    await generate(gateway, key, after)
    await gateway.client.patch(
        "/v1/account/preferences", json={"store_prompts": True}, headers=auth(key)
    )

    prompts = [r["prompt"] for r in await gateway.generations()]
    assert prompts == [before, None]
    rows = await gateway.rows(
        "SELECT purpose, granted FROM consents WHERE account_id = :a ORDER BY id", a=account_id
    )
    assert [(r["purpose"], bool(r["granted"])) for r in rows] == [
        ("store_prompts", False),
        ("store_prompts", True),
    ]


async def test_a_refusal_quoting_the_prompt_leaves_it_nowhere_in_the_log_or_the_row(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Vendors quote prompts in their refusals; the usage row's error and attempts and the
    application log keep a placeholder instead, while the person still reads the refusal."""
    caplog.set_level(logging.DEBUG)
    _, key = await gateway.account("1")
    await gateway.client.patch(
        "/v1/account/preferences", json={"store_prompts": False}, headers=auth(key)
    )
    prompt = f"{sentinel()} [test:reject]"
    refused = await gateway.post(IMAGE, key, json={"model": "test/test", "prompt": prompt})
    assert refused.status_code == 400
    assert prompt in refused.json()["error"]["message"]  # the answer is the caller's own

    [row] = await gateway.rows("SELECT prompt_enc, error, attempts FROM generations")
    assert row["prompt_enc"] is None
    assert prompt not in str(row["error"]) and "[prompt]" in str(row["error"])
    assert prompt not in str(row["attempts"])
    assert_not_logged(prompt, caplog, capfd)
