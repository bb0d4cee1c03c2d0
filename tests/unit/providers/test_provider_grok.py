"""The xAI (grok) adapter: image and video requests, the video job life-cycle, errors."""

from __future__ import annotations

import asyncio
import base64
from decimal import Decimal
from typing import Any

import httpx
import pytest

from image_router.providers.contract import Job, Target
from image_router.providers.errors import (
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from image_router.providers.grok import (
    IMAGE_ASPECT_RATIOS,
    GrokProvider,
    error_from_response,
    from_image_response,
    read_video_status,
    to_request,
)
from image_router.providers.polling import DEFAULT_RETRY
from tests.fakes.grok import DEFAULT_API_KEY, HIGH_DEMAND, MODERATED_VIDEO, FakeGrok, xai_error
from tests.unit.providers.conftest import ROOT, jobs, upload, vendor_fixtures

USER = "acct-7d1f0c2e"
IMAGE = Target("grok-imagine-image")
VIDEO = Target("grok-imagine-video")


job = jobs(model="xAI/grok-imagine-image", prompt="a lighthouse", user_ref=USER)
fake, provider = vendor_fixtures(
    FakeGrok,
    lambda http: GrokProvider(
        http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1", poll_interval=0
    ),
)


def video(**overrides: Any) -> Job:
    return job(modality="video", model="xAI/grok-imagine-video", **overrides)


# ------------------------------------------------------------------ images


async def test_text_to_image_sends_the_reference_body(
    fake: FakeGrok, provider: GrokProvider, http: httpx.AsyncClient
) -> None:
    result = await provider.generate(job(size="1408x768"), IMAGE)

    sent = fake.last
    assert (sent.method, sent.path) == ("POST", "/v1/images/generations")
    assert sent.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert sent.headers["accept"] == "application/json"
    assert sent.json == {
        "model": "grok-imagine-image",
        "prompt": "a lighthouse",
        "n": 1,
        "user": USER,
        "aspect_ratio": "16:9",
    }
    (artifact,) = result.artifacts
    assert artifact.revised_prompt == "A vivid rendering of a lighthouse"
    assert artifact.url is not None
    assert (await http.get(artifact.url)).content.startswith(b"\xff\xd8\xff")
    assert result.reported_cost == Decimal("0.02")
    assert result.extra == {"usage": {"cost_in_usd_ticks": 200_000_000}}
    assert DEFAULT_API_KEY not in str(result.raw)


@pytest.mark.parametrize(("size", "ratio"), sorted(IMAGE_ASPECT_RATIOS.items()))
def test_every_catalog_size_maps_to_its_aspect_ratio(size: str, ratio: str) -> None:
    assert to_request(job(size=size), IMAGE).body["aspect_ratio"] == ratio


@pytest.mark.parametrize("size", ["auto", "1000x1000"])
def test_sizes_without_a_ratio_send_none(size: str) -> None:
    assert "aspect_ratio" not in to_request(job(size=size), IMAGE).body


async def test_an_input_image_is_an_edit_with_a_data_uri(
    fake: FakeGrok, provider: GrokProvider
) -> None:
    image = upload("jpeg")

    result = await provider.generate(job(images=(image,)), IMAGE)

    assert fake.last.path == "/v1/images/edits"
    assert fake.last.json["image"] == {"url": image.data_uri()}
    assert fake.last.json["image"]["url"].startswith("data:image/jpeg;base64,")
    assert result.reported_cost == Decimal("0.022")


def test_more_than_one_image_or_a_mask_is_refused() -> None:
    with pytest.raises(UpstreamRejectedError, match="only one image"):
        to_request(job(images=(upload(), upload())), IMAGE)
    with pytest.raises(UpstreamRejectedError, match="Mask"):
        to_request(job(images=(upload(),), mask=upload()), IMAGE)


def test_no_user_ref_sends_no_user() -> None:
    assert "user" not in to_request(job(user_ref=""), IMAGE).body


async def test_a_moderated_image_is_the_users_refusal(provider: GrokProvider) -> None:
    with pytest.raises(UpstreamRejectedError, match="content moderation") as caught:
        await provider.generate(job(prompt="forbidden-content"), IMAGE)
    assert caught.value.retry_elsewhere is False


def test_base64_items_become_bytes() -> None:
    png = upload().data
    result = from_image_response({"data": [{"b64_json": base64.b64encode(png).decode()}]})
    assert result.artifacts[0].data == png
    with pytest.raises(UpstreamProtocolError, match="base64"):
        from_image_response({"data": [{"b64_json": "not base64!"}]})


@pytest.mark.parametrize("body", [{"data": []}, {"data": [{"url": ""}]}, {"nope": 1}, []])
def test_an_answer_without_images_is_a_protocol_error(body: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        from_image_response(body)


# ------------------------------------------------------------------ video


async def test_video_submits_then_polls_until_the_url(
    fake: FakeGrok, provider: GrokProvider
) -> None:
    image = upload()
    fake.polls_before_done = 2

    result = await provider.generate(video(size="848x480", seconds=7.0, images=(image,)), VIDEO)

    submit, *polls = fake.requests
    assert (submit.method, submit.path) == ("POST", "/v1/videos/generations")
    assert submit.json == {
        "model": "grok-imagine-video",
        "prompt": "a lighthouse",
        "duration": 7,
        "aspect_ratio": "16:9",
        "resolution": "480p",
        "user": USER,
        "image": {"url": image.data_uri()},
    }
    (request_id,) = fake.videos
    assert [(p.method, p.path) for p in polls] == [("GET", f"/v1/videos/{request_id}")] * 3
    assert all(p.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}" for p in polls)
    (artifact,) = result.artifacts
    assert artifact.content_type == "video/mp4"
    assert artifact.url is not None and artifact.url.endswith(".mp4")
    assert result.reported_cost == Decimal("0.35")


@pytest.mark.parametrize(
    ("size", "seconds", "expected"),
    [
        ("auto", None, (5, "16:9", "720p")),
        ("720x1280", 10.0, (10, "9:16", "720p")),
        ("480x640", 3.0, (3, "3:4", "480p")),
        ("1920x1080", 6.0, (6, "16:9", "720p")),  # unknown sizes fall back like the reference
    ],
)
def test_video_size_and_seconds_mapping(
    size: str, seconds: float | None, expected: tuple[int, str, str]
) -> None:
    body = to_request(video(size=size, seconds=seconds), VIDEO).body
    assert (body["duration"], body["aspect_ratio"], body["resolution"]) == expected


async def test_a_pending_answer_without_a_body_keeps_polling(
    fake: FakeGrok, provider: GrokProvider
) -> None:
    fake.empty_pending = True
    fake.polls_before_done = 3

    result = await provider.generate(video(), VIDEO)

    assert result.artifacts
    assert len(fake.requests) == 5


@pytest.mark.parametrize(
    ("prompt", "expected", "message"),
    [
        ("forbidden-content", UpstreamRejectedError, MODERATED_VIDEO),
        ("video-fails", UpstreamUnavailableError, "Video rendering failed"),
        ("video-expires", UpstreamTimeoutError, "expire"),
    ],
)
async def test_a_failed_video_job_raises_the_matching_error(
    provider: GrokProvider, prompt: str, expected: type[Exception], message: str
) -> None:
    with pytest.raises(expected, match=message) as caught:
        await provider.generate(video(prompt=prompt), VIDEO)
    assert type(caught.value) is expected


@pytest.mark.parametrize(
    ("status", "expected"), [(500, UpstreamUnavailableError), (429, UpstreamRateLimitedError)]
)
async def test_a_failed_poll_raises(
    fake: FakeGrok, provider: GrokProvider, status: int, expected: type[Exception]
) -> None:
    fake.fail_polls(status, times=DEFAULT_RETRY.max_failures)
    with pytest.raises(expected):
        await provider.generate(video(), VIDEO)
    assert [r.method for r in fake.requests] == ["POST"] + ["GET"] * DEFAULT_RETRY.max_failures


async def test_an_error_poll_without_a_body_is_not_mistaken_for_pending(
    fake: FakeGrok, provider: GrokProvider
) -> None:
    fake.fail_polls(500, b"", times=DEFAULT_RETRY.max_failures)
    with pytest.raises(UpstreamUnavailableError, match="HTTP 500"):
        await provider.generate(video(), VIDEO)


async def test_a_submit_without_request_id_is_a_protocol_error() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json={"status": "ok"}))
    async with httpx.AsyncClient(transport=transport) as client:
        provider = GrokProvider(client, credential="k", poll_interval=0)
        with pytest.raises(UpstreamProtocolError, match="No request_id"):
            await provider.generate(video(), VIDEO)


async def test_a_cancelled_video_task_stops_polling(
    fake: FakeGrok, http: httpx.AsyncClient
) -> None:
    fake.polls_before_done = 10_000
    provider = GrokProvider(http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1")
    provider.poll_interval = 0.01
    task = asyncio.create_task(provider.generate(video(), VIDEO))
    await asyncio.wait_for(fake.polled.wait(), 5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    seen = len(fake.requests)
    await asyncio.sleep(0.05)

    # xAI has no cancel endpoint: nothing is sent, and nothing more is polled.
    assert len(fake.requests) == seen
    assert {r.method for r in fake.requests} == {"POST", "GET"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, None),
        ({"status": "pending"}, None),
        ({"progress": 10}, None),
        ({"status": "done", "response": {"video": {"url": "https://v/x.mp4"}}}, "https://v/x.mp4"),
        ({"video": {"url": "https://v/y.mp4"}, "model": "grok-imagine-video"}, "https://v/y.mp4"),
    ],
)
def test_read_video_status(body: Any, expected: str | None) -> None:
    result = read_video_status(body)
    assert (result.artifacts[0].url if result else None) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"status": "done", "video": {"respect_moderation": False}}, UpstreamRejectedError),
        ({"status": "done"}, UpstreamProtocolError),
        ({"status": "weird"}, UpstreamProtocolError),
        ({"status": "failed"}, UpstreamUnavailableError),
        ({"status": "failed", "error": MODERATED_VIDEO}, UpstreamRejectedError),
        ({"status": "expired"}, UpstreamTimeoutError),
        ("text", UpstreamProtocolError),
    ],
)
def test_read_video_status_failures(body: Any, expected: type[Exception]) -> None:
    with pytest.raises(expected) as caught:
        read_video_status(body)
    assert type(caught.value) is expected


# ------------------------------------------------------------------ errors


async def test_high_demand_switches_provider(provider: GrokProvider) -> None:
    with pytest.raises(UpstreamUnavailableError, match="high demand") as caught:
        await provider.generate(job(prompt="high-demand"), IMAGE)
    assert caught.value.retry_elsewhere is True
    assert caught.value.status == 503


async def test_a_guideline_breach_is_the_users_refusal_despite_its_403(
    provider: GrokProvider,
) -> None:
    with pytest.raises(UpstreamRejectedError, match="usage guidelines"):
        await provider.generate(job(prompt="a guideline-breach"), IMAGE)


async def test_no_credits_is_rate_limited(fake: FakeGrok, provider: GrokProvider) -> None:
    fake.out_of_credits = True
    with pytest.raises(UpstreamRateLimitedError, match="credits"):
        await provider.generate(job(), IMAGE)


async def test_wrong_key_is_misconfigured_although_xai_answers_400(
    http: httpx.AsyncClient,
) -> None:
    wrong = "xai-the-wrong-key-123456"
    provider = GrokProvider(http, credential=wrong, base_url=f"{ROOT}/v1")
    with pytest.raises(UpstreamMisconfiguredError, match="Incorrect API key") as caught:
        await provider.generate(job(), IMAGE)
    assert caught.value.status == 400
    assert wrong not in str(caught.value.record())


async def test_unknown_model_is_our_misconfiguration(provider: GrokProvider) -> None:
    with pytest.raises(UpstreamMisconfiguredError, match="does not exist"):
        await provider.generate(job(), Target("grok-9-image"))


async def test_an_edit_on_a_model_without_edits_is_the_users_error(
    provider: GrokProvider,
) -> None:
    with pytest.raises(UpstreamRejectedError, match="does not support image editing"):
        await provider.generate(job(images=(upload(),)), Target("grok-2-image"))


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, xai_error(HIGH_DEMAND), UpstreamUnavailableError),
        (429, xai_error(HIGH_DEMAND), UpstreamUnavailableError),
        (400, xai_error("Incorrect API key provided: xa***ey."), UpstreamMisconfiguredError),
        (
            429,
            xai_error("Your team has reached its monthly spending limit"),
            UpstreamRateLimitedError,
        ),
        (400, xai_error(MODERATED_VIDEO), UpstreamRejectedError),
        (400, xai_error("prompt: must not be empty"), UpstreamRejectedError),
        (404, xai_error("The model x does not exist"), UpstreamMisconfiguredError),
        (500, "<html>oops</html>", UpstreamUnavailableError),
        (502, None, UpstreamUnavailableError),
    ],
)
def test_error_from_response(status: int, body: Any, expected: type[Exception]) -> None:
    error = error_from_response(status, body)
    assert type(error) is expected
    assert error.retry_elsewhere is (expected is not UpstreamRejectedError)
    assert error.message
