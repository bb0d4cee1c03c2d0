"""Steering, end to end through the HTTP API with vendor fakes: the catalog's route
conditions (spec §7.1) and the client's `provider` preferences — asserted on which vendor
was called, the usage row's routing record, and what was charged."""

from __future__ import annotations

import io
import json

from PIL import Image

from image_router.kit.money import usd_to_credits
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
VIDEO = "/v1/openai/videos/generations"
GROK_IMAGE = {"model": "xAI/grok-imagine-image", "prompt": "a red barn"}
GROK_VIDEO = {"model": "xAI/grok-imagine-video", "prompt": "a red barn", "seconds": "2"}
# Three routes: runware (quotes $0.0115), replicate ($0.0667), fal ($0.005).
ZIMAGE = {"model": "Tongyi-MAI/Z-Image-Turbo", "prompt": "a red barn", "size": "1024x1024"}
# Two routes: runware first, deepinfra second.
FLUX = {"model": "black-forest-labs/FLUX-1.1-pro", "prompt": "a red barn", "size": "1024x1024"}


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 20, 20)).save(out, "PNG")
    return out.getvalue()


def posts(gateway: Gateway, vendor: str) -> int:
    return sum(1 for r in gateway.fakes[vendor].requests if r.method == "POST")


async def test_grok_image_edit_at_auto_size_goes_to_xai(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    _, key = await gw.account("1")
    files = {"image": ("in.png", png(), "image/png")}
    response = await gw.post(IMAGE, key, data=GROK_IMAGE, files=files)
    assert response.status_code == 200, response.text
    assert (posts(gw, "grok"), posts(gw, "runware")) == (1, 0)
    [row] = await gw.generations()
    assert row["provider"] == "grok"
    assert row["attempts"] == [
        {
            "kind": "routing",
            "preferences": {},
            "candidates": ["grok/grok-imagine-image", "runware/xai:grok-imagine@image"],
            "reason": "catalog prefer_when",
            "served": "grok/grok-imagine-image",
        }
    ]


async def test_grok_image_keeps_runware_with_a_size_or_without_an_image(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    _, key = await gw.account("1")
    files = {"image": ("in.png", png(), "image/png")}
    sized = {**GROK_IMAGE, "size": "1024x1024"}
    assert (await gw.post(IMAGE, key, data=sized, files=files)).status_code == 200
    assert (await gw.post(IMAGE, key, json=GROK_IMAGE)).status_code == 200
    assert posts(gw, "grok") == 0
    rows = await gw.generations()
    assert [(r["provider"], r["attempts"]) for r in rows] == [("runware", []), ("runware", [])]


async def test_grok_video_at_720x480_goes_to_xai(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    _, key = await gw.account("5")
    response = await gw.post(VIDEO, key, json={**GROK_VIDEO, "size": "720x480"})
    assert response.status_code == 200, response.text
    assert (posts(gw, "grok"), posts(gw, "runware")) == (1, 0)
    response = await gw.post(VIDEO, key, json={**GROK_VIDEO, "size": "1280x720"})
    assert response.status_code == 200, response.text
    assert posts(gw, "grok") == 1
    assert posts(gw, "runware") > 0  # the task, then its polls
    rows = await gw.generations()
    assert [r["provider"] for r in rows] == ["grok", "runware"]
    assert rows[0]["attempts"][0]["reason"] == "catalog prefer_when"


async def test_the_clients_order_picks_the_vendor_and_is_recorded(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    body = {**ZIMAGE, "provider": {"order": ["fal"]}}
    response = await gw.post(IMAGE, key, json=body)
    assert response.status_code == 200, response.text
    assert (posts(gw, "fal"), posts(gw, "runware"), posts(gw, "replicate")) == (1, 0, 0)
    [row] = await gw.generations()
    assert row["provider"] == "fal"
    assert row["attempts"] == [
        {
            "kind": "routing",
            "preferences": {"order": ["fal"]},
            "candidates": [
                "fal/fal-ai/z-image/turbo",
                "runware/runware:z-image@turbo",
                "replicate/prunaai/z-image-turbo:7ea16386290ff5977c7812e66e462d7ec3954d8e007a8cd18ded3e7d41f5d7cf",
            ],
            "reason": "client order",
            "served": "fal/fal-ai/z-image/turbo",
        }
    ]
    # fal's fixed price, exactly once.
    assert await gw.balance(account) == usd_to_credits("1") - usd_to_credits("0.005")


async def test_multipart_takes_the_preferences_as_a_json_string(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    _, key = await gw.account("1")
    data = {**ZIMAGE, "provider": json.dumps({"only": ["replicate"]})}
    response = await gw.client.post(
        IMAGE,
        headers={"Authorization": f"Bearer {key}"},
        files={k: (None, v) for k, v in data.items()},
    )
    assert response.status_code == 200, response.text
    assert (posts(gw, "replicate"), posts(gw, "runware"), posts(gw, "fal")) == (1, 0, 0)


async def test_ignore_and_sort_by_price(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    _, key = await gw.account("1")
    ignored = {**ZIMAGE, "provider": {"ignore": ["runware"]}}
    assert (await gw.post(IMAGE, key, json=ignored)).status_code == 200
    cheapest = {**ZIMAGE, "provider": {"sort": "price"}}
    assert (await gw.post(IMAGE, key, json=cheapest)).status_code == 200
    rows = await gw.generations()
    assert [r["provider"] for r in rows] == ["replicate", "fal"]
    assert rows[1]["attempts"][0]["reason"] == "client sort by price"
    assert posts(gw, "runware") == 0


async def test_sort_by_latency_follows_the_learned_health(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    _, key = await gw.account("1")
    await gw.res.health.record("fal/fal-ai/z-image/turbo", True, 2.0)
    await gw.res.health.record("runware/runware:z-image@turbo", True, 0.5)
    body = {**ZIMAGE, "provider": {"sort": "latency"}, "size": "512x512"}
    assert (await gw.post(IMAGE, key, json=body)).status_code == 200
    [row] = await gw.generations()
    assert row["provider"] == "runware"
    assert row["attempts"][0]["candidates"][:2] == [
        "runware/runware:z-image@turbo",
        "fal/fal-ai/z-image/turbo",
    ]


async def test_max_price_skips_dearer_routes_and_refuses_when_none_is_left(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    capped = {**ZIMAGE, "provider": {"max_price": 0.01}}
    assert (await gw.post(IMAGE, key, json=capped)).status_code == 200
    [row] = await gw.generations()
    assert row["provider"] == "fal"
    assert row["attempts"][0]["candidates"] == ["fal/fal-ai/z-image/turbo"]

    response = await gw.post(IMAGE, key, json={**ZIMAGE, "provider": {"max_price": "0.001"}})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "provider"
    assert error["code"] == "no_route_fits_preferences"
    assert "fal: costs up to $0.005, above max_price $0.001" in error["message"]
    assert len(await gw.generations()) == 1  # nothing held, nothing logged
    assert await gw.balance(account) == usd_to_credits("1") - usd_to_credits("0.005")
    assert (posts(gw, "fal"), posts(gw, "runware"), posts(gw, "replicate")) == (1, 0, 0)


async def test_without_fallbacks_a_failing_first_route_is_not_replaced(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    gw.fakes["runware"].fail_next(503)
    body = {**FLUX, "provider": {"allow_fallbacks": False}}
    response = await gw.post(IMAGE, key, json=body)
    assert response.status_code == 502
    assert posts(gw, "deepinfra") == 0
    [row] = await gw.generations()
    assert [(a["kind"], a.get("served")) for a in row["attempts"]] == [
        ("routing", None),
        ("unavailable", None),
    ]
    assert row["attempts"][0]["candidates"] == ["runware/bfl:2@1"]
    assert await gw.balance(account) == usd_to_credits("1")


async def test_a_fallback_says_so_in_the_routing_record(vendors_gateway: Gateway) -> None:
    gw = vendors_gateway
    _, key = await gw.account("1")
    gw.fakes["runware"].fail_next(503)
    body = {**FLUX, "provider": {"order": ["runware"]}}
    response = await gw.post(IMAGE, key, json=body)
    assert response.status_code == 200, response.text
    [row] = await gw.generations()
    routing = row["attempts"][0]
    assert routing["served"] == "deepinfra/black-forest-labs/FLUX-1.1-pro"
    assert routing["reason"].startswith("fallback")


async def test_bad_preferences_are_refused_before_anything_is_held(
    vendors_gateway: Gateway,
) -> None:
    gw = vendors_gateway
    account, key = await gw.account("1")
    for provider in ({"order": ["acme"]}, {"sort": "cheapest"}, {"color": "red"}, "fal"):
        response = await gw.post(IMAGE, key, json={**FLUX, "provider": provider})
        assert response.status_code == 400, provider
        assert response.json()["error"]["param"] == "provider"
    response = await gw.post(VIDEO, key, json={**GROK_VIDEO, "provider": {"only": ["x"]}})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "provider"
    # `only` naming a known vendor that has no route for the model.
    response = await gw.post(IMAGE, key, json={**FLUX, "provider": {"only": ["grok"]}})
    assert response.status_code == 400
    assert "runware: not in 'only'" in response.json()["error"]["message"]
    assert await gw.generations() == []
    assert await gw.balance(account) == usd_to_credits("1")


async def test_the_openapi_schema_documents_the_provider_object(
    vendors_gateway: Gateway,
) -> None:
    schema = (await vendors_gateway.client.get("/openapi.json")).json()
    schemas = schema["components"]["schemas"]
    for request in ("ImageGenerationRequest", "VideoGenerationRequest"):
        assert "provider" in schemas[request]["properties"], request
    preferences = schemas["ProviderPreferences"]["properties"]
    assert set(preferences) == {
        "order",
        "only",
        "ignore",
        "sort",
        "allow_fallbacks",
        "max_price",
    }
