"""The NanoGPT adapter: the requests it sends, the Midjourney queue, how errors are read."""

from __future__ import annotations

import asyncio
import base64
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
from image_router.providers.nanogpt import (
    NanoGPTProvider,
    error_from_response,
    from_response,
    from_status,
    reported_cost,
    submitted_task,
    task_failure,
    to_request,
)
from image_router.providers.polling import DEFAULT_RETRY
from tests.fakes.nanogpt import (
    DEFAULT_API_KEY,
    MIDJOURNEY_REFUSAL,
    FakeNanoGPT,
    legacy_error,
    openai_style_error,
)
from tests.fakes.openai import MODERATION_MESSAGE, image_bytes
from tests.unit.providers.conftest import ROOT, data_uri, jobs, upload, vendor_fixtures

job = jobs(model="openai/gpt-image-1")
fake, provider = vendor_fixtures(
    FakeNanoGPT,
    lambda http: NanoGPTProvider(
        http, credential=DEFAULT_API_KEY, base_url=ROOT, poll_interval=0.0
    ),
)


# ------------------------------------------------------------------ what we send


async def test_text_to_image_sends_nanogpt_fields_and_reads_cost(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    result = await provider.generate(
        job(size="1536x1024", quality="high", user_ref="u_42"),
        Target("gpt-image-1", {"quality": "high"}),
    )

    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/v1/images/generations")
    assert sent.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert sent.content_type == "application/json"
    # No size: NanoGPT picks the model's default, as the reference does.
    assert sent.json == {
        "prompt": "a lighthouse at dusk",
        "model": "gpt-image-1",
        "n": 1,
        "quality": "high",
        "user": "u_42",
    }
    (artifact,) = result.artifacts
    assert artifact.data == image_bytes("png")
    assert artifact.url is None
    assert result.reported_cost == Decimal("0.167")
    assert isinstance(result.created, int)
    assert result.extra == {}  # our remaining NanoGPT balance must not reach clients


async def test_quality_is_sent_only_when_the_route_maps_it(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    await provider.generate(job(quality="high"), Target("seedream-v4"))
    assert "quality" not in fake.last.json

    await provider.generate(job(quality="auto"), Target("gpt-image-1-mini", {"quality": None}))
    assert "quality" not in fake.last.json

    await provider.generate(job(quality="low"), Target("gpt-image-1-mini", {"quality": "low"}))
    assert fake.last.json["quality"] == "low"


async def test_one_image_goes_as_image_data_url(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    image = upload("jpeg")

    await provider.generate(job(images=(image,)), Target("seedream-v4"))

    body = fake.last.json
    assert body["imageDataUrl"] == data_uri(image)
    assert body["imageDataUrl"].startswith("data:image/jpeg;base64,")
    assert "imageDataUrls" not in body


async def test_several_images_go_as_image_data_urls_in_order(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    images = (upload("png", (255, 0, 0)), upload("webp", (0, 255, 0)), upload("jpeg"))

    result = await provider.generate(job(images=images), Target("gpt-image-1"))

    body = fake.last.json
    assert body["imageDataUrls"] == [data_uri(image) for image in images]
    assert "imageDataUrl" not in body
    assert result.artifacts


async def test_mask_goes_as_mask_data_url(fake: FakeNanoGPT, provider: NanoGPTProvider) -> None:
    image, mask = upload("png"), upload("png", (255, 255, 255))

    await provider.generate(job(images=(image,), mask=mask), Target("gpt-image-1"))

    assert fake.last.json["maskDataUrl"] == data_uri(mask)
    assert fake.last.json["imageDataUrl"] == data_uri(image)


async def test_mask_without_image_is_refused_before_calling(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    with pytest.raises(UpstreamRejectedError):
        await provider.generate(job(mask=upload()), Target("gpt-image-1"))

    assert fake.requests == []


async def test_no_key_is_misconfiguration_without_a_call(
    fake: FakeNanoGPT, http: httpx.AsyncClient
) -> None:
    provider = NanoGPTProvider(http, credential=None, base_url=ROOT)

    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(job(), Target("gpt-image-1"))

    assert fake.requests == []


def test_default_host_is_nano_gpt() -> None:
    provider = NanoGPTProvider(httpx.AsyncClient(), credential="k")

    assert provider.base_url == "https://nano-gpt.com"
    assert {"nanogpt_data_urls", "single_data_uri"} <= NanoGPTProvider.image_inputs


# ------------------------------------------------------------------ Midjourney queue


async def test_midjourney_submits_then_polls_until_success(
    fake: FakeNanoGPT, provider: NanoGPTProvider, http: httpx.AsyncClient
) -> None:
    fake.midjourney_polls = 3
    image = upload("png")

    result = await provider.generate(
        job(model="midjourney/midjourney", images=(image,)), Target("midjourney")
    )

    submit = fake.generation_requests
    assert len(submit) == 1
    assert submit[0].json == {
        "prompt": "a lighthouse at dusk",
        "model": "midjourney",
        "n": 1,
        "imageDataUrl": data_uri(image),
    }
    (task_id,) = fake.tasks
    checks = fake.status_requests
    assert len(checks) == 4  # three IN_PROGRESS answers, then SUCCESS
    for check in checks:
        assert check.headers["x-api-key"] == DEFAULT_API_KEY
        assert "authorization" not in check.headers
        assert check.json == {"task_id": task_id}
    (artifact,) = result.artifacts
    assert artifact.url == f"{ROOT}/files/{fake.tasks[task_id].image_id}.png"
    assert (await http.get(artifact.url)).content == image_bytes("png")
    # The status answers carry no cost: the submission's is what NanoGPT charged.
    assert result.reported_cost == Decimal("0.0808")
    assert result.raw is not None
    assert result.raw["submission"]["task_id"] == task_id
    assert result.raw["status"]["status"] == "SUCCESS"


async def test_midjourney_moderation_failure_is_rejected(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="a forbidden-content scene"), Target("midjourney"))

    assert caught.value.message == MIDJOURNEY_REFUSAL
    assert caught.value.retry_elsewhere is False
    assert caught.value.body["status"] == "FAILED"


async def test_midjourney_unexplained_failure_may_go_elsewhere(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    fake.midjourney_fail_reason = "Midjourney returned an empty job"

    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.generate(job(), Target("midjourney"))

    assert caught.value.message == "Midjourney returned an empty job"
    assert caught.value.retry_elsewhere is True
    assert len(fake.generation_requests) == 1  # a failed task is not polled again


async def test_a_passing_status_check_error_does_not_lose_the_paid_task(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    fake.fail_polls(502, times=DEFAULT_RETRY.max_failures - 1)

    result = await provider.generate(job(), Target("midjourney"))

    assert result.artifacts[0].url
    assert len(fake.generation_requests) == 1


async def test_status_checks_failing_in_a_row_end_the_job(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    fake.midjourney_polls = 50
    fake.fail_polls(500, times=DEFAULT_RETRY.max_failures)

    with pytest.raises(UpstreamUnavailableError):
        await provider.generate(job(), Target("midjourney"))

    assert len(fake.status_requests) == DEFAULT_RETRY.max_failures


async def test_status_check_refusing_our_key_ends_at_once(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    fake.fail_polls(401)

    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target("midjourney"))

    assert caught.value.message == "Invalid API key"
    assert len(fake.status_requests) == 1


async def test_cancelled_job_stops_polling(fake: FakeNanoGPT, http: httpx.AsyncClient) -> None:
    provider = NanoGPTProvider(http, credential=DEFAULT_API_KEY, base_url=ROOT, poll_interval=0.001)
    fake.midjourney_polls = 1_000_000
    task = asyncio.create_task(provider.generate(job(), Target("midjourney")))
    for _ in range(2000):
        if len(fake.status_requests) >= 2:
            break
        await asyncio.sleep(0.001)
    else:
        pytest.fail("the provider never polled")

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    seen = len(fake.status_requests)
    await asyncio.sleep(0.05)

    assert len(fake.status_requests) == seen


async def test_polling_with_zero_interval_yields_to_other_tasks(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    fake.midjourney_polls = 20
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    background = asyncio.create_task(ticker())
    try:
        await provider.generate(job(), Target("midjourney"))
    finally:
        background.cancel()

    assert ticks >= 20


# ------------------------------------------------------------------ errors over the wire


async def test_content_refusal_is_rejected(fake: FakeNanoGPT, provider: NanoGPTProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="forbidden-content"), Target("gpt-image-1"))

    assert caught.value.message == MODERATION_MESSAGE
    assert caught.value.status == 400


async def test_wrong_model_name_is_our_misconfiguration(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target("gpt-image-9"))

    assert caught.value.retry_elsewhere is True


async def test_out_of_funds_switches_provider(fake: FakeNanoGPT, provider: NanoGPTProvider) -> None:
    fake.fail_next(402)

    with pytest.raises(UpstreamRateLimitedError) as caught:
        await provider.generate(job(), Target("gpt-image-1"))

    assert caught.value.message == "Insufficient balance"


async def test_an_echoed_key_never_reaches_the_error_record(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    fake.fail_next(400, openai_style_error(f"Key {DEFAULT_API_KEY} cannot use this model"))

    with pytest.raises(UpstreamError) as caught:
        await provider.generate(job(), Target("gpt-image-1"))

    assert DEFAULT_API_KEY not in str(caught.value.record())
    assert DEFAULT_API_KEY not in caught.value.message


async def test_fake_refuses_what_nanogpt_refuses(
    fake: FakeNanoGPT, provider: NanoGPTProvider
) -> None:
    # Several images to a single-image model: the adapter forwards them, NanoGPT says no.
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(images=(upload(), upload())), Target("midjourney"))

    assert "multiple input images" in caught.value.message


# ------------------------------------------------------------------ pure mappings


def test_to_request_is_pure_and_single_image_token_matches() -> None:
    image = upload("webp")

    body = to_request(job(images=(image,)), Target("midjourney"))

    assert body == {
        "prompt": "a lighthouse at dusk",
        "model": "midjourney",
        "n": 1,
        "imageDataUrl": data_uri(image),
    }


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, openai_style_error(MODERATION_MESSAGE, "image_generation_user_error"), "rejected"),
        (400, openai_style_error("Prompt is required"), "rejected"),
        (401, openai_style_error("Invalid API key", code="invalid_api_key"), "misconfigured"),
        (403, legacy_error("Model not available for this key", 403), "misconfigured"),
        (404, openai_style_error("Model x not found", code="model_not_found"), "misconfigured"),
        (400, legacy_error("Invalid API key", 400), "misconfigured"),
        (402, legacy_error("Insufficient balance", 402), "rate_limited"),
        (400, legacy_error("Insufficient balance", 400), "rate_limited"),
        (400, openai_style_error("You exceeded your current quota"), "rate_limited"),
        (429, openai_style_error("Too many requests"), "rate_limited"),
        (400, legacy_error("The model is overloaded. Please try again later.", 400), "unavailable"),
        (
            400,
            openai_style_error(
                "ByteDance responded with an error. The provider returned the . "
                "Additional information below."
            ),
            "unavailable",
        ),
        (400, openai_style_error("An unknown error occurred"), "unavailable"),
        (500, "<html>Internal Server Error</html>", "unavailable"),
        (504, openai_style_error("Gateway timeout"), "timeout"),
    ],
)
def test_error_classification(status: int, body: Any, expected: str) -> None:
    error = error_from_response(status, body)

    assert error.kind == expected
    assert error.provider == "nanogpt"
    assert error.status == status


def test_task_failure_reasons() -> None:
    assert isinstance(task_failure(MIDJOURNEY_REFUSAL, {}), UpstreamRejectedError)
    assert isinstance(task_failure("Banned prompt detected: gore", {}), UpstreamRejectedError)
    assert isinstance(task_failure(None, {}), UpstreamUnavailableError)
    assert isinstance(task_failure("Insufficient credit", {}), UpstreamRateLimitedError)
    assert task_failure(None, {}).message == "Midjourney generation failed"


def test_submission_is_recognised_only_with_submitted_status() -> None:
    assert submitted_task({"task_id": "17", "status": "submitted"}) == "17"
    assert submitted_task({"task_id": 17, "status": "submitted"}) == "17"
    assert submitted_task({"created": 1, "data": []}) is None
    with pytest.raises(UpstreamProtocolError):
        submitted_task({"status": "submitted"})


@pytest.mark.parametrize("status", ["PENDING", "RUNNING", "IN_PROGRESS", "submitted", "NOT_START"])
def test_running_statuses_keep_polling(status: str) -> None:
    assert from_status({"status": status, "task_id": "1"}, None) is None


def test_status_answers_that_make_no_sense_are_protocol_errors() -> None:
    with pytest.raises(UpstreamProtocolError):
        from_status({"status": "SUCCESS", "imageUrl": None}, None)
    with pytest.raises(UpstreamProtocolError):
        from_status({"task_id": "1"}, None)
    with pytest.raises(UpstreamProtocolError):
        from_status("<html>", None)


def test_from_response_takes_urls_and_redacts_base64() -> None:
    payload = base64.b64encode(image_bytes("png")).decode()
    body = {"created": 5, "data": [{"b64_json": payload}, {"url": "https://x/y.png"}], "cost": 0.03}

    result = from_response(body)

    assert result.artifacts[0].data == image_bytes("png")
    assert result.artifacts[1].url == "https://x/y.png"
    assert result.reported_cost == Decimal("0.03")
    assert payload not in str(result.raw)


@pytest.mark.parametrize(
    "body",
    [{"created": 1}, {"data": []}, {"data": [{"b64_json": "!!not base64!!"}]}, {"data": [{}]}, []],
)
def test_from_response_without_usable_images_is_a_protocol_error(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        from_response(body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"cost": 0.1}, Decimal("0.1")),
        ({"cost": 3}, Decimal("3")),
        ({"cost": "0.0808"}, Decimal("0.0808")),
        ({"cost": True}, None),
        ({"cost": "free"}, None),
        ({"cost": -1}, None),
        ({"cost": float("nan")}, None),
        ({}, None),
    ],
)
def test_reported_cost_is_exact(body: dict[str, Any], expected: Decimal | None) -> None:
    assert reported_cost(body) == expected
