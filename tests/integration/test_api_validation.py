"""Every validation message of spec §2.4, §2.5 and §2.10, word for word, with its status."""

from __future__ import annotations

from typing import Any

import pytest

from image_router.kit.money import usd_to_credits
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
VIDEO = "/v1/openai/videos/generations"

PROMPT_TOO_LONG = (
    "'prompt' must be 10,000 characters or less. "
    "Please contact ImageRouter support if you need a higher limit."
)

IMAGE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "cat"}, "'model' is a required parameter"),
    ({"model": "", "prompt": "cat"}, "'model' is a required parameter"),
    ({"model": 5, "prompt": "cat"}, "'model' must be a string"),
    ({"model": "test/test", "prompt": 5}, "'prompt' must be a string"),
    ({"model": "test/test", "prompt": "x" * 10_001}, PROMPT_TOO_LONG),
    (
        {"model": "test/test", "response_format": "invalid_format"},
        "Invalid enum value. Expected 'url' | 'b64_json' | 'b64_ephemeral', "
        "received 'invalid_format'",
    ),
    (
        {"model": "test/test", "quality": "ultra"},
        "Invalid enum value. Expected 'auto' | 'low' | 'medium' | 'high', received 'ultra'",
    ),
    (
        {"model": "test/test", "quality": None},
        "Expected 'auto' | 'low' | 'medium' | 'high', received null",
    ),
    (
        {"model": "test/test", "size": "big"},
        "'size' must be 'auto' or in the format 'WIDTHxHEIGHT' (e.g. '1024x768')",
    ),
    ({"model": "test/test", "size": 1024}, "Expected string, received number"),
    (
        {"model": "test/test", "output_format": "gif"},
        "'output_format' must be one of: 'png', 'jpeg' (or 'jpg'), 'webp'",
    ),
    ({"model": "invalid-model", "prompt": "cat"}, "model 'invalid-model' is not available"),
    (
        {"model": "ir/test-video", "prompt": "cat"},
        "'ir/test-video' is a video model. Please use the video generation endpoint.",
    ),
    (
        {"model": "stabilityai/sd3.5-medium"},
        "SD3.5 medium is no longer available. Available alternative: 'stabilityai/sd3.5'",
    ),
    (
        {"model": "google/gemini-2.0-flash-exp:free"},
        "Gemini 2.0 Flash is no longer available. Please switch to 'google/gemini-2.5-flash' "
        "(paid) or use other models instead.",
    ),
    ({"model": "ByteDance/InfiniteYou"}, "InfiniteYou is no longer available."),
    (
        {"model": "briaai/RMBG-2.0:free"},
        "model 'bria/remove-background:free' is not available",
    ),
    (
        {"model": "openai/gpt-image-1.5:free", "size": "1536x1024"},
        "Free models support maximum size of 1024x1024. "
        "Please use the paid models for higher quality.",
    ),
]

DALLE2_SIZES = "Supported sizes: auto, 256x256, 512x512, 1024x1024"
TEST_BOUNDS = "each side between 16 and 2048 pixels"
GLOBAL_BOUNDS = "each side between 64 and 4096 pixels"

# (body, message, param): sizes and n no vendor of the model can serve, refused up front.
SIZE_AND_N_CASES: list[tuple[dict[str, Any], str, str]] = [
    (
        {"model": "openai/dall-e-2", "size": "1536x1024"},
        f"'size' 1536x1024 is not supported by 'openai/dall-e-2'. {DALLE2_SIZES}",
        "size",
    ),
    (
        {"model": "openai/dall-e-2", "size": "1024x1536"},
        f"'size' 1024x1536 is not supported by 'openai/dall-e-2'. {DALLE2_SIZES}",
        "size",
    ),
    (
        {"model": "openai/dall-e-3", "size": "1536x1024"},
        "'size' 1536x1024 is not supported by 'openai/dall-e-3'. "
        "Supported sizes: auto, 1024x1024, 1792x1024, 1024x1792",
        "size",
    ),
    (
        {"model": "test/test", "size": "0x0"},
        f"'size' 0x0 is not supported by 'test/test': {TEST_BOUNDS}",
        "size",
    ),
    (
        {"model": "test/test", "size": "99999x99999"},
        f"'size' 99999x99999 is not supported by 'test/test': {TEST_BOUNDS}",
        "size",
    ),
    (
        {"model": "test/test", "size": "10000000000000000000000x1"},
        f"'size' 10000000000000000000000x1 is not supported by 'test/test': {TEST_BOUNDS}",
        "size",
    ),
    (
        {"model": "test/test", "size": "4096x4096"},
        f"'size' 4096x4096 is not supported by 'test/test': {TEST_BOUNDS}",
        "size",
    ),
    (
        {"model": "openai/gpt-image-1", "size": "0X0"},
        "'size' 0x0 is not supported by 'openai/gpt-image-1'. "
        "Supported sizes: auto, 1024x1024, 1536x1024, 1024x1536",
        "size",
    ),
    (
        {"model": "test/test", "size": "１０２４x１０２４"},
        "'size' must be 'auto' or in the format 'WIDTHxHEIGHT' (e.g. '1024x768')",
        "size",
    ),
    (
        {"model": "test/test", "size": "1" * 5000 + "x1"},
        "'size' must be 'auto' or in the format 'WIDTHxHEIGHT' (e.g. '1024x768')",
        "size",
    ),
    ({"model": "test/test", "n": -1}, "'n' must be at least 1", "n"),
    ({"model": "test/test", "n": 0}, "'n' must be at least 1", "n"),
    ({"model": "test/test", "n": "0"}, "'n' must be at least 1", "n"),
    ({"model": "test/test", "n": 10**18}, "'n' must be 4 or less for 'test/test'", "n"),
    ({"model": "test/test", "n": 5}, "'n' must be 4 or less for 'test/test'", "n"),
    ({"model": "test/test", "n": "abc"}, "'n' must be an integer", "n"),
    ({"model": "test/test", "n": 1.5}, "'n' must be an integer", "n"),
    ({"model": "test/test", "n": True}, "'n' must be an integer", "n"),
    ({"model": "test/test", "n": "２"}, "'n' must be an integer", "n"),
    ({"model": "openai/dall-e-3", "n": 2}, "'openai/dall-e-3' supports only n=1", "n"),
    ({"model": "openai/dall-e-2", "n": 11}, "'n' must be 10 or less for 'openai/dall-e-2'", "n"),
]

VIDEO_CASES: list[tuple[dict[str, Any], str]] = [
    ({"prompt": "cat"}, "Required"),
    ({"model": 5}, "Expected string, received number"),
    ({"model": ""}, "'model' is a required parameter"),
    ({"model": "ir/test-video", "seconds": "abc"}, "Invalid input"),
    ({"model": "ir/test-video", "seconds": ""}, "'seconds' must be at least 1"),
    ({"model": "ir/test-video", "seconds": 0}, "'seconds' must be at least 1"),
    ({"model": "ir/test-video", "seconds": 61}, "'seconds' must be 60 or less"),
    (
        {"model": "test/test"},
        "'test/test' is an image model. Please use the image generation endpoint.",
    ),
    ({"model": "nope/nope"}, "model 'nope/nope' is not available"),
]


@pytest.mark.parametrize(("body", "message"), IMAGE_CASES)
async def test_image_validation_messages(
    gateway: Gateway, body: dict[str, Any], message: str
) -> None:
    _, key = await gateway.account()
    response = await gateway.post(IMAGE, key, json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["message"] == message
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "message", "param"), SIZE_AND_N_CASES)
async def test_sizes_and_n_the_model_cannot_make_are_refused(
    gateway: Gateway, body: dict[str, Any], message: str, param: str
) -> None:
    account, key = await gateway.account("1")
    response = await gateway.post(IMAGE, key, json={"prompt": "cat", **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["message"], error["param"], error["type"]) == (
        message,
        param,
        "invalid_request_error",
    )
    assert gateway.openai.requests == []
    assert await gateway.generations() == []
    assert await gateway.balance(account) == usd_to_credits("1")


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        (
            {"model": "ir/test-video", "size": "99999x99999"},
            f"'size' 99999x99999 is not supported by 'ir/test-video': {GLOBAL_BOUNDS}",
            "size",
        ),
        (
            {"model": "ir/test-video", "size": "0x0"},
            f"'size' 0x0 is not supported by 'ir/test-video': {GLOBAL_BOUNDS}",
            "size",
        ),
        ({"model": "ir/test-video", "n": 2}, "'ir/test-video' supports only n=1", "n"),
        ({"model": "ir/test-video", "n": "abc"}, "'n' must be an integer", "n"),
    ],
)
async def test_video_sizes_and_n_are_checked_too(
    gateway: Gateway, body: dict[str, Any], message: str, param: str
) -> None:
    _, key = await gateway.account()
    response = await gateway.post(VIDEO, key, json={"prompt": "cat", **body})
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["message"], error["param"]) == (message, param)


async def test_multipart_n_is_read_as_a_number(gateway: Gateway) -> None:
    _, key = await gateway.account()
    response = await gateway.post(
        IMAGE, key, data={"model": "test/test", "prompt": "cat", "size": "64x64", "n": "3"}
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["data"]) == 3
    refused = await gateway.post(IMAGE, key, data={"model": "test/test", "n": "-1"})
    assert refused.json()["error"]["message"] == "'n' must be at least 1"


async def test_n_images_are_held_and_charged_n_times(any_gateway: Gateway) -> None:
    account, key = await any_gateway.account("1")
    response = await any_gateway.post(
        IMAGE, key, json={"model": "openai/dall-e-2", "prompt": "cat", "size": "512x512", "n": 2}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["data"]) == 2
    assert body["cost"] == 0.032
    assert [r.json["n"] for r in any_gateway.openai.requests] == [2]
    [row] = await any_gateway.generations()
    assert (row["held"], row["cost"]) == (320, 320)
    assert len(row["output_urls"]) == 2
    assert await any_gateway.balance(account) == usd_to_credits("1") - 320


async def test_test_model_makes_n_images(gateway: Gateway) -> None:
    _, key = await gateway.account()
    response = await gateway.post(
        IMAGE, key, json={"model": "test/test", "prompt": "cat", "size": "32x32", "n": 4}
    )
    assert response.status_code == 200, response.text
    urls = [item["url"] for item in response.json()["data"]]
    assert len(set(urls)) == 4


@pytest.mark.parametrize(("body", "message"), VIDEO_CASES)
async def test_video_validation_messages(
    gateway: Gateway, body: dict[str, Any], message: str
) -> None:
    _, key = await gateway.account()
    response = await gateway.post(VIDEO, key, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == message


async def test_multipart_values_are_validated_like_json(gateway: Gateway) -> None:
    _, key = await gateway.account()
    response = await gateway.post(
        IMAGE, key, data={"model": "test/test", "quality": "ultra"}, files={"x": ("x.png", b"x")}
    )
    # `x` is an unexpected file field: the upload check runs before validation.
    assert response.json()["error"]["message"] == "File upload error: Unexpected field"
    response = await gateway.post(
        VIDEO,
        key,
        data={"model": "ir/test-video", "seconds": "8"},
        files={"image": ("a.png", b"x")},
    )
    assert response.status_code == 200


async def test_alias_resolves_to_the_real_model(gateway: Gateway) -> None:
    _, key = await gateway.account()
    # The alias resolves, then the model is unavailable because no runware/deepinfra key is
    # configured: the message names the real id, as the reference does.
    response = await gateway.post(IMAGE, key, json={"model": "briaai/RMBG-2.0"})
    assert response.json()["error"]["message"] == (
        "model provider for 'bria/remove-background' is not available"
    )


async def test_malformed_and_oversized_json_are_client_errors(gateway: Gateway) -> None:
    _, key = await gateway.account()
    bad = await gateway.post(
        IMAGE, key, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_json"
    big = await gateway.post(IMAGE, key, json={"model": "test/test", "prompt": "x" * 200_000})
    assert big.status_code == 413


async def test_unknown_route_is_a_json_404(gateway: Gateway) -> None:
    response = await gateway.client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Cannot GET /v1/nothing-here"


async def test_edits_accepts_json(gateway: Gateway) -> None:
    _, key = await gateway.account()
    response = await gateway.post(
        "/v1/openai/images/edits", key, json={"model": "test/test", "prompt": "cat"}
    )
    assert response.status_code == 200
    assert response.json()["data"][0]["url"].startswith("http://gateway.test/files/")
