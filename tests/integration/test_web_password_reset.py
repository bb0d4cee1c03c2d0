"""Password reset by e-mail, delivered over SMTP to a local aiosmtpd sink on loopback."""

from __future__ import annotations

import email
import logging
import re
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.conftest import Gateway
from tests.e2e.conftest import free_port
from tests.integration.web_helpers import PASSWORD, csrf_of, form_token, sign_in, sign_up

EMAIL = "grace@example.com"
NEW_PASSWORD = "a brand new passphrase"
LINK = re.compile(r"(http://gateway\.test/password/reset\?token=[A-Za-z0-9_\-]+)")


class Inbox:
    """An SMTP server that keeps every message it is sent."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def link(self) -> str:
        [message] = self.messages
        found = LINK.search(str(message.get_payload(decode=True), "utf-8"))
        assert found is not None, message.as_string()
        return found.group(1)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def gateway_overrides(inbox: tuple[Inbox, int]) -> dict[str, Any]:
    return {"smtp_url": f"smtp://127.0.0.1:{inbox[1]}", "smtp_from": "Router <router@test>"}


async def _ask_for_reset(gateway: Gateway, address: str) -> str:
    token = await form_token(gateway.client, "/password/forgot")
    page = await gateway.client.post(
        "/password/forgot", data={"csrf_token": token, "email": address}
    )
    assert page.status_code == 200
    assert "If an account exists for that e-mail" in page.text
    return page.text


async def test_reset_by_e_mail_link(
    any_gateway: Gateway, inbox: tuple[Inbox, int], caplog: pytest.LogCaptureFixture
) -> None:
    mails, _ = inbox
    client = any_gateway.client
    await sign_up(client, EMAIL)
    signed_in_elsewhere = client.cookies["ir_session"]
    client.cookies.clear()

    with caplog.at_level(logging.DEBUG):
        await _ask_for_reset(any_gateway, EMAIL.upper())
    [message] = mails.messages
    assert message["To"] == EMAIL and message["From"] == "Router <router@test>"
    link = mails.link()
    token = link.split("token=")[1]
    assert token not in caplog.text
    [row] = await any_gateway.rows("SELECT token_hash FROM password_resets")
    assert row["token_hash"] != token

    form = await client.get(link)
    assert form.status_code == 200 and f'value="{token}"' in form.text
    changed = await client.post(
        "/password/reset",
        data={"csrf_token": csrf_of(form.text), "token": token, "password": NEW_PASSWORD},
    )
    assert changed.status_code == 303 and changed.headers["location"] == "/signin"
    assert "Your password has been changed" in (await client.get("/signin")).text

    # Sessions opened with the old password are over.
    client.cookies.set("ir_session", signed_in_elsewhere)
    assert (await client.get("/account")).status_code == 303
    client.cookies.clear()
    assert (await sign_in(client, EMAIL, PASSWORD)).status_code == 401
    assert (await sign_in(client, EMAIL, NEW_PASSWORD)).status_code == 303

    # The link worked once.
    client.cookies.clear()
    again = await client.get(link)
    assert again.status_code == 400 and "invalid, already used or expired" in again.text
    replay = await client.post(
        "/password/reset",
        data={
            "csrf_token": await form_token(client, "/password/forgot"),
            "token": token,
            "password": "yet another one!",
        },
    )
    assert replay.status_code == 400
    assert (await sign_in(client, EMAIL, NEW_PASSWORD)).status_code == 303


async def test_unknown_e_mail_gets_the_same_answer_and_no_mail(
    gateway: Gateway, inbox: tuple[Inbox, int]
) -> None:
    await gateway.account(email="known@example.com")
    unknown = await _ask_for_reset(gateway, "stranger@example.com")
    known = await _ask_for_reset(gateway, "known@example.com")
    assert unknown.split("<main")[1] == known.split("<main")[1]
    assert [m["To"] for m in inbox[0].messages] == ["known@example.com"]


async def test_expired_link_is_refused(gateway: Gateway, inbox: tuple[Inbox, int]) -> None:
    await sign_up(gateway.client, EMAIL)
    await _ask_for_reset(gateway, EMAIL)
    link = inbox[0].link()
    await gateway.execute("UPDATE password_resets SET expires_at = '2000-01-01 00:00:00'")
    page = await gateway.client.get(link)
    assert page.status_code == 400 and "invalid, already used or expired" in page.text
    response = await gateway.client.post(
        "/password/reset",
        data={
            "csrf_token": await form_token(gateway.client, "/password/forgot"),
            "token": link.split("token=")[1],
            "password": NEW_PASSWORD,
        },
    )
    assert response.status_code == 400


async def test_new_password_must_follow_the_rules(
    gateway: Gateway, inbox: tuple[Inbox, int]
) -> None:
    await sign_up(gateway.client, EMAIL)
    await _ask_for_reset(gateway, EMAIL)
    token = inbox[0].link().split("token=")[1]
    form = await gateway.client.get(f"/password/reset?token={token}")
    response = await gateway.client.post(
        "/password/reset",
        data={"csrf_token": csrf_of(form.text), "token": token, "password": "short"},
    )
    assert response.status_code == 400 and "at least 10 characters" in response.text
    # The refused attempt did not use the link up.
    assert (await gateway.client.get(f"/password/reset?token={token}")).status_code == 200


async def test_reset_form_needs_the_csrf_token(gateway: Gateway, inbox: tuple[Inbox, int]) -> None:
    await sign_up(gateway.client, EMAIL)
    response = await gateway.client.post("/password/forgot", data={"email": EMAIL})
    assert response.status_code == 403
    assert inbox[0].messages == []
