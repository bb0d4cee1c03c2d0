"""`/openapi.json` declares what the server answers; a method a path lacks is a 405."""

from __future__ import annotations

from tests.conftest import Gateway


async def test_trace_and_other_missing_methods_are_405_with_allow(gateway: Gateway) -> None:
    for method, path in (("TRACE", "/health"), ("TRACE", "/v1/models"), ("PUT", "/health")):
        response = await gateway.client.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.headers["allow"] == "GET"
        assert response.json()["error"]["code"] == "method_not_allowed"
    assert (await gateway.client.request("TRACE", "/v1/nothing-here")).status_code == 404


async def test_operations_declare_their_error_statuses_and_no_422(gateway: Gateway) -> None:
    paths = (await gateway.client.get("/openapi.json")).json()["paths"]
    responses = {
        (method, path): set(operation["responses"])
        for path, operations in paths.items()
        for method, operation in operations.items()
    }
    # FastAPI's validation 422 is never sent; the only 422 is a reused Idempotency-Key.
    reused = {op for op, declared in responses.items() if "422" in declared}
    assert reused == {
        ("post", "/v1/openai/images/generations"),
        ("post", "/v1/openai/images/edits"),
        ("post", "/v1/openai/videos/generations"),
        ("post", "/v1/api-keys"),
        ("post", "/v1/account/api-keys"),
        ("post", "/v1/billing/checkout"),
    }
    for method, path in reused:
        operation = paths[path][method]
        assert "409" in operation["responses"]
        assert "Idempotency-Key" in {p["name"] for p in operation["parameters"]}
    assert {"400", "401", "403", "404", "429"} <= responses["patch", "/v1/api-keys/{key_id}"]
    assert {"400", "401", "403", "429"} <= responses["get", "/v1/account/usage"]
    assert {"404", "429"} <= responses["get", "/v1/models/{model_id}"]
    assert "401" not in responses["get", "/v1/models/{model_id}"]
    assert responses["get", "/health"] == {"200"}
    assert "404" in responses["post", "/v1/billing/checkout"]  # configured: payments off
    assert "403" in responses["post", "/v1/web-token"]  # the human check
    error = paths["/v1/api-keys/{key_id}"]["delete"]["responses"]["401"]
    assert error["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }


async def test_generation_schemas_are_as_strict_as_the_validation(gateway: Gateway) -> None:
    """What the schema admits is what the validation admits: sizes as the parser reads
    them, `n` within the catalog's ceiling, video seconds 1..60, a non-empty model."""
    schemas = (await gateway.client.get("/openapi.json")).json()["components"]["schemas"]
    image = schemas["ImageGenerationRequest"]["properties"]
    assert image["model"]["minLength"] == 1
    assert image["size"]["pattern"] == "^(auto|[0-9]+[xX×*][0-9]+)$"
    assert image["size"]["maxLength"] == 32
    assert (image["n"]["minimum"], image["n"]["maximum"]) == (1, 10)
    video = schemas["VideoGenerationRequest"]["properties"]
    assert video["size"]["pattern"] == image["size"]["pattern"]
    [number] = [s for s in video["seconds"]["anyOf"] if s.get("type") == "number"]
    assert (number["minimum"], number["maximum"]) == (1, 60)
    # A schema-valid size the model does not list is a documented 400, not a 5xx.
    _, key = await gateway.account("1")
    response = await gateway.post(
        "/v1/openai/images/generations", key, json={"model": "test/test", "size": "8x8"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "size"
