"""The OpenRouter adapter: the chat-completions request it sends and how it reads answers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest

from image_router.providers.contract import Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from image_router.providers.openrouter import (
    OpenRouterProvider,
    aspect_ratio,
    error_from_response,
    from_response,
    to_request,
)
from image_router.providers.upstream_text import first_key
from tests.fakes.openai import image_bytes
from tests.fakes.openrouter import (
    DEFAULT_API_KEY,
    SECOND_API_KEY,
    FakeOpenRouter,
    moderation_error,
    openrouter_error,
)
from tests.unit.providers.conftest import ROOT, data_uri, jobs, upload, vendor_fixtures

GEMINI = "google/gemini-2.5-flash-image-preview:free"
PAID_GEMINI = "google/gemini-2.5-flash-image"


job = jobs(model="google/gemini-2.5-flash:free")
fake, provider = vendor_fixtures(
    FakeOpenRouter,
    lambda http: OpenRouterProvider(
        http, credential=f"{DEFAULT_API_KEY},{SECOND_API_KEY}", base_url=ROOT
    ),
)


def completion(images: list[Any], **choice: Any) -> dict[str, Any]:
    message = {"role": "assistant", "content": "", "images": images}
    return {"created": 7, "choices": [{"message": message, **choice}]}


# ------------------------------------------------------------------ what we send


async def test_text_to_image_sends_a_chat_completion_asking_for_images(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    result = await provider.generate(job(user_ref="u_42"), Target(PAID_GEMINI))

    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/api/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert sent.headers["x-title"] == "Image Router"
    assert sent.json == {
        "model": PAID_GEMINI,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "a lighthouse at dusk"}]}
        ],
        "modalities": ["image", "text"],
        "user": "u_42",
    }
    (artifact,) = result.artifacts
    assert artifact.data == image_bytes("png")
    assert artifact.content_type == "image/png"
    assert isinstance(result.created, int)
    # usage.cost: 5 prompt tokens at $0.3/M and 1300 output tokens at $30/M.
    assert result.reported_cost == Decimal("0.0390015")
    assert "data:image" not in str(result.raw)
    assert "[removed - base64 data]" in str(result.raw)
    assert result.raw is not None and result.raw["usage"]["completion_tokens"] == 1300


async def test_input_images_follow_the_text_as_image_url_parts(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    images = (upload("png", (255, 0, 0)), upload("jpeg"), upload("webp"))

    await provider.generate(job(images=images), Target(GEMINI))

    (message,) = fake.last.json["messages"]
    assert message["content"] == [
        {"type": "text", "text": "a lighthouse at dusk"},
        *({"type": "image_url", "image_url": {"url": data_uri(image)}} for image in images),
    ]


@pytest.mark.parametrize(
    ("size", "ratio"),
    [
        ("1344x768", "16:9"),
        ("832x1248", "2:3"),
        ("1536x672", "21:9"),
        ("2048x2048", "1:1"),
        ("1920x1080", "16:9"),
        ("1000x700", None),
        ("auto", None),
    ],
)
async def test_size_becomes_an_aspect_ratio_when_openrouter_has_one(
    fake: FakeOpenRouter, provider: OpenRouterProvider, size: str, ratio: str | None
) -> None:
    await provider.generate(job(size=size), Target(GEMINI))

    if ratio is None:
        assert "image_config" not in fake.last.json
    else:
        assert fake.last.json["image_config"] == {"aspect_ratio": ratio}


async def test_image_only_models_take_their_modalities_from_the_route(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    flux = "black-forest-labs/flux.2-pro"

    result = await provider.generate(job(), Target(flux, {"modalities": ["image"]}))

    assert fake.last.json["modalities"] == ["image"]
    assert result.artifacts[0].data == image_bytes("png")
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target(flux))
    assert caught.value.status == 404


async def test_a_mask_is_a_route_mistake_and_is_not_sent(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(job(images=(upload(),), mask=upload()), Target(GEMINI))

    assert fake.requests == []


@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        ("a", "a"),
        ("a,b,c", "a"),
        (" a , b", "a"),
        (",, b", "b"),
        ("", None),
        (" , ", None),
        (None, None),
    ],
)
def test_first_key_of_the_comma_list(credential: str | None, expected: str | None) -> None:
    assert first_key(credential) == expected


async def test_no_key_is_misconfiguration_without_a_call(
    fake: FakeOpenRouter, http: httpx.AsyncClient
) -> None:
    provider = OpenRouterProvider(http, credential=" , ", base_url=ROOT)

    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(job(), Target(GEMINI))

    assert fake.requests == []


def test_default_host_is_openrouter() -> None:
    provider = OpenRouterProvider(httpx.AsyncClient(), credential="k")

    assert provider.base_url == "https://openrouter.ai"


# ------------------------------------------------------------------ refusals and errors


async def test_gemini_safety_filter_is_a_rejection(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="forbidden-content"), Target(GEMINI))

    assert caught.value.message == "I can't create that image."
    assert caught.value.retry_elsewhere is False


async def test_moderation_flag_is_a_rejection(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="forbidden-content"), Target("openai/gpt-5-image-mini"))

    assert caught.value.status == 403
    assert "flagged" in caught.value.message


async def test_a_text_only_answer_is_a_protocol_error(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.generate(job(), Target(GEMINI, {"modalities": ["text"]}))

    assert caught.value.message == "No image data found in OpenRouter response"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ({"code": 502, "message": "Provider returned error"}, UpstreamUnavailableError),
        ({"code": 429, "message": "Rate limit exceeded upstream"}, UpstreamRateLimitedError),
        ({"message": "Provider disconnected"}, UpstreamUnavailableError),
    ],
)
async def test_a_failure_reported_inside_a_200_is_raised(
    fake: FakeOpenRouter,
    provider: OpenRouterProvider,
    error: dict[str, Any],
    expected: type[UpstreamError],
) -> None:
    fake.fail_midway = error

    with pytest.raises(expected) as caught:
        await provider.generate(job(), Target(GEMINI))

    assert caught.value.message == error["message"]


async def test_unknown_model_is_our_misconfiguration(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target("google/not-a-model"))

    assert caught.value.message == "google/not-a-model is not a valid model ID"


async def test_out_of_credits_goes_elsewhere(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    fake.fail_next(402)

    with pytest.raises(UpstreamRateLimitedError) as caught:
        await provider.generate(job(), Target(GEMINI))

    assert caught.value.message.startswith("Insufficient credits")


async def test_second_key_is_never_sent_and_an_echoed_key_is_scrubbed(
    fake: FakeOpenRouter, provider: OpenRouterProvider
) -> None:
    fake.fail_next(400, openrouter_error(400, f"key {DEFAULT_API_KEY} is malformed"))

    with pytest.raises(UpstreamError) as caught:
        await provider.generate(job(), Target(GEMINI))

    assert DEFAULT_API_KEY not in str(caught.value.record())
    assert all(SECOND_API_KEY not in str(r.headers) for r in fake.requests)


# ------------------------------------------------------------------ pure mappings


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, openrouter_error(401, "User not found."), "misconfigured"),
        (402, openrouter_error(402, "Insufficient credits"), "rate_limited"),
        (403, moderation_error("openai/gpt-5-image-mini", "x"), "rejected"),
        (403, openrouter_error(403, "Key limit exceeded (total limit)"), "rate_limited"),
        (403, openrouter_error(403, "Blocked by guardrail", {"guardrail": "g"}), "misconfigured"),
        (400, openrouter_error(400, "x/y is not a valid model ID"), "misconfigured"),
        (404, openrouter_error(404, "No endpoints found for x/y."), "misconfigured"),
        (400, openrouter_error(400, "Image could not be decoded"), "rejected"),
        (408, openrouter_error(408, "Request timed out"), "timeout"),
        (429, openrouter_error(429, "Rate limit exceeded"), "rate_limited"),
        (502, openrouter_error(502, "Provider returned error"), "unavailable"),
        (503, openrouter_error(503, "No allowed providers"), "unavailable"),
        (500, "<html>oops</html>", "unavailable"),
    ],
)
def test_error_classification(status: int, body: Any, expected: str) -> None:
    error = error_from_response(status, body)

    assert error.kind == expected
    assert error.provider == "openrouter"


def test_from_response_accepts_hosted_urls() -> None:
    result = from_response(completion([{"image_url": {"url": "https://cdn.example/i.png"}}]))

    assert result.artifacts[0].url == "https://cdn.example/i.png"
    assert result.reported_cost is None
    assert result.created == 7


@pytest.mark.parametrize(
    "body",
    [
        completion([{"image_url": {"url": "data:image/png;base64,!!!"}}]),
        completion([{"image_url": {"url": "data:image/png,rawbytes"}}]),
        completion([{"image_url": {}}]),
        completion([]),
        {"choices": []},
        {"id": "gen-1"},
        ["not", "an", "object"],
    ],
)
def test_unusable_answers_are_protocol_errors(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        from_response(body)


def test_top_level_error_in_a_200_is_raised_with_its_code() -> None:
    with pytest.raises(UpstreamRateLimitedError):
        from_response(openrouter_error(429, "Rate limit exceeded"))


def test_refusal_text_is_the_rejection_message() -> None:
    body = completion([])
    body["choices"][0]["message"]["refusal"] = "I can't help with that."

    with pytest.raises(UpstreamRejectedError) as caught:
        from_response(body)

    assert caught.value.message == "I can't help with that."


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1024x1024", "1:1"), ("1184x864", "4:3"), ("600x800", "3:4"), ("0x10", None), ("x", None)],
)
def test_aspect_ratio(size: str, expected: str | None) -> None:
    assert aspect_ratio(size) == expected


def test_to_request_is_pure() -> None:
    body = to_request(job(size="1152x896"), Target(GEMINI, {"modalities": ["image"]}))

    assert body["modalities"] == ["image"]
    assert body["image_config"] == {"aspect_ratio": "5:4"}
    assert "user" not in body


@pytest.mark.parametrize(
    "choice",
    [
        {"finish_reason": "content_filter", "native_finish_reason": None},
        {"finish_reason": "stop", "native_finish_reason": "IMAGE_SAFETY"},
        {"finish_reason": "stop", "native_finish_reason": "PROHIBITED_CONTENT"},
    ],
)
def test_either_finish_reason_marks_a_safety_refusal(choice: dict[str, Any]) -> None:
    with pytest.raises(UpstreamRejectedError):
        from_response(completion([], **choice))


def test_a_plain_stop_without_image_is_not_a_refusal() -> None:
    with pytest.raises(UpstreamProtocolError):
        from_response(completion([], finish_reason="stop", native_finish_reason="STOP"))
