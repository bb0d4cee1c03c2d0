"""The composition root builds the generation use case with the gateway's own adapters and
the operator's generation settings (resources.build_generator)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
OVERRIDES = {
    "pricing_url": "https://prices.example/top-up",
    "image_deadline_s": 11.0,
    "video_deadline_s": 22.0,
    "attempt_timeout_s": 3.0,
    "retry_backoff_s": 0.5,
    "retention_prompts_days": 4,
    "retention_outputs_hours": 5,
}


@pytest.mark.parametrize("gateway_overrides", [OVERRIDES])
async def test_the_generator_runs_by_the_operators_settings(gateway: Gateway) -> None:
    policy = gateway.res.generator.policy
    assert {name: getattr(policy, name) for name in OVERRIDES} == OVERRIDES
    assert policy.deadline_s("video") == 22.0 and policy.deadline_s("image") == 11.0
    assert policy.routing(11.0).attempt_timeout_s == 3.0


@pytest.mark.parametrize("gateway_overrides", [{"pricing_url": "https://prices.example/x"}])
async def test_an_empty_balance_is_sent_to_the_configured_pricing_page(gateway: Gateway) -> None:
    _, key = await gateway.account("0")
    body: dict[str, Any] = {
        "model": "openai/dall-e-2",
        "prompt": "a lighthouse",
        "size": "1024x1024",
    }

    response = await gateway.post(IMAGE, key, json=body)

    assert response.status_code == 402, response.text
    assert response.json()["error"]["message"].endswith(
        "please topup your ImageRouter account: https://prices.example/x"
    )


async def test_the_generator_shares_the_gateways_adapters(gateway: Gateway) -> None:
    res, generator = gateway.res, gateway.res.generator
    # One of each per process: the circuits the status page shows are the ones requests
    # feed, and files are stored where the file endpoint serves them from.
    assert generator.health is res.health
    assert generator.store is res.store
    assert generator.engine is res.engine
    assert generator.providers is res.providers
    assert generator.catalog is res.catalog
    assert generator.outputs is res.outputs
    assert generator.vault is res.vault
