"""Fallback routes that cost more than the first one (issue #10 §1): tried whenever the
account can pay, the hold extended first; charged the served route's price, once; skipped,
with the reason recorded and no overdraft, when the account (or its key's spend limit)
cannot cover the difference; the extended hold given back whole by a release or by the
reconciler."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from PIL import Image

from image_router.account import service as accounts
from image_router.db.session import unit_of_work
from image_router.generation.holds import Hold
from image_router.generation.recovery import release_expired_holds
from image_router.kit.clock import utcnow
from image_router.kit.money import usd_to_credits
from image_router.ledger import service as ledger
from image_router.usage import service as usage
from tests.conftest import Gateway, processing_row
from tests.fakes.upstream import FakeVendor

IMAGE = "/v1/openai/images/generations"
VIDEO = "/v1/openai/videos/generations"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    model: str
    first: str  # the vendor of the first route, made to fail
    fallback: str  # the dearer vendor that must serve
    first_quote: str  # USD held for the first route
    fallback_quote: str  # USD the hold must grow to before the fallback is tried
    charged: str  # USD the fallback's price comes to (from its fake's reported usage)
    path: str = IMAGE
    upload: bool = False


CASES = [
    Case("bria/remove-background", "runware", "deepinfra", "0.0006", "0.018", "0.018", upload=True),
    # Runware's fake reports a cost of $0.0013: charged up to the route's published $0.0006.
    Case("stabilityai/sdxl-turbo", "deepinfra", "runware", "0.0002", "0.0006", "0.0006"),
    # NanoGPT's fake reports $0.028; the route adds 5 %.
    Case("leonardoai/lucid-origin", "replicate", "nanogpt", "0.02", "0.03", "0.0294"),
    Case("google/imagen-3", "geminiImagen", "vertex", "0.03", "0.04", "0.04"),
    # Runware's fake reports $0.0013, within the route's published $0.039.
    Case("google/gemini-2.5-flash", "gemini", "runware", "0.035", "0.039", "0.0013"),
    # Replicate's fake reports 1.23 s of predict time, at $0.001525 a second.
    Case("Tongyi-MAI/Z-Image-Turbo", "runware", "replicate", "0.0115", "0.0667", "0.0019"),
    Case("qwen/qwen-image", "runware", "fal", "0.0122", "0.02", "0.02"),
    Case("tencent/hunyuan-image-3", "nanogpt", "replicate", "0.05", "0.08", "0.08"),
    Case("google/veo-3.1-fast", "gemini", "vertex", "0.6", "1.2", "1.2", path=VIDEO),
]


def fake_of(gw: Gateway, provider: str) -> FakeVendor:
    """The fake serving `provider` (both Google AI providers share one base URL)."""
    return gw.fakes[gw.res.providers[provider].base_url.split("/")[3]]


async def generate(gw: Gateway, key: str, case: Case) -> Any:
    if case.upload:
        return await gw.post(
            case.path,
            key,
            data={"model": case.model, "prompt": "remove it"},
            files={"image": ("a.png", png(), "image/png")},
        )
    return await gw.post(case.path, key, json={"model": case.model, "prompt": "a red barn"})


async def books_balance(gw: Gateway, account: str) -> None:
    assert await gw.ledger_sum(account) == await gw.balance(account)


@pytest.mark.parametrize("case", CASES, ids=[c.model for c in CASES])
async def test_a_dearer_fallback_serves_when_the_first_route_fails(
    vendors_gateway: Gateway, case: Case
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("5")
    fake_of(gw, case.first).fail_next(503)

    response = await generate(gw, key, case)

    assert response.status_code == 200, response.text
    [row] = await gw.generations()
    assert row["provider"] == case.fallback
    assert [(a["provider"], a["kind"]) for a in row["attempts"]] == [(case.first, "unavailable")]
    charged = usd_to_credits(case.charged)
    assert row["cost"] == charged
    assert response.json()["cost"] == pytest.approx(float(case.charged))
    assert await gw.balance(account) == usd_to_credits("5") - charged
    # The row records the extended hold (what the reconciler would give back).
    assert row["held"] == usd_to_credits(case.fallback_quote) > usd_to_credits(case.first_quote)
    await books_balance(gw, account)


QWEN = {"model": "qwen/qwen-image", "prompt": "a red barn"}  # runware ≤ $0.0122, then fal $0.02


async def test_a_fallback_the_account_cannot_pay_is_skipped_without_overdraft(
    any_vendors_gateway: Gateway,
) -> None:
    gw = any_vendors_gateway
    account, key = await gw.account("0.015")
    gw.fakes["runware"].fail_next(503)

    response = await gw.post(IMAGE, key, json=QWEN)

    assert response.status_code == 502, response.text
    assert not [r for r in gw.fakes["fal"].requests if r.method == "POST"]
    [row] = await gw.generations()
    assert [(a["provider"], a["kind"]) for a in row["attempts"]] == [
        ("runware", "unavailable"),
        ("fal", "skipped"),
    ]
    assert "balance cannot cover" in row["attempts"][1]["message"]
    assert row["status"] == "error" and row["cost"] == 0
    assert await gw.balance(account) == usd_to_credits("0.015")
    await books_balance(gw, account)


async def test_a_fallback_past_the_keys_spend_limit_is_skipped(
    any_vendors_gateway: Gateway,
) -> None:
    gw = any_vendors_gateway
    account, _ = await gw.account("5")
    async with unit_of_work(gw.res.engine) as conn:
        _, key = await accounts.create_key(
            conn, account, "limited", spend_limit=usd_to_credits("0.015")
        )
    gw.fakes["runware"].fail_next(503)

    response = await gw.post(IMAGE, key, json=QWEN)

    assert response.status_code == 502, response.text
    assert not [r for r in gw.fakes["fal"].requests if r.method == "POST"]
    [row] = await gw.generations()
    assert row["attempts"][-1]["kind"] == "skipped"
    assert "spend limit" in row["attempts"][-1]["message"]
    assert await gw.balance(account) == usd_to_credits("5")
    await books_balance(gw, account)


async def start_generation(gw: Gateway, account: str, held: int, *, expired: bool) -> str:
    """A processing usage row holding `held` credits, as a request's hold leaves it."""
    generation_id = f"gen-{held}-{expired}"
    deadline = utcnow() + (timedelta(hours=-1) if expired else timedelta(hours=1))
    async with unit_of_work(gw.res.engine) as conn:
        assert await ledger.hold(conn, account, held, generation_id=generation_id)
        await usage.start(
            conn,
            processing_row(
                generation_id,
                account,
                held,
                deadline,
                model="qwen/qwen-image",
                provider="runware",
            ),
        )
    return generation_id


async def test_the_reconciler_gives_back_an_extended_hold_whole(any_gateway: Gateway) -> None:
    """A worker dies after extending its hold: the reconciler releases the extended amount."""
    gw = any_gateway
    account, _ = await gw.account("1")
    generation_id = await start_generation(gw, account, 100, expired=True)
    hold = Hold(gw.res.engine, account, generation_id, 100)

    assert await hold.cover(250) is None

    assert await gw.balance(account) == usd_to_credits("1") - 250
    [row] = await gw.generations()
    assert row["held"] == 250
    assert await release_expired_holds(gw.res.engine) == 1
    assert await gw.balance(account) == usd_to_credits("1")
    await books_balance(gw, account)


async def test_a_hold_already_released_is_not_extended(any_gateway: Gateway) -> None:
    """The reconciler closed the row first: the extension is refused and takes nothing."""
    gw = any_gateway
    account, _ = await gw.account("1")
    generation_id = await start_generation(gw, account, 100, expired=True)
    assert await release_expired_holds(gw.res.engine) == 1

    reason = await Hold(gw.res.engine, account, generation_id, 100).cover(250)

    assert reason is not None and "already closed" in reason
    assert await gw.balance(account) == usd_to_credits("1")
    await books_balance(gw, account)


async def test_an_extension_never_overdraws(any_gateway: Gateway) -> None:
    gw = any_gateway
    account, _ = await gw.account("0.02")  # 200 credits
    generation_id = await start_generation(gw, account, 150, expired=False)
    hold = Hold(gw.res.engine, account, generation_id, 150)

    reason = await hold.cover(201 + 150)

    assert reason is not None and "balance cannot cover" in reason
    assert hold.amount == 150
    assert await gw.balance(account) == 50
    [row] = await gw.generations()
    assert row["held"] == 150
    assert await hold.cover(200) is None  # 50 more: exactly what is left
    assert await gw.balance(account) == 0
    await books_balance(gw, account)
