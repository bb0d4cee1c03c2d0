"""Model listings: `/v1/models` filters and sorts (spec §3.3), `/v2/models`, one model."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Gateway


async def _ids(gateway: Gateway, path: str, **params: str) -> list[str]:
    response = await gateway.client.get(path, params=params)
    assert response.status_code == 200
    return list(response.json())


async def test_only_models_with_a_configured_vendor_are_listed(gateway: Gateway) -> None:
    ids = await _ids(gateway, "/v1/models")
    assert "test/test" in ids and "ir/test-video" in ids and "openai/gpt-image-1" in ids
    # No RUNWARE_API_KEY is configured in tests: runware-only models are not offered.
    assert "black-forest-labs/FLUX-1-schnell" not in ids


@pytest.mark.parametrize("gateway_overrides", [{"list_all_models": True}])
async def test_list_all_models_shows_the_whole_catalog(gateway: Gateway) -> None:
    ids = await _ids(gateway, "/v1/models")
    assert len(ids) == len(gateway.res.catalog.models)


async def test_v1_shape_matches_the_reference(gateway: Gateway) -> None:
    body = (await gateway.client.get("/v1/models", params={"name": "gpt-image-1-mini"})).json()
    model = body["openai/gpt-image-1-mini"]
    assert model["output"] == ["image"]
    assert list(model["supported_params"]) == ["mask", "quality", "edit"]
    assert model["sizes"] == ["auto", "1024x1024", "1536x1024", "1024x1536"]
    assert "inputs" not in model
    assert model["providers"][0]["pricing"]["type"] == "post_generation"


async def test_filters(gateway: Gateway) -> None:
    assert await _ids(gateway, "/v1/models", type="video") == ["ir/test-video"]
    assert set(await _ids(gateway, "/v1/models", provider="TEST")) == {"test/test"}
    free = await _ids(gateway, "/v1/models", free="true")
    assert {"test/test", "ir/test-video", "openai/gpt-image-1.5:free"} <= set(free)
    assert not set(free) & set(await _ids(gateway, "/v1/models", free="false"))
    assert await _ids(gateway, "/v1/models", name="DALL-E") == [
        "openai/dall-e-2",
        "openai/dall-e-3",
    ]
    assert len(await _ids(gateway, "/v1/models", limit="2")) == 2
    assert await _ids(gateway, "/v1/models", limit="0") == []
    assert await _ids(gateway, "/v1/models", limit="abc") == []


async def test_sorts(gateway: Gateway) -> None:
    by_name = await _ids(gateway, "/v1/models", sort="name")
    assert by_name == sorted(by_name, key=str.lower)
    body: dict[str, Any] = (await gateway.client.get("/v1/models", params={"sort": "date"})).json()
    dates = [m.get("release_date", "") for m in body.values()]
    assert dates == sorted(dates, reverse=True)
    by_price = await _ids(gateway, "/v2/models", sort="price")
    v2 = (await gateway.client.get("/v2/models")).json()
    averages = [v2[i]["price"]["average"] for i in by_price]
    assert averages == sorted(averages)


async def test_v2_shape(gateway: Gateway) -> None:
    body = (await gateway.client.get("/v2/models", params={"name": "gpt-image-1-mini"})).json()
    model = body["openai/gpt-image-1-mini"]
    assert "providers" not in model and "sizes" not in model
    assert model["inputs"]["size"] == ["auto", "1024x1024", "1536x1024", "1024x1536"]
    assert set(model["price"]) == {"min", "average", "max"}


async def test_one_model_by_id_with_slashes(gateway: Gateway) -> None:
    response = await gateway.client.get("/v1/models/test/test")
    assert response.json() == {
        "providers": [
            {"id": "test", "model_name": "test/test", "pricing": {"type": "fixed", "value": 0}}
        ],
        "release_date": "2025-05-04",
        "inputs": {"image": True, "mask": True, "quality": True, "size": ["custom"]},
        "output": ["image"],
    }
    missing = await gateway.client.get("/v1/models/nope/nope")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "The model 'nope/nope' does not exist.",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


async def test_deprecated_image_models_route(gateway: Gateway) -> None:
    body = (await gateway.client.get("/v1/openai/images/models")).json()
    assert "test/test" in body and "ir/test-video" not in body
    assert "inputs" in body["test/test"]


async def test_health_and_openapi(gateway: Gateway) -> None:
    assert (await gateway.client.get("/health")).json() == {"status": "ok"}
    spec = await gateway.client.get("/.well-known/openapi.yaml")
    assert spec.headers["content-type"].startswith("text/yaml")
    assert "/v1/openai/images/generations" in spec.text
    as_json = (await gateway.client.get("/openapi.json")).json()
    post = as_json["paths"]["/v1/openai/images/generations"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert (await gateway.client.get("/docs")).status_code == 200
