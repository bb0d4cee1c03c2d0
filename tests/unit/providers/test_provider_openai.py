"""The OpenAI adapter: the exact requests it sends, how it reads answers and errors."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import pytest
from PIL import Image

from image_router.providers.contract import InputFile, Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from image_router.providers.openai import (
    OpenAIProvider,
    error_from_response,
    from_response,
    to_request,
)
from tests.fakes.openai import (
    DEFAULT_API_KEY,
    INPUT_IMAGE_TOKENS,
    MODERATION_MESSAGE,
    QUOTA_BODY,
    FakeOpenAI,
    image_bytes,
    usage_for,
)
from tests.unit.providers.conftest import ROOT, jobs, vendor_fixtures


def picture(fmt: str, colour: tuple[int, int, int] = (10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    mode = "RGBA" if fmt == "png" else "RGB"
    Image.new(mode, (32, 32), colour).save(buffer, format=fmt.upper())
    return buffer.getvalue()


job = jobs(model="openai/gpt-image-1")
fake, provider = vendor_fixtures(
    FakeOpenAI,
    lambda http: OpenAIProvider(http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1"),
)


# ------------------------------------------------------------------ what we send


async def test_gpt_image_text_to_image_sends_openai_fields(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    result = await provider.generate(
        job(size="1024x1536", quality="high", output_format="webp", user_ref="u_42"),
        Target("gpt-image-1"),
    )

    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/v1/images/generations")
    assert sent.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert sent.content_type == "application/json"
    assert sent.json == {
        "prompt": "a lighthouse at dusk",
        "model": "gpt-image-1",
        "n": 1,
        "size": "1024x1536",
        "quality": "high",
        "user": "u_42",
        "moderation": "low",
        "output_format": "webp",
    }
    (artifact,) = result.artifacts
    assert artifact.data == image_bytes("webp")
    assert artifact.content_type == "image/webp"
    assert artifact.url is None


async def test_quality_comes_from_route_options_when_present(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    await provider.generate(job(quality="high"), Target("dall-e-3", {"quality": "hd"}))

    assert fake.last.json["quality"] == "hd"


async def test_quality_is_omitted_when_route_options_say_none(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    # dall-e-2 refuses any quality but "standard", so the catalog maps it to None.
    result = await provider.generate(
        job(quality="high", size="512x512"), Target("dall-e-2", {"quality": None})
    )

    assert "quality" not in fake.last.json
    assert result.artifacts[0].data == image_bytes("png")


async def test_dalle3_auto_size_becomes_1024_and_answers_bytes(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    result = await provider.generate(job(size="auto", output_format="png"), Target("dall-e-3"))

    sent = fake.last.json
    assert sent["size"] == "1024x1024"
    assert sent["response_format"] == "b64_json"
    # gpt-image-only knobs would make OpenAI refuse the call.
    assert "moderation" not in sent
    assert "output_format" not in sent
    (artifact,) = result.artifacts
    assert artifact.content_type == "image/png"
    assert artifact.revised_prompt == "A detailed, vivid illustration of a lighthouse at dusk"
    assert result.usage is None


async def test_gpt_image_keeps_auto_size(fake: FakeOpenAI, provider: OpenAIProvider) -> None:
    await provider.generate(job(size="auto"), Target("gpt-image-1-mini"))

    assert fake.last.json["size"] == "auto"
    assert fake.last.json["quality"] == "auto"
    assert "output_format" not in fake.last.json


async def test_user_field_is_absent_without_a_user_ref(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    await provider.generate(job(user_ref=""), Target("gpt-image-1"))

    assert "user" not in fake.last.json


async def test_edit_sends_every_image_and_the_mask_as_multipart(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    images = (
        InputFile(picture("png"), "image/png", "first.png"),
        InputFile(picture("jpeg", (200, 0, 0)), "image/jpeg", "second.jpg"),
        InputFile(picture("webp", (0, 200, 0)), "image/webp", "third.webp"),
    )
    mask = InputFile(picture("png", (0, 0, 0)), "image/png", "mask.png")

    result = await provider.generate(
        job(images=images, mask=mask, size="1536x1024", quality="low", user_ref="u_7"),
        Target("gpt-image-1.5"),
    )

    sent = fake.last
    assert sent.path == "/v1/images/edits"
    assert sent.content_type == "multipart/form-data"
    assert sent.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    received = [(f.name, f.filename, f.content_type, f.data) for f in sent.files]
    assert received == [
        ("image[]", "first.png", "image/png", images[0].data),
        ("image[]", "second.jpg", "image/jpeg", images[1].data),
        ("image[]", "third.webp", "image/webp", images[2].data),
        ("mask", "mask.png", "image/png", mask.data),
    ]
    assert sent.form == {
        "prompt": ["a lighthouse at dusk"],
        "model": ["gpt-image-1.5"],
        "n": ["1"],
        "size": ["1536x1024"],
        "quality": ["low"],
        "user": ["u_7"],
        "moderation": ["low"],
    }
    assert result.usage is not None
    assert result.usage["input_tokens_details"]["image_tokens"] == 3 * INPUT_IMAGE_TOKENS


async def test_dalle2_edit_takes_a_single_image(fake: FakeOpenAI, provider: OpenAIProvider) -> None:
    image = InputFile(picture("png"), "image/png", "in.png")

    result = await provider.generate(
        job(images=(image,), size="auto"), Target("dall-e-2", {"quality": None})
    )

    assert fake.last.path == "/v1/images/edits"
    assert fake.last.form["response_format"] == ["b64_json"]
    assert fake.last.form["size"] == ["1024x1024"]
    assert result.artifacts[0].data == image_bytes("png")


# ------------------------------------------------------------------ what we read


async def test_gpt_image_answer_carries_usage_created_and_pass_through_fields(
    provider: OpenAIProvider,
) -> None:
    prompt = "a fox made of stained glass, morning light"

    result = await provider.generate(
        job(prompt=prompt, quality="medium", size="1024x1024"), Target("gpt-image-1")
    )

    expected_usage = usage_for(prompt, "medium", "1024x1024")
    assert result.usage == expected_usage
    assert expected_usage["output_tokens"] == 1056
    assert isinstance(result.created, int)
    assert result.created > 1_700_000_000
    assert result.extra == {
        "usage": expected_usage,
        "output_format": "png",
        "quality": "medium",
        "size": "1024x1024",
        "background": "opaque",
    }
    assert result.raw is not None
    assert result.raw["data"] == [{"b64_json": "[removed - base64 data]"}]


async def test_moderation_refusal_is_rejected_with_openais_message(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="some forbidden-content here"), Target("gpt-image-1"))

    error = caught.value
    assert error.message == MODERATION_MESSAGE
    assert error.code == "moderation_blocked"
    assert error.status == 400
    assert error.retry_elsewhere is False
    assert error.body["error"]["type"] == "image_generation_user_error"


async def test_dalle_content_policy_is_rejected(provider: OpenAIProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="forbidden-content"), Target("dall-e-3"))

    assert caught.value.code == "content_policy_violation"


async def test_size_openai_does_not_offer_is_the_users_problem(
    provider: OpenAIProvider,
) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(size="1536x1024"), Target("dall-e-3"))

    assert caught.value.message.startswith("Invalid value: '1536x1024'")


async def test_unknown_upstream_model_is_our_misconfiguration(
    provider: OpenAIProvider,
) -> None:
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target("gpt-image-9"))

    assert caught.value.status == 400
    assert caught.value.retry_elsewhere is True


async def test_exhausted_quota_is_rate_limited(fake: FakeOpenAI, provider: OpenAIProvider) -> None:
    fake.fail_next(429, QUOTA_BODY)

    with pytest.raises(UpstreamRateLimitedError) as caught:
        await provider.generate(job(), Target("gpt-image-1"))

    assert caught.value.code == "insufficient_quota"


async def test_missing_credential_fails_without_calling_openai(
    fake: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    provider = OpenAIProvider(http, credential=None, base_url=f"{ROOT}/v1")

    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(job(), Target("gpt-image-1"))

    assert fake.requests == []


async def test_key_echoed_in_an_error_is_cut_out(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    fake.fail_next(
        400,
        {
            "error": {
                "message": f"key {DEFAULT_API_KEY} is odd",
                "type": "x",
                "code": None,
            }
        },
    )

    with pytest.raises(UpstreamError) as caught:
        await provider.generate(job(), Target("gpt-image-1"))

    assert DEFAULT_API_KEY not in str(caught.value.record())
    assert caught.value.message == "key [redacted] is odd"


# ------------------------------------------------------------------ pure mapping


def test_to_request_without_images_is_a_json_generation() -> None:
    request = to_request(job(output_format="jpeg"), Target("gpt-image-1"))

    assert request.path == "/images/generations"
    assert request.files == ()
    assert request.fields["output_format"] == "jpeg"


def test_to_request_keeps_a_concrete_dalle_size() -> None:
    request = to_request(job(size="1792x1024"), Target("dall-e-3"))

    assert request.fields["size"] == "1792x1024"


def test_to_request_refuses_a_mask_without_an_image() -> None:
    mask = InputFile(picture("png"), "image/png", "mask.png")

    with pytest.raises(UpstreamRejectedError):
        to_request(job(mask=mask), Target("gpt-image-1"))


def test_from_response_reads_urls_and_sniffs_bytes() -> None:
    jpeg = picture("jpeg")
    body = {
        "created": 1700000000,
        "data": [
            {"url": "https://files.example/a.png", "revised_prompt": "better"},
            {"b64_json": base64.b64encode(jpeg).decode()},
        ],
    }

    result = from_response(body)

    first, second = result.artifacts
    assert (first.url, first.data, first.revised_prompt) == (
        "https://files.example/a.png",
        None,
        "better",
    )
    assert (second.data, second.content_type) == (jpeg, "image/jpeg")
    assert result.created == 1700000000
    assert result.usage is None
    assert result.extra == {}


@pytest.mark.parametrize(
    "body",
    [
        {"created": 1},
        {"created": 1, "data": []},
        {"created": 1, "data": [{"revised_prompt": "no image"}]},
        {"created": 1, "data": [{"b64_json": "not base64!!"}]},
        {"created": 1, "data": ["oops"]},
        ["not", "an", "object"],
    ],
)
def test_from_response_without_a_usable_image_is_a_protocol_error(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        from_response(body)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": {"message": "m", "type": "image_generation_user_error"}},
            UpstreamRejectedError,
        ),
        (
            400,
            {"error": {"message": "m", "code": "content_policy_violation"}},
            UpstreamRejectedError,
        ),
        (
            400,
            {"error": {"message": "m", "param": "size", "code": "invalid_value"}},
            UpstreamRejectedError,
        ),
        (
            400,
            {"error": {"message": "m", "code": "billing_hard_limit_reached"}},
            UpstreamRateLimitedError,
        ),
        (
            400,
            {"error": {"message": "m", "code": "unknown_parameter"}},
            UpstreamMisconfiguredError,
        ),
        (
            404,
            {"error": {"message": "m", "code": "model_not_found"}},
            UpstreamMisconfiguredError,
        ),
        (
            401,
            {"error": {"message": "m", "code": "invalid_api_key"}},
            UpstreamMisconfiguredError,
        ),
        (
            403,
            {"error": {"message": "verify your organization"}},
            UpstreamMisconfiguredError,
        ),
        (
            429,
            {"error": {"message": "m", "code": "rate_limit_exceeded"}},
            UpstreamRateLimitedError,
        ),
        (
            500,
            {"error": {"message": "m", "type": "server_error"}},
            UpstreamUnavailableError,
        ),
        (502, "<html>bad gateway</html>", UpstreamUnavailableError),
    ],
)
def test_error_classification(status: int, body: Any, expected: type[UpstreamError]) -> None:
    error = error_from_response(status, body)

    assert type(error) is expected
    assert error.status == status


# ------------------------------------------------------------------ the fake itself


async def test_fake_serves_dalle_urls_it_hands_out(http: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    answer = await http.post(
        "/v1/images/generations",
        headers=headers,
        json={"prompt": "p", "model": "dall-e-2", "size": "256x256"},
    )

    url = answer.json()["data"][0]["url"]
    assert url.startswith(f"{ROOT}/files/")
    image = await http.get(url)
    assert image.status_code == 200
    assert image.content == image_bytes("png")


async def test_fake_refuses_what_openai_refuses(http: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {DEFAULT_API_KEY}"}
    gpt_with_response_format = await http.post(
        "/v1/images/generations",
        headers=headers,
        json={"prompt": "p", "model": "gpt-image-1", "response_format": "b64_json"},
    )
    no_prompt = await http.post(
        "/v1/images/generations", headers=headers, json={"model": "gpt-image-1"}
    )
    no_key = await http.post("/v1/images/generations", json={"prompt": "p"})

    assert gpt_with_response_format.status_code == 400
    assert gpt_with_response_format.json()["error"]["code"] == "unknown_parameter"
    assert no_prompt.status_code == 400
    assert no_prompt.json()["error"]["code"] == "missing_required_parameter"
    assert no_key.status_code == 401


async def test_n_is_sent_and_every_image_comes_back(
    fake: FakeOpenAI, provider: OpenAIProvider
) -> None:
    result = await provider.generate(job(size="512x512", n=3), Target("dall-e-2"))

    assert fake.last.json["n"] == 3
    assert len(result.artifacts) == 3
