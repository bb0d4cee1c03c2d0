"""The catalog pages (issue #13): the quote endpoint charges what it says, `/models` filters,
sorts and searches on the server, `/pricing` and its CSV, the home page, own links."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from image_router.kit.money import usd_to_credits
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
VIDEO = "/v1/openai/videos/generations"


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (30, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Case:
    model: str
    params: dict[str, Any] = field(default_factory=dict)  # generation fields, quoted alike
    images: int = 0
    usd: str = "0"  # what the quote says (and, being exact, what is charged)
    video: bool = False


EXACT = [
    Case("openai/dall-e-2", {"size": "512x512"}, usd="0.016"),
    Case("openai/dall-e-3", {"size": "1792x1024", "quality": "high"}, usd="0.12"),
    Case("openai/dall-e-3", {}, usd="0.04"),
    Case("test/test", {"size": "256x256", "n": 2}, usd="0"),
    Case("ideogram-ai/ideogram-v3", {"quality": "high"}, usd="0.09"),
    Case("reve/reve-1", {}, usd="0.025"),
    Case("reve/reve-1", {"quality": "low"}, images=1, usd="0.01"),
    Case("reve/reve-1", {}, images=2, usd="0.04"),
    Case("google/veo-3", {"seconds": "8"}, usd="3.2", video=True),
    Case("google/veo-3-fast", {"seconds": "6"}, usd="0.9", video=True),
    Case("tencent/hunyuan-video-1.5", {"size": "1280x720", "seconds": "8"}, usd="0.32", video=True),
]


def case_id(case: Case) -> str:
    return f"{case.model}-{'-'.join(f'{k}={v}' for k, v in case.params.items())}-{case.images}i"


async def generate(gw: Gateway, key: str, case: Case) -> Any:
    fields = {"model": case.model, "prompt": "a lighthouse at dusk", **case.params}
    path = VIDEO if case.video else IMAGE
    if case.images:
        files = [("image[]", (f"{i}.png", png(), "image/png")) for i in range(case.images)]
        data = {k: str(v) for k, v in fields.items()}
        return await gw.post(path, key, data=data, files=files)
    return await gw.post(path, key, json=fields)


async def quote(gw: Gateway, model: str, **params: Any) -> Any:
    return await gw.client.get(f"/v1/models/{model}/quote", params=params)


@pytest.mark.parametrize("case", EXACT, ids=[case_id(c) for c in EXACT])
async def test_the_quote_is_what_the_generation_charges(
    vendors_gateway: Gateway, case: Case
) -> None:
    gw = vendors_gateway
    quoted = await quote(gw, case.model, images=case.images, **case.params)
    assert quoted.status_code == 200, quoted.text
    body = quoted.json()
    assert body["exact"] is True
    assert body["credits"] == usd_to_credits(case.usd)
    assert body["cost"] == pytest.approx(float(case.usd))

    account, key = await gw.account("10")
    generated = await generate(gw, key, case)

    assert generated.status_code == 200, generated.text
    assert generated.json()["cost"] == body["cost"]
    [row] = await gw.generations()
    assert row["cost"] == body["credits"]
    assert await gw.balance(account) == usd_to_credits("10") - body["credits"]


async def test_a_vendor_reported_price_is_quoted_as_its_most(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    # google/gemini-2.5-flash goes to gemini (a fixed $0.039) with every vendor configured;
    # qwen/qwen-image goes to runware, which reports its cost.
    body = (await quote(gw, "qwen/qwen-image")).json()
    assert body["exact"] is False
    assert body["pricing_type"] == "post_generation"
    assert body["provider"] == "runware"
    _, key = await gw.account("5")
    generated = await gw.post(IMAGE, key, json={"model": "qwen/qwen-image", "prompt": "a barn"})
    assert generated.status_code == 200, generated.text
    [row] = await gw.generations()
    assert row["held"] == body["credits"]
    assert 0 < row["cost"] <= body["credits"]


async def test_the_quote_refuses_what_the_generation_refuses(gateway: Gateway) -> None:
    too_big = await quote(gateway, "openai/dall-e-3", size="9000x9000")
    assert too_big.status_code == 400
    _, key = await gateway.account("5")
    refused = await gateway.post(
        IMAGE, key, json={"model": "openai/dall-e-3", "prompt": "x", "size": "9000x9000"}
    )
    assert refused.status_code == 400
    assert too_big.json()["error"]["message"] == refused.json()["error"]["message"]

    assert (await quote(gateway, "openai/dall-e-3", quality="ultra")).status_code == 400
    assert (await quote(gateway, "openai/dall-e-3", n=2)).status_code == 400
    assert (await quote(gateway, "openai/dall-e-3", images=-1)).status_code == 400
    missing = await quote(gateway, "nobody/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"


async def test_a_model_without_a_configured_vendor_is_quoted_from_the_catalog(
    gateway: Gateway,
) -> None:
    body = (await quote(gateway, "google/veo-3", seconds="4")).json()
    assert body["available"] is False
    assert body["credits"] == usd_to_credits("1.6")
    assert body["seconds"] == 4


async def test_the_quote_is_documented(gateway: Gateway) -> None:
    schema = (await gateway.client.get("/openapi.json")).json()
    operation = schema["paths"]["/v1/models/{model_id}/quote"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"size", "quality", "seconds", "n"}
    assert "401" not in operation["responses"]  # public, like the model listings
    # The model listing still answers for a model id.
    assert (await gateway.client.get("/v1/models/openai/dall-e-3")).status_code == 200


# ------------------------------------------------------------------------------ /models


def card_ids(html: str) -> list[str]:
    marker = 'data-model="'
    return [part.split('"', 1)[0] for part in html.split(marker)[1:]]


async def models_page(gw: Gateway, **params: Any) -> list[str]:
    page = await gw.client.get("/models", params=params)
    assert page.status_code == 200, page.text
    return card_ids(page.text)


async def test_models_lists_the_catalog_marking_what_is_unavailable(gateway: Gateway) -> None:
    page = await gateway.client.get("/models")
    ids = card_ids(page.text)
    assert len(ids) == len(gateway.res.catalog.models)
    assert "Not available on this server" in page.text  # no runware key here
    assert ids == sorted(ids, key=str.lower)  # by name unless asked otherwise


@pytest.mark.parametrize("gateway_overrides", [{"models_page_hide_unavailable": True}])
async def test_an_operator_can_hide_unavailable_models(gateway: Gateway) -> None:
    ids = await models_page(gateway)
    assert set(ids) == {
        spec.id
        for spec in gateway.res.catalog.models.values()
        if any(r.provider in gateway.res.enabled for r in spec.routes)
    }
    assert "openai/dall-e-3" in ids and "google/veo-3" not in ids
    assert (await gateway.client.get("/models/google/veo-3")).status_code == 404


async def test_models_search_filters_and_sorts(gateway: Gateway) -> None:
    assert await models_page(gateway, q="DALL-E") == ["openai/dall-e-2", "openai/dall-e-3"]
    videos = await models_page(gateway, type="video")
    assert videos and all(gateway.res.catalog.models[i].modality == "video" for i in videos)
    assert set(await models_page(gateway, vendor="test")) == {"test/test", "ir/test-video"}
    free = await models_page(gateway, free="1")
    assert "test/test" in free and all(
        i.endswith(":free") or i.startswith(("test/", "ir/")) for i in free
    )
    takes = await models_page(gateway, images="1", q="openai/")
    assert "openai/gpt-image-1" in takes and "openai/dall-e-3" not in takes
    # A price range keeps the models whose published range meets it.
    assert await models_page(gateway, q="dall-e", min_price="0.1") == ["openai/dall-e-3"]
    assert await models_page(gateway, q="dall-e", max_price="0.02") == ["openai/dall-e-2"]
    by_price = await models_page(gateway, q="dall-e", sort="price")
    assert by_price == ["openai/dall-e-2", "openai/dall-e-3"]
    newest = await models_page(gateway, q="openai/", sort="newest")
    dates = [gateway.res.catalog.models[i].release_date or "" for i in newest]
    assert dates == sorted(dates, reverse=True)
    # Nonsense is ignored, with a word about it, never an error.
    page = await gateway.client.get("/models", params={"min_price": "cheap", "sort": "x"})
    assert page.status_code == 200 and "is not a price" in page.text


async def test_popular_sorts_by_last_weeks_successful_generations(gateway: Gateway) -> None:
    _, key = await gateway.account("5")
    for model, times in (("openai/dall-e-3", 1), ("openai/dall-e-2", 2)):
        for _ in range(times):
            answer = await gateway.post(IMAGE, key, json={"model": model, "prompt": "a barn"})
            assert answer.status_code == 200, answer.text
    ids = await models_page(gateway, sort="popular")
    assert ids[:2] == ["openai/dall-e-2", "openai/dall-e-3"]
    home = await gateway.client.get("/")
    assert "Popular this week" in home.text
    assert home.text.index('data-model="openai/dall-e-2"') < home.text.index(
        'data-model="openai/dall-e-3"'
    )


async def test_a_model_page_prices_the_request_without_javascript(gateway: Gateway) -> None:
    page = await gateway.client.get(
        "/models/openai/dall-e-3", params={"size": "1024x1792", "quality": "high"}
    )
    assert page.status_code == 200
    assert 'data-credits="1200"' in page.text  # $0.12
    assert "/playground?model=openai/dall-e-3" in page.text
    refused = await gateway.client.get("/models/openai/dall-e-3", params={"size": "12x12"})
    assert refused.status_code == 200 and "is not supported by" in refused.text
    assert (await gateway.client.get("/models/nobody/nothing")).status_code == 404


# ----------------------------------------------------------------------------- /pricing


async def test_pricing_shows_credits_caps_limits_and_top_ups(gateway: Gateway) -> None:
    page = await gateway.client.get("/pricing")
    assert page.status_code == 200
    text = page.text
    assert "$0.0001" in text and "Failures are free" in text
    assert "50 free requests a day" in text and "10 free requests a day" in text
    assert "takes no card payments" in text  # no Stripe, no SUPPORT_EMAIL
    by_price = await gateway.client.get("/pricing", params={"sort": "price", "order": "desc"})
    assert 'aria-sort="descending"' in by_price.text


@pytest.mark.parametrize(
    "gateway_overrides",
    [{"support_email": "credits@example.com", "rate_limits_enabled": True}],
)
async def test_pricing_names_the_operators_contact_and_the_rate_table(gateway: Gateway) -> None:
    text = (await gateway.client.get("/pricing")).text
    assert 'href="mailto:credits@example.com"' in text
    # $10 of balance: 40 image requests a second ($0.25 steps), 1 video request ($6 steps).
    assert '<td>$10</td><td class="num">40</td><td class="num">1</td>' in text


async def test_the_price_table_downloads_as_csv(gateway: Gateway) -> None:
    answer = await gateway.client.get("/pricing.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert {r["model"] for r in rows} == set(gateway.res.catalog.models)
    dalle2 = next(r for r in rows if r["model"] == "openai/dall-e-2")
    assert (dalle2["vendor"], dalle2["available"], dalle2["min_usd"], dalle2["max_usd"]) == (
        "openai",
        "yes",
        "0.016",
        "0.02",
    )
    assert dalle2["unit"] == "per image" and dalle2["depends_on"] == "by size"


# ------------------------------------------------------------------------ home, own links


async def test_home_has_a_first_call_on_this_server(gateway: Gateway) -> None:
    home = await gateway.client.get("/")
    assert home.status_code == 200
    # PUBLIC_URL is http://gateway.test in these tests.
    assert "curl http://gateway.test/v1/openai/images/generations" in home.text
    assert 'baseURL: "http://gateway.test/v1/openai"' in home.text
    assert 'href="/playground"' in home.text
    assert "Popular models" in home.text  # nobody generated anything: the curated list


async def test_error_messages_link_to_this_servers_pages(gateway: Gateway) -> None:
    _, key = await gateway.account("0")
    refused = await gateway.post(
        IMAGE, key, json={"model": "openai/gpt-image-1.5:free", "prompt": "x", "quality": "low"}
    )
    message = refused.json()["error"]["message"]
    assert "http://gateway.test/playground" in message
    assert "http://gateway.test/pricing" in message
    assert "imagerouter.io" not in message


@pytest.mark.parametrize("gateway_overrides", [{"pricing_url": "https://example.com/prices"}])
async def test_the_operator_can_point_links_elsewhere(gateway: Gateway) -> None:
    _, key = await gateway.account("0.001")
    refused = await gateway.post(IMAGE, key, json={"model": "openai/dall-e-2", "prompt": "x"})
    assert refused.status_code == 402
    assert refused.json()["error"]["message"].endswith("https://example.com/prices")
