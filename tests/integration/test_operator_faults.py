"""The gateway's own configuration at fault: a vendor refusing our call (401/404) is 502
`upstream_misconfigured`, logged at ERROR with vendor and URL, fed to route health, and
another route is tried; a refused connection is 502 `upstream_unreachable` at once; the
CLI says where it looked when nothing answers."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from image_router.app import create_app
from image_router.cli import app as cli_app
from image_router.kit.money import usd_to_credits
from image_router.resources import build_resources
from tests.conftest import Gateway, gateway_settings

IMAGE = "/v1/openai/images/generations"
# Routes: runware, deepinfra, together.
FLUX = {"model": "black-forest-labs/FLUX-1.1-pro", "prompt": "a red barn", "size": "1024x1024"}


@pytest.mark.parametrize("status", [401, 404])
async def test_a_route_refusing_our_call_falls_over_and_is_logged(
    vendors_gateway: Gateway, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["runware"].fail_next(status, {"error": "Not Found"})
    with caplog.at_level(logging.ERROR):
        response = await gw.post(IMAGE, key, json=FLUX)
    assert response.status_code == 200, response.text
    [row] = await gw.generations()
    assert row["provider"] == "deepinfra"
    assert [(a["provider"], a["kind"]) for a in row["attempts"]] == [("runware", "misconfigured")]
    health = await gw.res.health.snapshot()
    assert health["runware/bfl:2@1"].as_dict()["error_rate"] > 0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("runware" in m and "http://fakes/runware/v1" in m for m in errors), errors
    assert not any(gw.fakes["runware"].api_key in m for m in errors if gw.fakes["runware"].api_key)
    assert await gw.balance(account) < usd_to_credits("1")


async def test_every_route_refusing_our_call_is_502_misconfigured(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["runware"].fail_next(401)
    gw.fakes["deepinfra"].fail_next(404, {"detail": "Not Found"})
    gw.fakes["together"].fail_next(404, {"error": {"message": "Not Found"}})
    response = await gw.post(IMAGE, key, json=FLUX)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_misconfigured"
    assert "operator" in error["message"]
    assert await gw.balance(account) == usd_to_credits("1")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_connection_is_502_unreachable_at_once(db_url: str, tmp_path: Path) -> None:
    # The real transport (aiohttp), as in production: no fake in between.
    settings = gateway_settings(
        db_url, tmp_path / "data", openai_base_url=f"http://127.0.0.1:{_closed_port()}"
    )
    res = build_resources(settings)
    app = create_app(settings, resources=res)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
        ) as client,
    ):
        gw = Gateway(client=client, res=res, openai=None)  # type: ignore[arg-type]
        account, key = await gw.account("1")
        started = time.monotonic()
        response = await gw.post(
            IMAGE, key, json={"model": "openai/gpt-image-1", "prompt": "a lighthouse"}
        )
        assert time.monotonic() - started < 3
        assert response.status_code == 502, response.text
        assert response.json()["error"]["code"] == "upstream_unreachable"
        assert await gw.balance(account) == usd_to_credits("1")


def test_providers_status_on_a_wrong_port_says_what_to_pass(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.delenv("PUBLIC_URL", raising=False)
    port = _closed_port()
    monkeypatch.setenv("PORT", str(port))
    result = CliRunner().invoke(cli_app, ["providers", "status"])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert f"http://127.0.0.1:{port}" in line
    assert "connection refused" in line and "--url" in line
