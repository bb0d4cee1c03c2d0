"""The Gemini adapter (AI Studio): the exact requests it sends for images and Veo videos,
how it reads answers, polls operations, downloads videos and classifies Google's errors."""

from __future__ import annotations

import asyncio
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
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from image_router.providers.gemini import GeminiProvider, image_from_response, image_request
from image_router.providers.gemini_veo import (
    is_api_host,
    operation_name,
    video_from_operation,
    video_request,
)
from image_router.providers.google_ai import error_from_response
from image_router.providers.upstream_text import first_key
from tests.fakes.gemini import (
    API_KEY_INVALID_BODY,
    DEFAULT_API_KEY,
    OVERLOADED_BODY,
    QUOTA_BODY,
    VEO_FILTERED_REASON,
    FakeGemini,
    google_error,
    image_bytes,
    video_bytes,
)
from tests.unit.providers.conftest import ROOT, jobs, picture, vendor_fixtures

FLASH = "gemini-2.5-flash-image"
PRO = "gemini-3-pro-image-preview"
VEO3_FAST = "veo-3.0-fast-generate-001"


image_job = jobs(model="google/gemini-2.5-flash")
video_job = jobs(modality="video", model="google/veo-3-fast", seconds=4, prompt="waves at night")
fake, provider = vendor_fixtures(
    FakeGemini,
    # A comma list: the first key is the one used (§9.13).
    lambda http: GeminiProvider(
        http, credential=f" {DEFAULT_API_KEY} ,AIzaOther", base_url=ROOT, poll_interval=0.0
    ),
)


def assert_key_only_in_header(fake: FakeGemini) -> None:
    for rec in fake.requests:
        assert "key" not in rec.query
        assert DEFAULT_API_KEY not in rec.path


# ------------------------------------------------------------------ images: what we send


async def test_text_to_image_sends_prompt_and_modalities(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    result = await provider.generate(image_job(), Target(FLASH))

    rec = fake.last
    assert rec.method == "POST"
    assert rec.path == f"/v1beta/models/{FLASH}:generateContent"
    assert rec.headers["x-goog-api-key"] == DEFAULT_API_KEY
    assert rec.json == {
        "contents": [{"parts": [{"text": "a lighthouse at dusk"}]}],
        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]},
    }
    assert_key_only_in_header(fake)
    assert [a.data for a in result.artifacts] == [image_bytes()]
    assert result.artifacts[0].content_type == "image/png"
    assert DEFAULT_API_KEY not in str(result.raw)
    assert "[removed - base64 data]" in str(result.raw)


@pytest.mark.parametrize(
    ("model", "size", "image_config"),
    [
        (FLASH, "832x1248", {"aspectRatio": "2:3"}),
        (FLASH, "1536x672", {"aspectRatio": "21:9"}),
        (PRO, "1024x1024", {"aspectRatio": "1:1", "imageSize": "1K"}),
        (PRO, "1376x768", {"aspectRatio": "16:9", "imageSize": "1K"}),
        (PRO, "2048x2048", {"aspectRatio": "1:1", "imageSize": "2K"}),
        (PRO, "3584x4800", {"aspectRatio": "3:4", "imageSize": "4K"}),
        (PRO, "6336x2688", {"aspectRatio": "21:9", "imageSize": "4K"}),
    ],
)
async def test_size_becomes_aspect_ratio_and_image_size(
    fake: FakeGemini,
    provider: GeminiProvider,
    model: str,
    size: str,
    image_config: dict[str, str],
) -> None:
    await provider.generate(image_job(size=size), Target(model))

    assert fake.last.json["generationConfig"]["imageConfig"] == image_config


@pytest.mark.parametrize("size", ["auto", "1000x1000", "1280x720"])
def test_sizes_outside_the_tables_send_no_image_config(size: str) -> None:
    body = image_request(image_job(size=size), Target(PRO))

    assert "imageConfig" not in body["generationConfig"]


async def test_several_input_images_follow_the_prompt_as_inline_data(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    png, jpeg = picture("png"), picture("jpeg", (200, 10, 10))
    job = image_job(
        prompt="merge these",
        images=(InputFile(png, "image/png", "a.png"), InputFile(jpeg, "image/jpeg", "b.jpg")),
    )

    result = await provider.generate(job, Target(FLASH))

    parts = fake.last.json["contents"][0]["parts"]
    assert parts == [
        {"text": "merge these"},
        {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(png).decode()}},
        {"inline_data": {"mime_type": "image/jpeg", "data": base64.b64encode(jpeg).decode()}},
    ]
    assert len(result.artifacts) == 1


async def test_a_mask_is_refused_before_calling_google(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    png = picture("png")
    job = image_job(
        images=(InputFile(png, "image/png", "a.png"),), mask=InputFile(png, "image/png", "m.png")
    )

    with pytest.raises(UpstreamRejectedError, match="Mask editing is not supported"):
        await provider.generate(job, Target(FLASH))

    assert fake.requests == []


async def test_an_unreadable_input_image_is_the_users_fault(provider: GeminiProvider) -> None:
    job = image_job(images=(InputFile(b"not an image", "image/png", "x.png"),))

    with pytest.raises(UpstreamRejectedError, match="Unable to process input image") as caught:
        await provider.generate(job, Target(FLASH))

    assert caught.value.status == 400


# ------------------------------------------------------------------ images: answers


async def test_every_image_part_is_an_output_for_per_output_pricing(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.images_per_answer = 2

    result = await provider.generate(image_job(), Target(FLASH))

    assert len(result.artifacts) == 2


async def test_thought_images_are_drafts_and_not_outputs(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.thought_images = 2

    result = await provider.generate(image_job(), Target(PRO))

    assert len(result.artifacts) == 1


async def test_blocked_prompt_is_rejected(provider: GeminiProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(image_job(prompt="forbidden-content please"), Target(FLASH))

    assert caught.value.code == "PROHIBITED_CONTENT"
    assert caught.value.retry_elsewhere is False
    assert "refused the prompt" in caught.value.message


@pytest.mark.parametrize("reason", ["IMAGE_SAFETY", "PROHIBITED_CONTENT", "SAFETY"])
async def test_safety_finish_without_image_is_rejected(
    fake: FakeGemini, provider: GeminiProvider, reason: str
) -> None:
    fake.blocked_finish = reason

    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(image_job(), Target(FLASH))

    assert caught.value.code == reason


async def test_text_only_answer_is_the_retryable_no_image_error(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.text_only = True

    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.generate(image_job(), Target(FLASH))

    # §7.2 lists this message as retryable; here it means "try another route".
    assert caught.value.message == (
        "No image generated by Gemini. Text response: Here is the image you asked for."
    )
    assert caught.value.retry_elsewhere is True


@pytest.mark.parametrize("finish", ["NO_IMAGE", "IMAGE_OTHER", "OTHER", "STOP"])
def test_non_safety_empty_answers_are_retryable(finish: str) -> None:
    body = {"candidates": [{"finishReason": finish}]}

    with pytest.raises(UpstreamUnavailableError, match="No image generated by Gemini"):
        image_from_response(body)


def test_invalid_base64_image_is_a_protocol_error() -> None:
    body = {"candidates": [{"content": {"parts": [{"inlineData": {"data": "@@not-base64@@"}}]}}]}

    with pytest.raises(UpstreamProtocolError):
        image_from_response(body)


# ------------------------------------------------------------------ errors


async def test_wrong_key_is_misconfiguration_without_leaking_it(http: httpx.AsyncClient) -> None:
    secret = "AIzaSyWrong-key-000000000000000000000"
    provider = GeminiProvider(http, credential=secret, base_url=ROOT)

    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(image_job(), Target(FLASH))

    assert caught.value.status == 400
    assert caught.value.message == "API key not valid. Please pass a valid API key."
    assert secret not in str(caught.value.record())


async def test_no_key_configured_fails_without_a_request(
    fake: FakeGemini, http: httpx.AsyncClient
) -> None:
    provider = GeminiProvider(http, credential=" , ", base_url=ROOT)

    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(image_job(), Target(FLASH))

    assert fake.requests == []


async def test_unknown_model_is_our_misconfiguration(provider: GeminiProvider) -> None:
    with pytest.raises(UpstreamMisconfiguredError, match="is not found for API version"):
        await provider.generate(image_job(), Target("gemini-9-imaginary"))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, API_KEY_INVALID_BODY, UpstreamMisconfiguredError),
        (
            403,
            google_error(403, "PERMISSION_DENIED", "Your API key was reported as leaked."),
            UpstreamMisconfiguredError,
        ),
        (
            400,
            google_error(
                400, "FAILED_PRECONDITION", "User location is not supported for the API use."
            ),
            UpstreamMisconfiguredError,
        ),
        (
            400,
            google_error(
                400,
                "INVALID_ARGUMENT",
                "This API method requires billing to be enabled. Please enable billing.",
            ),
            UpstreamMisconfiguredError,
        ),
        (
            400,
            google_error(
                400,
                "INVALID_ARGUMENT",
                'Invalid JSON payload received. Unknown name "x": Cannot find field.',
            ),
            UpstreamMisconfiguredError,
        ),
        (
            404,
            google_error(404, "NOT_FOUND", "models/x is not found for API version v1beta"),
            UpstreamMisconfiguredError,
        ),
        (429, QUOTA_BODY, UpstreamRateLimitedError),
        (503, OVERLOADED_BODY, UpstreamUnavailableError),
        (
            500,
            google_error(500, "INTERNAL", "Internal error encountered."),
            UpstreamUnavailableError,
        ),
        (
            504,
            google_error(
                504, "DEADLINE_EXCEEDED", "Deadline expired before operation could complete."
            ),
            UpstreamTimeoutError,
        ),
        (
            400,
            google_error(400, "INVALID_ARGUMENT", "Unable to process input image."),
            UpstreamRejectedError,
        ),
        (502, "<html>bad gateway</html>", UpstreamUnavailableError),
    ],
)
def test_google_errors_map_onto_the_error_tree(
    status: int, body: Any, expected: type[UpstreamError]
) -> None:
    error = error_from_response(status, body, provider="gemini")

    assert type(error) is expected
    assert error.provider == "gemini"


def test_quota_message_naming_the_key_is_still_a_rate_limit() -> None:
    body = google_error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for this API key.")

    assert isinstance(error_from_response(429, body, provider="gemini"), UpstreamRateLimitedError)


def test_first_key_of_the_comma_list() -> None:
    assert first_key(" , k1 , k2") == "k1"
    assert first_key("") is None
    assert first_key(None) is None


# ------------------------------------------------------------------ videos: what we send


async def test_text_to_video_request_poll_and_download(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    result = await provider.generate(video_job(size="1280x720"), Target(VEO3_FAST))

    submit, poll_pending, poll_done, download, storage = fake.requests
    assert submit.path == f"/v1beta/models/{VEO3_FAST}:predictLongRunning"
    assert submit.json == {
        "instances": [{"prompt": "waves at night"}],
        "parameters": {
            "aspectRatio": "16:9",
            "personGeneration": "allow_all",
            "sampleCount": 1,
            "durationSeconds": 4,
            "resolution": "720p",
        },
    }
    assert poll_pending.method == poll_done.method == "GET"
    assert poll_pending.path.startswith(f"/v1beta/models/{VEO3_FAST}/operations/")
    assert download.path.endswith(":download")
    assert download.headers["x-goog-api-key"] == DEFAULT_API_KEY
    # The storage redirect goes to another host, which never sees our key.
    assert storage.path.startswith("/storage/")
    assert storage.headers["host"] == "storage.fake.test"
    assert "x-goog-api-key" not in storage.headers
    assert_key_only_in_header(fake)
    assert [a.data for a in result.artifacts] == [video_bytes()]
    assert result.artifacts[0].url is None
    assert result.artifacts[0].content_type == "video/mp4"
    assert DEFAULT_API_KEY not in str(result.raw)


async def test_image_to_video_sends_only_the_first_image(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    first, second = picture("jpeg"), picture("png", (1, 2, 3))
    job = video_job(
        size="1080x1920",
        seconds=8,
        images=(InputFile(first, "image/jpeg", "a.jpg"), InputFile(second, "image/png", "b.png")),
    )

    await provider.generate(job, Target("veo-3.1-generate-preview"))

    submit = fake.requests[0].json
    assert submit["instances"] == [
        {
            "prompt": "waves at night",
            "image": {
                "bytesBase64Encoded": base64.b64encode(first).decode(),
                "mimeType": "image/jpeg",
            },
        }
    ]
    assert submit["parameters"] == {
        "aspectRatio": "9:16",
        "personGeneration": "allow_adult",
        "sampleCount": 1,
        "durationSeconds": 8,
        "resolution": "1080p",
    }


async def test_veo2_gets_no_resolution(fake: FakeGemini, provider: GeminiProvider) -> None:
    await provider.generate(video_job(seconds=5), Target("veo-2.0-generate-001"))

    assert fake.requests[0].json["parameters"] == {
        "aspectRatio": "16:9",
        "personGeneration": "allow_all",
        "sampleCount": 1,
        "durationSeconds": 5,
    }


def test_unknown_video_size_is_rejected() -> None:
    with pytest.raises(UpstreamRejectedError, match="Unsupported size '1024x1024'"):
        video_request(video_job(size="1024x1024"), Target(VEO3_FAST))


# ------------------------------------------------------------------ videos: life-cycle


async def test_polls_until_the_operation_is_done(
    fake: FakeGemini, provider: GeminiProvider
) -> None:
    fake.polls_before_done = 4

    await provider.generate(video_job(), Target(VEO3_FAST))

    polls = [r for r in fake.requests if "/operations/" in r.path]
    assert len(polls) == 5


async def test_moderated_video_is_rejected(provider: GeminiProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(video_job(prompt="forbidden-content"), Target(VEO3_FAST))

    assert caught.value.message == (
        f"Generated video rejected by Gemini content moderation: {VEO_FILTERED_REASON}"
    )
    assert caught.value.retry_elsewhere is False


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (13, "Internal error encountered.", UpstreamUnavailableError),
        (14, "The service is currently unavailable.", UpstreamUnavailableError),
        (8, "Resource has been exhausted (e.g. check quota).", UpstreamRateLimitedError),
        (3, "The input image violates our usage guidelines.", UpstreamRejectedError),
        (4, "Deadline expired before operation could complete.", UpstreamTimeoutError),
    ],
)
async def test_failed_operation_is_classified_by_its_code(
    fake: FakeGemini,
    provider: GeminiProvider,
    code: int,
    message: str,
    expected: type[UpstreamError],
) -> None:
    fake.operation_error = {"code": code, "message": message}

    with pytest.raises(expected) as caught:
        await provider.generate(video_job(), Target(VEO3_FAST))

    assert type(caught.value) is expected
    assert caught.value.message == f"Gemini video generation failed: {message}"


async def test_cancelled_mid_poll_stops_polling(fake: FakeGemini, http: httpx.AsyncClient) -> None:
    fake.polls_before_done = 10**6
    provider = GeminiProvider(http, credential=DEFAULT_API_KEY, base_url=ROOT, poll_interval=0.01)
    task = asyncio.create_task(provider.generate(video_job(), Target(VEO3_FAST)))
    async with asyncio.timeout(5):
        while len(fake.requests) < 3:  # noqa: ASYNC110 - the fake offers no event to wait on
            await asyncio.sleep(0.01)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    seen = len(fake.requests)
    await asyncio.sleep(0.05)

    assert len(fake.requests) == seen
    # The Gemini API has no cancel for Veo operations: nothing else is sent.
    assert all(r.method == "GET" for r in fake.requests[1:])


def test_encoded_video_sample_becomes_bytes() -> None:
    operation = {
        "done": True,
        "response": {
            "generateVideoResponse": {
                "generatedSamples": [{"video": {"encodedVideo": base64.b64encode(b"mp4").decode()}}]
            }
        },
    }

    result = video_from_operation(operation)

    assert result.artifacts[0].data == b"mp4"


def test_done_operation_without_samples_is_retryable() -> None:
    with pytest.raises(UpstreamUnavailableError, match="No video samples found"):
        video_from_operation({"done": True, "response": {"generateVideoResponse": {}}})


@pytest.mark.parametrize("name", [None, "", "../../files/x", "models/veo/operations/a/../b"])
def test_operation_name_must_be_a_model_operation(name: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        operation_name({"name": name})


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        (f"{ROOT}/v1beta/files/x:download?alt=media", True),
        ("https://generativelanguage.googleapis.com/v1beta/files/x:download", True),
        ("https://storage.googleapis.com/bucket/x.mp4", False),
        ("http://generativelanguage.googleapis.com/v1beta/files/x", False),
    ],
)
def test_key_is_sent_only_to_the_api_host(url: str, trusted: bool) -> None:
    assert is_api_host(url, ROOT) is trusted
