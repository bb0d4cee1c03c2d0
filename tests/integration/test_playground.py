"""The playground's server side: the human check before a website token, the free count,
the generation id of a result, and the page's model facts."""

from __future__ import annotations

import base64
import json
import re
from datetime import timedelta
from typing import Any

import pytest
from altcha import solve_challenge_v1

from image_router.kit.clock import utcnow
from tests.conftest import Gateway
from tests.integration.test_limits_free_tier import log_usage
from tests.integration.web_helpers import sign_up

IMAGE = "/v1/openai/images/generations"
META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
PAGE_DATA = re.compile(r'<script type="application/json" id="pg-data">(.*?)</script>', re.S)
CHECKED = {"human_check": "altcha", "human_check_max_number": 2000}


def _solve(challenge: dict[str, Any]) -> str:
    """What the browser's solver sends: the challenge with the number that solves it."""
    solution = solve_challenge_v1(
        challenge["challenge"], challenge["salt"], challenge["algorithm"], challenge["maxnumber"]
    )
    assert solution is not None
    payload = {
        "algorithm": challenge["algorithm"],
        "challenge": challenge["challenge"],
        "number": solution.number,
        "salt": challenge["salt"],
        "signature": challenge["signature"],
    }
    return base64.b64encode(json.dumps(payload).encode()).decode()


async def _challenge(gateway: Gateway) -> dict[str, Any]:
    response = await gateway.client.get("/v1/web-token/challenge")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("gateway_overrides", [CHECKED])
async def test_a_guest_proves_to_be_a_person_once_per_token(any_gateway: Gateway) -> None:
    refused = await any_gateway.client.post("/v1/web-token")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "human_check_required"

    challenge = await _challenge(any_gateway)
    assert challenge["required"] is True and challenge["maxnumber"] == 2000
    payload = _solve(challenge)
    minted = await any_gateway.client.post("/v1/web-token", json={"altcha": payload})
    assert minted.status_code == 200, minted.text
    assert (await any_gateway.post("/v1/auth/test", minted.json()["token"])).status_code == 200

    # A solved challenge works once.
    replayed = await any_gateway.client.post("/v1/web-token", json={"altcha": payload})
    assert replayed.status_code == 403
    assert replayed.json()["error"]["code"] == "human_check_replayed"


@pytest.mark.parametrize("gateway_overrides", [CHECKED])
async def test_a_wrong_or_forged_solution_is_refused(gateway: Gateway) -> None:
    challenge = await _challenge(gateway)
    fields = json.loads(base64.b64decode(_solve(challenge)))
    wrong = base64.b64encode(json.dumps({**fields, "number": fields["number"] + 1}).encode())
    # A challenge of our own making, with a later expiry spliced in, loses its signature.
    later = fields["salt"].replace("expires=", "expires=9")
    forged = base64.b64encode(json.dumps({**fields, "salt": later}).encode())
    for payload in (wrong.decode(), forged.decode(), "not base64!", "e30="):
        response = await gateway.client.post("/v1/web-token", json={"altcha": payload})
        assert response.status_code == 403, payload
        assert response.json()["error"]["code"] == "human_check_failed"
    bad_body = await gateway.client.post("/v1/web-token", content=b"{not json")
    assert bad_body.status_code == 400


@pytest.mark.parametrize("gateway_overrides", [CHECKED])
async def test_an_account_with_credit_needs_no_check(gateway: Gateway) -> None:
    await sign_up(gateway.client, "funded@example.com")
    page = await gateway.client.get("/playground")
    csrf = META_CSRF.search(page.text)
    assert csrf is not None
    headers = {"X-CSRF-Token": csrf.group(1)}
    unfunded = await gateway.client.post("/v1/web-token", headers=headers)
    assert unfunded.json()["error"]["code"] == "human_check_required"
    [row] = await gateway.rows(
        "SELECT id FROM accounts WHERE email_bidx = :e",
        e=gateway.res.vault.email_index("funded@example.com"),
    )
    await _grant(gateway, row["id"])
    funded = await gateway.client.post("/v1/web-token", headers=headers)
    assert funded.status_code == 200, funded.text


async def _grant(gateway: Gateway, account_id: str) -> None:
    from image_router.db.session import unit_of_work
    from image_router.ledger import service as ledger

    async with unit_of_work(gateway.res.engine) as conn:
        await ledger.grant(conn, account_id, 10_000, reason="test")


async def test_the_check_can_be_turned_off(gateway: Gateway) -> None:
    assert (await _challenge(gateway)) == {"required": False}
    assert (await gateway.client.post("/v1/web-token")).status_code == 200


async def test_the_free_count_of_a_guest_is_its_address(any_gateway: Gateway) -> None:
    guest = await any_gateway.client.get("/v1/free-tier")
    assert guest.json() | {"resets_at": None} == {
        "limit": 10,
        "used": 0,
        "remaining": 10,
        "funded": False,
        "resets_at": None,
    }
    account, _ = await any_gateway.account()
    # Another address's guest use does not count here; this address's does.
    await log_usage(any_gateway, 5, account_id=account, at=utcnow(), ip="198.51.100.9")
    await log_usage(any_gateway, 3, account_id=account, at=utcnow())
    await log_usage(any_gateway, 4, account_id=account, at=utcnow() - timedelta(days=1))
    body = (await any_gateway.client.get("/v1/free-tier")).json()
    assert (body["used"], body["remaining"]) == (3, 7)
    page = await any_gateway.client.get("/playground")
    assert "7 of 10 free generations left today" in page.text


async def test_a_result_names_its_usage_row(gateway: Gateway) -> None:
    _, key = await gateway.account("1")
    response = await gateway.post(IMAGE, key, json={"model": "test/test", "prompt": "a cat"})
    assert response.status_code == 200
    generation_id = response.headers["x-generation-id"]
    [row] = await gateway.rows("SELECT status FROM generations WHERE id = :i", i=generation_id)
    assert row["status"] == "success"


async def test_the_page_carries_the_catalog_facts(gateway: Gateway) -> None:
    page = await gateway.client.get("/playground")
    assert page.status_code == 200
    found = PAGE_DATA.search(page.text)
    assert found is not None
    data = json.loads(found.group(1))
    models = {m["id"]: m for m in data["models"]}
    default = models[data["model"]]  # a free image model, a `:free` one first
    assert default["free"] and default["free_tier"] and default["modality"] == "image"
    assert models["test/test"]["max_n"] == 4 and models["test/test"]["free"]
    assert models["ir/test-video"]["seconds"] == [5]
    gpt = models["openai/gpt-image-1"]
    assert not gpt["free"] and gpt["max_images"] >= 1 and gpt["mask"]
    assert gpt["qualities"] == ["auto", "low", "medium", "high"]
    assert "1536x1024" in gpt["sizes"]
    assert data["human_check"] is False and data["signed_in"] is False

    chosen = await gateway.client.get("/playground", params={"model": "openai/gpt-image-1"})
    found = PAGE_DATA.search(chosen.text)
    assert found is not None
    assert json.loads(found.group(1))["model"] == "openai/gpt-image-1"
    assert '<option value="openai/gpt-image-1" selected>' in chosen.text
