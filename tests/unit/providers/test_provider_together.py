"""The Together AI adapter: the exact requests it sends, how it reads answers and errors."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from image_router.providers.contract import InputFile, Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from image_router.providers.together import (
    TogetherProvider,
    error_from_response,
    from_response,
    to_request,
)
from tests.fakes.together import (
    CREDIT_LIMIT_MESSAGE,
    DEFAULT_API_KEY,
    INVALID_KEY_MESSAGE,
    MODERATION_MESSAGE,
    FakeTogether,
    image_bytes,
    together_error,
)
from tests.unit.providers.conftest import ROOT, jobs, vendor_fixtures

SCHNELL = "black-forest-labs/FLUX.1-schnell"


job = jobs(model="x", prompt="a quiet harbour")
fake, provider = vendor_fixtures(
    FakeTogether, lambda http: TogetherProvider(http, credential=DEFAULT_API_KEY, base_url=ROOT)
)


# ------------------------------------------------------------------ what we send


async def test_text_to_image_sends_the_reference_body(
    fake: FakeTogether, provider: TogetherProvider, http: httpx.AsyncClient
) -> None:
    result = await provider.generate(
        job(size="1024x768", output_format="png"), Target(SCHNELL, {"steps": 4})
    )

    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/v1/images/generations")
    assert sent.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert sent.json == {
        "model": SCHNELL,
        "prompt": "a quiet harbour",
        "n": 1,
        "disable_safety_checker": True,
        "width": 1024,
        "height": 768,
        "steps": 4,
        "output_format": "png",
    }
    (artifact,) = result.artifacts
    assert artifact.url is not None and artifact.url.startswith(f"{ROOT}/imgproxy/")
    downloaded = await http.get(artifact.url)
    assert downloaded.content == image_bytes("png")
    assert downloaded.headers["content-type"] == "image/png"
    assert result.reported_cost is None


async def test_auto_size_and_no_quality_send_only_the_basics(
    fake: FakeTogether, provider: TogetherProvider
) -> None:
    await provider.generate(job(size="auto"), Target(SCHNELL))

    assert fake.last.json == {
        "model": SCHNELL,
        "prompt": "a quiet harbour",
        "n": 1,
        "disable_safety_checker": True,
    }


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"num_inference_steps": 8}, 8),
        ({"steps": 3, "num_inference_steps": 9}, 3),
        ({"steps": None, "num_inference_steps": 9}, None),
        ({"num_inference_steps": None}, None),
    ],
)
def test_step_knob_becomes_steps(options: dict[str, Any], expected: int | None) -> None:
    body = to_request(job(), Target(SCHNELL, options))

    assert body.get("steps") == expected
    assert "num_inference_steps" not in body


@pytest.mark.parametrize(
    ("requested", "sent"), [("jpg", "jpeg"), ("jpeg", "jpeg"), ("webp", None), (None, None)]
)
def test_output_format_only_when_together_renders_it(
    requested: str | None, sent: str | None
) -> None:
    assert to_request(job(output_format=requested), Target(SCHNELL)).get("output_format") == sent


async def test_input_images_are_refused_before_any_call(
    fake: FakeTogether, provider: TogetherProvider
) -> None:
    upload = InputFile(image_bytes("png"), "image/png", "a.png")

    with pytest.raises(UpstreamRejectedError, match="does not support image inputs"):
        await provider.generate(job(images=(upload,)), Target(SCHNELL))

    assert fake.requests == []


def test_default_host_is_together() -> None:
    assert TogetherProvider.default_base_url == "https://api.together.xyz"
    assert TogetherProvider.image_inputs == frozenset()


# ------------------------------------------------------------------ errors


async def test_content_refusal_is_rejected(fake: FakeTogether, provider: TogetherProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="a forbidden-content scene"), Target(SCHNELL))

    assert caught.value.message == MODERATION_MESSAGE
    assert caught.value.status == 422


async def test_invalid_size_is_the_users_problem(
    fake: FakeTogether, provider: TogetherProvider
) -> None:
    with pytest.raises(UpstreamRejectedError, match="multiple of 16"):
        await provider.generate(job(size="1000x1000"), Target(SCHNELL))


async def test_too_many_steps_for_the_model_is_rejected(
    fake: FakeTogether, provider: TogetherProvider
) -> None:
    with pytest.raises(UpstreamRejectedError, match="steps must be between 1 and 4"):
        await provider.generate(
            job(), Target("black-forest-labs/FLUX.1-schnell-Free", {"steps": 8})
        )


async def test_unknown_model_is_our_misconfiguration(
    fake: FakeTogether, provider: TogetherProvider
) -> None:
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target("acme/unknown"))

    assert caught.value.code == "model_not_available"


async def test_wrong_key_is_misconfiguration(fake: FakeTogether, http: httpx.AsyncClient) -> None:
    provider = TogetherProvider(http, credential="tgp_wrong", base_url=ROOT)

    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target(SCHNELL))

    assert caught.value.message == INVALID_KEY_MESSAGE
    assert "tgp_wrong" not in str(caught.value.record())


async def test_credit_limit_switches_provider(
    fake: FakeTogether, provider: TogetherProvider
) -> None:
    fake.fail_next(402)

    with pytest.raises(UpstreamRateLimitedError) as caught:
        await provider.generate(job(), Target(SCHNELL))

    assert caught.value.message == CREDIT_LIMIT_MESSAGE


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, together_error("Credit limit exceeded", "credit_limit"), UpstreamRateLimitedError),
        (400, together_error("slow down", "model_rate_limit"), UpstreamRateLimitedError),
        (400, together_error("x", code="invalid_api_key"), UpstreamMisconfiguredError),
        (400, {"message": "The server is overloaded or not ready yet."}, UpstreamUnavailableError),
        (502, "Bad gateway", UpstreamUnavailableError),
        (400, together_error("prompt is required", param="prompt"), UpstreamRejectedError),
        (400, {"error": "plain string error"}, UpstreamRejectedError),
    ],
)
def test_error_classification(status: int, body: Any, expected: type[UpstreamError]) -> None:
    error = error_from_response(status, body)

    assert type(error) is expected
    assert error.message


def test_error_messages_come_from_the_body() -> None:
    assert error_from_response(400, {"error": "plain string error"}).message == (
        "plain string error"
    )
    assert error_from_response(500, {}).message == "Together answered HTTP 500"


# ------------------------------------------------------------------ reading answers


def test_base64_items_are_decoded() -> None:
    jpeg = image_bytes("jpeg")
    body = {"data": [{"index": 0, "b64_json": base64.b64encode(jpeg).decode()}]}

    result = from_response(body)

    assert result.artifacts[0].data == jpeg
    assert result.artifacts[0].content_type == "image/jpeg"
    assert result.raw is not None and "b64_json" in result.raw["data"][0]
    assert len(str(result.raw)) < 1000


@pytest.mark.parametrize(
    "body",
    [
        {"data": []},
        {"data": [{"index": 0}]},
        {"data": [{"index": 0, "b64_json": "%%%"}]},
        {"data": ["https://x/y.png"]},
        {"id": "abc"},
        "text",
    ],
)
def test_answers_without_usable_images_are_protocol_errors(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        from_response(body)
