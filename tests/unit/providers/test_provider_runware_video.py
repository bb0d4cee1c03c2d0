"""The Runware adapter, videos: async submit, `getResponse` polling, failures, abandonment."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal
from typing import Any

import httpx
import pytest

from image_router.providers.contract import Job, Target
from image_router.providers.errors import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from image_router.providers.polling import DEFAULT_RETRY
from image_router.providers.runware import RunwareProvider, video_outcome
from tests.fakes.runware import (
    DEFAULT_API_KEY,
    READ_RESULTS_MESSAGE,
    REFUSAL_MESSAGE,
    TASK_TIMEOUT_MESSAGE,
    VIDEO_BYTES,
    FakeRunware,
    encoded,
    png_input,
)
from tests.unit.providers.conftest import ROOT, vendor_fixtures

TASK = "6f1c2b7a-2d5b-4a8e-8c3f-9b1e7d2a5c40"
JOB = Job(modality="video", model="m", prompt="a kite over the sea", seconds=5, job_id=TASK)
KLING = Target("klingai:5@1", {"image_input": "frame_image", "default_size": "1280x720"})
POLL = {"taskType": "getResponse", "taskUUID": TASK}


fake, provider = vendor_fixtures(
    FakeRunware,
    lambda http: RunwareProvider(
        http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1", poll_interval=0.0
    ),
)


async def test_text_to_video_submits_then_polls_until_success(
    provider: RunwareProvider, fake: FakeRunware, http: httpx.AsyncClient
) -> None:
    fake.polls_to_finish = 3

    result = await provider.generate(JOB, KLING)

    submit, *polls = fake.tasks
    assert submit == {
        "taskType": "videoInference",
        "taskUUID": TASK,
        "deliveryMethod": "async",
        "positivePrompt": "a kite over the sea",
        "model": "klingai:5@1",
        "outputFormat": "mp4",
        "numberResults": 1,
        "includeCost": True,
        "duration": 5,
        "width": 1280,
        "height": 720,
    }
    assert polls == [POLL, POLL, POLL]
    assert all(r.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}" for r in fake.requests)
    (artifact,) = result.artifacts
    assert artifact.content_type == "video/mp4"
    assert artifact.url is not None
    assert (await http.get(artifact.url)).content == VIDEO_BYTES
    assert result.reported_cost == Decimal("0.25")


async def test_frame_image_sends_the_first_upload_only(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    first, second = png_input(), png_input(64, 48)
    job = replace(JOB, images=(first, second))
    # Sora 2 has a text-only default size: with a frame the frame decides.
    target = Target("openai:3@1", {"image_input": "frame_image", "text_default_size": "1280x720"})

    await provider.generate(job, target)

    submit = fake.tasks[0]
    assert submit["frameImages"] == [{"inputImage": encoded(first)}]
    assert "width" not in submit
    assert "height" not in submit


async def test_inputs_frame_images_with_steps_for_ltx_2(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    frame = png_input()
    target = Target(
        "lightricks:ltx@2",
        {"image_input": "inputs_frame_images", "text_default_size": "1408x768", "steps": 40},
    )

    await provider.generate(replace(JOB, images=(frame,), seconds=1.2), target)

    submit = fake.tasks[0]
    assert submit["inputs"] == {"frameImages": [{"image": encoded(frame)}]}
    assert submit["steps"] == 40
    assert submit["duration"] == 1.2
    assert "frameImages" not in submit


async def test_text_default_size_and_provider_settings(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    ltx = Target("lightricks:2@0", {"text_default_size": "1920x1080"})
    seedance = Target(
        "bytedance:seedance@1.5-pro", {"provider_settings": {"bytedance": {"audio": True}}}
    )

    await provider.generate(JOB, ltx)
    await provider.generate(replace(JOB, size="1280x720", seconds=12.0), seedance)

    text_ltx, seedance_task = (t for t in fake.tasks if t["taskType"] == "videoInference")
    assert (text_ltx["width"], text_ltx["height"]) == (1920, 1080)
    assert "providerSettings" not in text_ltx
    assert seedance_task["providerSettings"] == {"bytedance": {"audio": True}}
    assert (seedance_task["width"], seedance_task["height"]) == (1280, 720)
    assert seedance_task["duration"] == 12
    assert isinstance(seedance_task["duration"], int)


# ---------------------------------------------------------------------------- failures


@pytest.mark.parametrize(
    ("code", "message", "in_data", "expected"),
    [
        ("timeoutProvider", TASK_TIMEOUT_MESSAGE, False, UpstreamTimeoutError),
        ("providerError", READ_RESULTS_MESSAGE, False, UpstreamUnavailableError),
        ("providerError", READ_RESULTS_MESSAGE, True, UpstreamUnavailableError),
        ("invalidProviderContent", REFUSAL_MESSAGE, True, UpstreamRejectedError),
        ("invalidFrameImage", "The frame image is too small.", False, UpstreamRejectedError),
    ],
)
async def test_a_failed_video_raises_instead_of_billing(
    provider: RunwareProvider,
    fake: FakeRunware,
    code: str,
    message: str,
    in_data: bool,
    expected: type[UpstreamError],
) -> None:
    fake.polls_to_finish = 2
    fake.fail_videos(code, message, in_data=in_data)

    # A failure the adapter misses would poll forever: bound it.
    with pytest.raises(expected) as caught:
        async with asyncio.timeout(5):
            await provider.generate(JOB, KLING)

    assert caught.value.message == message
    assert caught.value.code == code
    assert len(fake.tasks) == 3  # submit + 2 polls, then it stopped


async def test_refused_video_uses_the_providers_words(provider: RunwareProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(replace(JOB, prompt="a forbidden-content scene"), KLING)
    assert caught.value.retry_elsewhere is False
    assert caught.value.status == 400


async def test_poll_failures_are_translated_like_submit_failures(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    fake.polls_to_finish = 5
    fake.fail_polls(500, times=DEFAULT_RETRY.max_failures)
    with pytest.raises(UpstreamUnavailableError):
        await provider.generate(JOB, KLING)

    fake.reset()
    fake.hang_next(0.0, times=2)  # submit and first poll
    fake.garbage_next(times=DEFAULT_RETRY.max_failures)
    with pytest.raises(UpstreamProtocolError):
        await provider.generate(JOB, KLING)
    assert [t["taskType"] for t in fake.tasks].count("videoInference") == 1  # never resubmitted


async def test_an_abandoned_video_stops_being_polled(
    http: httpx.AsyncClient, fake: FakeRunware
) -> None:
    provider = RunwareProvider(
        http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1", poll_interval=0.01
    )
    fake.polls_to_finish = 10_000
    running = asyncio.create_task(provider.generate(JOB, KLING))
    for _ in range(500):
        if len(fake.requests) >= 3:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the provider never polled")

    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    seen = len(fake.requests)
    await asyncio.sleep(0.1)

    # Runware has no call that stops a task: nothing else is sent after the cancel.
    assert len(fake.requests) == seen
    assert {t["taskType"] for t in fake.tasks} == {"videoInference", "getResponse"}


# ---------------------------------------------------------------------------- pure


def test_processing_or_unknown_states_keep_polling() -> None:
    assert video_outcome({"data": []}, TASK) is None
    assert video_outcome({"data": [{"taskUUID": TASK, "status": "processing"}]}, TASK) is None
    assert video_outcome({"data": [{"taskUUID": TASK, "status": "queued"}]}, TASK) is None
    done: dict[str, Any] = {"taskUUID": "other", "status": "success", "videoURL": "https://x/v"}
    assert video_outcome({"data": [done]}, TASK) is None


def test_success_reads_media_url_and_cost() -> None:
    body = {"data": [{"taskUUID": TASK, "status": "success", "mediaURL": "https://vm/v.mp4"}]}
    result = video_outcome(body, TASK)

    assert result is not None
    assert result.artifacts[0].url == "https://vm/v.mp4"
    assert result.reported_cost is None


def test_success_without_a_url_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        video_outcome({"data": [{"taskUUID": TASK, "status": "success"}]}, TASK)
