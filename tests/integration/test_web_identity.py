"""The website and the API learn who is calling from the same dependencies (api/identity.py).

A page does not look the session up its own way: whatever `SessionDep` resolves is who the
page shows, and `ResourcesDep` is what it works with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from image_router.account.sessions import SessionView
from image_router.api.identity import get_session
from image_router.app import create_app
from image_router.kit.clock import utcnow
from image_router.resources import build_resources
from tests.conftest import Gateway, fakes_transport, gateway_settings
from tests.fakes.openai import FakeOpenAI


@pytest.fixture
async def gateway_and_app(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[Gateway, FastAPI]]:
    openai = FakeOpenAI()
    settings = gateway_settings(db_url, tmp_path / "data")
    res = build_resources(settings, http_transport=fakes_transport(openai))
    app = create_app(settings, resources=res)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
        ) as client,
    ):
        yield Gateway(client=client, res=res, openai=openai), app


def a_session(account_id: str, email: str) -> SessionView:
    now = utcnow()
    return SessionView(
        id="session-under-test",
        account_id=account_id,
        email=email,
        role="user",
        balance=12_345,
        csrf_token="c" * 43,
        expires_at=now + timedelta(hours=1),
        authenticated_at=now,
    )


async def test_pages_show_whoever_the_session_dependency_resolves(
    gateway_and_app: tuple[Gateway, FastAPI],
) -> None:
    gateway, app = gateway_and_app
    account_id, _ = await gateway.account(email="shared@example.com")

    async def resolved() -> SessionView:
        return a_session(account_id, "shared@example.com")

    before = await gateway.client.get("/account")
    app.dependency_overrides[get_session] = resolved
    page = await gateway.client.get("/account")
    keys = await gateway.client.get("/account/keys")

    assert before.status_code == 303 and before.headers["location"] == "/signin"
    assert page.status_code == 200, page.text
    assert "shared@example.com" in page.text and "$1.2345" in page.text
    assert keys.status_code == 200 and "test key" in keys.text
