"""A browser refused by the general limiter gets a page with the wait, not raw JSON; API
clients keep the JSON error (spec §2.10)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import Gateway

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    return {
        "rate_limits_enabled": True,
        "rate_limit_general": "3/minute",
        "trusted_proxy_count": 1,
    }


def source(ip: str, **headers: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.100.250, {ip}", **headers}


async def test_a_refused_page_answers_html_with_the_wait(gateway: Gateway) -> None:
    browser = source("203.0.113.30", Accept=BROWSER_ACCEPT)
    answers = [await gateway.client.get("/signin", headers=browser) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    refused = answers[-1]
    assert refused.headers["content-type"] == "text/html; charset=utf-8"
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= 60
    hint = re.search(r"Please wait <strong>(\d+) seconds?</strong>", refused.text)
    assert hint is not None and int(hint.group(1)) == wait
    assert '<html lang="en">' in refused.text and "Too many requests" in refused.text


async def test_api_clients_are_still_refused_in_json(gateway: Gateway) -> None:
    for accept in ("application/json", "*/*"):
        here = source(f"203.0.113.{31 if accept == '*/*' else 32}", Accept=accept)
        answers = [await gateway.client.get("/v1/models", headers=here) for _ in range(4)]
        refused = answers[-1]
        assert refused.status_code == 429
        assert refused.headers["content-type"] == "application/json"
        assert refused.json()["error"]["type"] == "rate_limit_error"
