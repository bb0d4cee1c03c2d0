"""Every validation message of spec §2.4, §2.5 and §2.10, word for word, with its status."""

from __future__ import annotations

from typing import Any

import pytest

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
