"""Shared by the webhook tests: a gateway whose HTTP client reaches a webhook receiver fake
(mounted under `/receiver`) and whose webhooks resolve names through the test's table
(`hooks.example` public, `private.example` not). The background sender is off
(WEBHOOK_WORKER=false): tests run `Hooks.run(now=...)` themselves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.conftest import Gateway, _gateway
from tests.fakes.webhook_receiver import WebhookReceiver

IMAGE = "/v1/openai/images/generations"
VIDEO = "/v1/openai/videos/generations"
HOOK = "https://hooks.example/receiver/hook"
OTHER = "https://hooks.example/receiver/other"
DNS = {"hooks.example": ["93.184.216.34"], "private.example": ["10.0.0.7"]}


@dataclass
class Hooks:
    gw: Gateway
    receiver: WebhookReceiver
    dns: dict[str, list[str]]

    async def run(self, now: datetime | None = None) -> int:
        return await self.gw.res.webhooks.runner.run_due(now=now)

    async def register(self, key: str, url: str = HOOK) -> dict[str, Any]:
        response = await self.gw.post("/v1/webhooks", key, json={"url": url})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def deliveries(self, key: str) -> list[dict[str, Any]]:
        response = await self.gw.client.get(
            "/v1/webhooks/deliveries", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()["data"]
        return found


async def hooks_gateway(
    db: str, tmp_path: Path, overrides: dict[str, Any] | None = None
) -> AsyncIterator[Hooks]:
    receiver = WebhookReceiver()
    dns = dict(DNS)
    settings = {"webhook_worker": False} | (overrides or {})
    async for gw in _gateway(db, tmp_path, settings, {"receiver": receiver}):

        async def resolve(host: str, port: int) -> list[str]:
            if host not in dns:
                raise OSError(f"unknown host {host}")
            return dns[host]

        gw.res.webhooks = gw.res.webhooks.resolving_with(resolve)
        gw.res.generator = replace(gw.res.generator, events=gw.res.webhooks.events)
        yield Hooks(gw, receiver, dns)
