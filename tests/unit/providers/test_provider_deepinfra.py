"""The DeepInfra adapter: the exact requests it sends, how it reads answers and errors."""

from __future__ import annotations

import base64
from decimal import Decimal
from typing import Any

import httpx
import pytest

from image_router.providers.contract import InputFile, Target
from image_router.providers.deepinfra import (
    DeepInfraProvider,
    error_from_response,
    from_response,
    reported_cost,
    to_request,
)
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from tests.fakes.deepinfra import (
    DEFAULT_API_KEY,
    NO_BALANCE_BODY,
    FakeDeepInfra,
    data_uri,
    image_bytes,
)
from tests.unit.providers.conftest import ROOT, jobs, picture, vendor_fixtures

SCHNELL = "black-forest-labs/FLUX-1-schnell"


job = jobs(model="x")
fake, provider = vendor_fixtures(
    FakeDeepInfra, lambda http: DeepInfraProvider(http, credential=DEFAULT_API_KEY, base_url=ROOT)
)


# ------------------------------------------------------------------ what we send


async def test_text_to_image_sends_json_with_size_and_steps(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    result = await provider.generate(
        job(size="1024x768"), Target(SCHNELL, {"num_inference_steps": 1})
    )

    sent = fake.last
    assert (sent.method, sent.path) == ("POST", f"/v1/inference/{SCHNELL}")
    assert sent.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert sent.content_type == "application/json"
    assert sent.json == {
        "prompt": "a lighthouse at dusk",
        "num_images": 1,
        "width": 1024,
        "height": 768,
        "num_inference_steps": 1,
    }
    (artifact,) = result.artifacts
    assert artifact.data == image_bytes()
    assert artifact.content_type == "image/png"
    # FLUX schnell costs $0.0005 per megapixel-step: 0.75 MP x 1 step.
    assert result.reported_cost == Decimal("0.000375")


async def test_flux_pro_steps_quality_and_url_answer(
    fake: FakeDeepInfra, provider: DeepInfraProvider, http: httpx.AsyncClient
) -> None:
    result = await provider.generate(
        job(quality="high"), Target("black-forest-labs/FLUX-pro", {"steps": 45})
    )

    assert fake.last.json == {"prompt": "a lighthouse at dusk", "num_images": 1, "steps": 45}
    (artifact,) = result.artifacts
    assert artifact.data is None
    assert artifact.url is not None and artifact.url.startswith(f"{ROOT}/files/")
    downloaded = await http.get(artifact.url)
    assert downloaded.content == image_bytes()
    assert result.reported_cost == Decimal("0.05")


async def test_auto_size_and_omitted_quality_send_neither(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    await provider.generate(
        job(size="auto"), Target("stabilityai/sdxl-turbo", {"num_inference_steps": None})
    )

    assert fake.last.json == {"prompt": "a lighthouse at dusk", "num_images": 1}


async def test_sdxl_turbo_quality_mapping_reaches_deepinfra(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    result = await provider.generate(
        job(size="512x512"), Target("stabilityai/sdxl-turbo", {"num_inference_steps": 2})
    )

    assert fake.last.json["num_inference_steps"] == 2
    assert "steps" not in fake.last.json
    assert result.reported_cost == Decimal("0.00002")


async def test_flux_11_pro_image_url_answer(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    result = await provider.generate(job(), Target("black-forest-labs/FLUX-1.1-pro"))

    assert result.artifacts[0].url is not None
    assert result.reported_cost == Decimal("0.04")


async def test_bria_generator_answers_image_urls(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    result = await provider.generate(job(size="1024x1024"), Target("Bria/Bria-3.2"))

    assert fake.last.json["width"] == 1024
    (artifact,) = result.artifacts
    assert artifact.url is not None and artifact.url.startswith(f"{ROOT}/files/")


async def test_image_edit_is_multipart_with_the_original_file(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    upload = InputFile(picture("jpeg"), "image/jpeg", "holiday.jpg")

    result = await provider.generate(
        job(prompt="soften the background", images=(upload,), size="1024x1024"),
        Target("Bria/blur_background"),
    )

    sent = fake.last
    assert sent.path == "/v1/inference/Bria/blur_background"
    assert sent.content_type == "multipart/form-data"
    (file,) = sent.files
    assert (file.name, file.filename, file.content_type) == ("image", "holiday.jpg", "image/jpeg")
    assert file.data == upload.data
    # Bria's image endpoints take no size: only the prompt travels with the file.
    assert sent.form == {"prompt": ["soften the background"]}
    assert result.artifacts[0].url is not None
    assert result.reported_cost == Decimal("0.04")


async def test_image_edit_without_prompt_sends_only_the_file(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    upload = InputFile(picture("png"), "image/png", "cut.png")

    await provider.generate(job(prompt="", images=(upload,)), Target("Bria/remove_background"))

    assert fake.last.form == {}
    assert [f.name for f in fake.last.files] == ["image"]


async def test_several_images_or_a_mask_are_refused_before_any_call(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    upload = InputFile(picture(), "image/png", "a.png")

    with pytest.raises(UpstreamRejectedError, match="only one image input"):
        await provider.generate(job(images=(upload, upload)), Target("Bria/enhance"))
    with pytest.raises(UpstreamRejectedError, match="Mask editing is not supported"):
        await provider.generate(job(images=(upload,), mask=upload), Target("Bria/enhance"))

    assert fake.requests == []


async def test_missing_key_is_misconfiguration_without_a_call(
    fake: FakeDeepInfra, http: httpx.AsyncClient
) -> None:
    provider = DeepInfraProvider(http, credential=None, base_url=ROOT)

    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(job(), Target(SCHNELL))

    assert fake.requests == []


def test_default_host_is_deepinfra() -> None:
    request = to_request(job(), Target(SCHNELL))

    assert DeepInfraProvider.default_base_url + request.path == (
        f"https://api.deepinfra.com/v1/inference/{SCHNELL}"
    )
    assert DeepInfraProvider.image_inputs == frozenset({"single_blob"})


# ------------------------------------------------------------------ errors


async def test_moderated_request_is_a_rejection(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="a forbidden-content scene"), Target(SCHNELL))

    assert caught.value.message == "Request was moderated"
    assert caught.value.code == "request_moderated"
    assert caught.value.retry_elsewhere is False


async def test_validation_error_reads_like_the_reference(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(size="1536x1024"), Target("stabilityai/sdxl-turbo"))

    assert caught.value.status == 422
    assert caught.value.message == (
        "body.width input should be a multiple of 64 between 128 and 1024"
    )


async def test_unknown_model_is_our_misconfiguration(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target("acme/not-a-model"))

    assert caught.value.status == 404
    assert caught.value.retry_elsewhere is True


async def test_out_of_balance_switches_provider(
    fake: FakeDeepInfra, provider: DeepInfraProvider
) -> None:
    fake.fail_next(402)

    with pytest.raises(UpstreamRateLimitedError) as caught:
        await provider.generate(job(), Target(SCHNELL))

    assert caught.value.message == NO_BALANCE_BODY["detail"]["error"]


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"detail": {"error": "Your credit balance is too low"}}, UpstreamRateLimitedError),
        (400, {"detail": "usage_limit_exceeded for this account"}, UpstreamRateLimitedError),
        (400, {"message": "Invalid API key"}, UpstreamMisconfiguredError),
        (
            400,
            {"detail": "The model is overloaded. Please try again later."},
            UpstreamUnavailableError,
        ),
        (500, {"detail": "An unknown error occurred"}, UpstreamUnavailableError),
        (502, "<html>504 Gateway Time-out</html>", UpstreamUnavailableError),
        (400, {"detail": "prompt is too long"}, UpstreamRejectedError),
        (400, {}, UpstreamRejectedError),
        (403, {"detail": {"error": "Forbidden"}}, UpstreamMisconfiguredError),
    ],
)
def test_error_classification(status: int, body: Any, expected: type[UpstreamError]) -> None:
    error = error_from_response(status, body)

    assert type(error) is expected
    assert error.status == status
    assert error.message


def test_error_without_message_names_the_status() -> None:
    assert error_from_response(400, {}).message == "DeepInfra answered HTTP 400"


def test_validation_details_are_joined() -> None:
    body = {
        "detail": [
            {"loc": ["body", "width"], "msg": "Input should be a valid integer", "type": "int"},
            {"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"},
        ]
    }

    error = error_from_response(422, body)

    assert error.message == (
        "body.width input should be a valid integer; body.prompt field required"
    )


# ------------------------------------------------------------------ reading answers


def test_bare_base64_images_are_decoded() -> None:
    png = image_bytes()

    result = from_response({"images": [base64.b64encode(png).decode()]})

    assert result.artifacts[0].data == png
    assert result.artifacts[0].content_type == "image/png"
    assert result.reported_cost is None


def test_image_urls_list_becomes_url_artifacts() -> None:
    result = from_response({"image_urls": ["https://a.example/1.png", "https://a.example/2.png"]})

    assert [a.url for a in result.artifacts] == [
        "https://a.example/1.png",
        "https://a.example/2.png",
    ]


def test_raw_keeps_no_inline_image() -> None:
    result = from_response({"images": [data_uri()], "inference_status": {"cost": 0.001}})

    assert result.raw is not None
    assert result.raw["images"] == ["[removed - base64 data]"]
    assert "base64," not in str(result.raw)


@pytest.mark.parametrize(
    "body",
    [
        {"images": []},
        {"inference_status": {"cost": 0.1}},
        {"images": ["not*base64!"]},
        {"images": [42]},
        {"image_url": "ftp://x/y.png"},
        ["not", "an", "object"],
    ],
)
def test_answers_without_usable_images_are_protocol_errors(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        from_response(body)


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        (0.0005, Decimal("0.0005")),
        (0, Decimal("0")),
        ("0.04", Decimal("0.04")),
        (None, None),
        (True, None),
        (float("nan"), None),
        (-1, None),
        ("free", None),
    ],
)
def test_reported_cost(cost: Any, expected: Decimal | None) -> None:
    assert reported_cost({"inference_status": {"cost": cost}}) == expected
