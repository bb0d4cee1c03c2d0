"""The WaveSpeed adapter: the tasks it submits, sync and async life-cycles, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from image_router.catalog.loader import load_catalog
from image_router.providers.contract import Job, Target
from image_router.providers.errors import (
    UpstreamCancelledError,
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from image_router.providers.polling import DEFAULT_RETRY
from image_router.providers.wavespeed import (
    WavespeedProvider,
    error_from_response,
    from_prediction,
    prediction_of,
    task_error,
    to_request,
)
from tests.fakes.wavespeed import (
    DEFAULT_API_KEY,
    INSUFFICIENT_BALANCE,
    MODERATION_ERROR,
    NOT_FOUND,
    RATE_LIMITED,
    UNAUTHORIZED,
    FakeWavespeed,
    envelope,
)
from tests.unit.providers.conftest import ROOT, jobs, upload, vendor_fixtures

HUNYUAN = Target(
    "wavespeed-ai/hunyuan-video-1.5/text-to-video",
    {"image_upstream": "wavespeed-ai/hunyuan-video-1.5/image-to-video"},
)
GHIBLI = Target("wavespeed-ai/ghibli")
HAILUO = Target("minimax/hailuo-02/standard")


image_job = jobs(model="wavespeed/ghibli", prompt="make it ghibli", images=(upload("jpeg"),))
video_job = jobs(
    modality="video",
    model="tencent/hunyuan-video-1.5",
    prompt="waves at night",
    seconds=5.0,
    size="1280x720",
)
fake, provider = vendor_fixtures(
    FakeWavespeed,
    lambda http: WavespeedProvider(
        http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/api/v3", poll_interval=0.0
    ),
)


# ------------------------------------------------------------------ what we send (pure)


def test_image_task_asks_for_sync_mode_with_a_data_uri_and_webp() -> None:
    sent = image_job()

    request = to_request(sent, GHIBLI)

    assert request.model == "wavespeed-ai/ghibli"
    assert request.body == {
        "prompt": "make it ghibli",
        "image": sent.images[0].data_uri(),
        "enable_base64_output": False,
        "enable_sync_mode": True,
        "output_format": "webp",
    }
    # The upload keeps its real type (the reference labelled every image PNG, §13.12).
    assert request.body["image"].startswith("data:image/jpeg;base64,")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_image_task_forwards_the_requested_format(fmt: str) -> None:
    assert to_request(image_job(output_format=fmt), GHIBLI).body["output_format"] == fmt


def test_text_to_video_sends_prompt_and_whole_seconds() -> None:
    request = to_request(video_job(seconds=8.0), HUNYUAN)

    assert request.model == "wavespeed-ai/hunyuan-video-1.5/text-to-video"
    assert request.body == {"prompt": "waves at night", "duration": 8}


def test_an_image_switches_hunyuan_to_image_to_video() -> None:
    first, second = upload("png"), upload("webp")

    request = to_request(video_job(images=(first, second)), HUNYUAN)

    assert request.model == "wavespeed-ai/hunyuan-video-1.5/image-to-video"
    assert request.body == {"prompt": "waves at night", "image": first.data_uri(), "duration": 5}


def test_without_image_upstream_an_image_keeps_the_model() -> None:
    request = to_request(video_job(images=(upload(),), seconds=6.0), HAILUO)

    assert request.model == "minimax/hailuo-02/standard"
    assert "image" in request.body


def test_empty_prompt_is_not_sent() -> None:
    assert "prompt" not in to_request(image_job(prompt=""), GHIBLI).body


# ------------------------------------------------------------------ answers (pure)


def task(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "t1",
        "status": "completed",
        "outputs": ["https://cdn.wavespeed.ai/out.webp"],
        "created_at": "2025-03-01T10:00:05.123Z",
        "error": "",
    }
    data.update(overrides)
    return data


def test_completed_task_gives_urls_and_created() -> None:
    result = from_prediction(task())

    assert [a.url for a in result.artifacts] == ["https://cdn.wavespeed.ai/out.webp"]
    assert result.created == 1740823205
    assert result.reported_cost is None


@pytest.mark.parametrize("outputs", [None, [], [""], [7]])
def test_completed_without_urls_is_a_protocol_error(outputs: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        from_prediction(task(outputs=outputs))


@pytest.mark.parametrize(
    ("error", "code", "expected"),
    [
        (MODERATION_ERROR, 1200, UpstreamRejectedError),
        ("Generation failed", 1200, UpstreamRejectedError),
        ("NSFW content detected in the output", None, UpstreamRejectedError),
        ("Failed to download image from the provided URL.", 1402, UpstreamUnavailableError),
        ("An internal error occurred.", 5000, UpstreamUnavailableError),
        ("", None, UpstreamUnavailableError),
    ],
)
def test_failed_task_errors(error: str, code: int | None, expected: type[UpstreamError]) -> None:
    failure = task_error(task(status="failed", outputs=[], error=error, code=code))

    assert type(failure) is expected
    assert failure.message == (error or "WaveSpeed task failed")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, UNAUTHORIZED, UpstreamMisconfiguredError),
        (403, INSUFFICIENT_BALANCE, UpstreamRateLimitedError),
        (429, RATE_LIMITED, UpstreamRateLimitedError),
        (404, NOT_FOUND, UpstreamMisconfiguredError),
        (400, envelope(400, "image is required"), UpstreamRejectedError),
        (500, "Bad gateway", UpstreamUnavailableError),
    ],
)
def test_http_errors_are_classified(status: int, body: Any, expected: type[UpstreamError]) -> None:
    failure = error_from_response(status, body)

    assert type(failure) is expected
    assert failure.status == status


def test_error_envelope_inside_http_200_is_raised() -> None:
    with pytest.raises(UpstreamRateLimitedError):
        prediction_of(envelope(429, "Too many requests"))


def test_envelope_without_task_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        prediction_of({"code": 200, "message": "success", "data": None})


# ------------------------------------------------------------------ over HTTP


async def test_sync_image_needs_one_request(
    fake: FakeWavespeed, provider: WavespeedProvider
) -> None:
    result = await provider.generate(image_job(output_format="png"), GHIBLI)

    (submit,) = fake.requests
    assert submit.method == "POST"
    assert submit.path == "/api/v3/wavespeed-ai/ghibli"
    assert submit.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    task_id = next(iter(fake.tasks))
    assert [a.url for a in result.artifacts] == [f"{ROOT}/media/{task_id}/output.png"]


async def test_sync_answer_still_running_is_polled(
    fake: FakeWavespeed, provider: WavespeedProvider
) -> None:
    fake.sync_completes = False
    fake.polls_to_finish = 2

    result = await provider.generate(image_job(), GHIBLI)

    task_id = next(iter(fake.tasks))
    polls = [r.path for r in fake.requests[1:]]
    assert polls == [f"/api/v3/predictions/{task_id}/result"] * 2
    assert result.artifacts


async def test_outputs_are_downloadable_from_the_fake(
    fake: FakeWavespeed, provider: WavespeedProvider, http: httpx.AsyncClient
) -> None:
    result = await provider.generate(image_job(), GHIBLI)

    url = result.artifacts[0].url
    assert url is not None
    downloaded = await http.get(url)
    assert downloaded.headers["content-type"] == "image/webp"
    assert downloaded.content[8:12] == b"WEBP"


async def test_video_task_is_submitted_then_polled(
    fake: FakeWavespeed, provider: WavespeedProvider
) -> None:
    fake.polls_to_finish = 3

    result = await provider.generate(video_job(images=(upload(),)), HUNYUAN)

    submit, *polls = fake.requests
    assert submit.path == "/api/v3/wavespeed-ai/hunyuan-video-1.5/image-to-video"
    assert submit.json["duration"] == 5
    assert "enable_sync_mode" not in submit.json
    task_id = next(iter(fake.tasks))
    assert [(p.method, p.path) for p in polls] == [
        ("GET", f"/api/v3/predictions/{task_id}/result")
    ] * 3
    assert all(p.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}" for p in polls)
    assert result.artifacts[0].url == f"{ROOT}/media/{task_id}/output.mp4"


async def test_unlisted_duration_is_refused_by_the_vendor(provider: WavespeedProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(video_job(seconds=7.0), HUNYUAN)

    assert caught.value.message == "duration must be one of 5, 8, 10"
    assert caught.value.status == 400


async def test_sync_refusal_is_rejected(provider: WavespeedProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(image_job(prompt="forbidden-content please"), GHIBLI)

    assert caught.value.message == MODERATION_ERROR
    assert caught.value.code == "content_moderation"


async def test_async_task_failure_is_unavailable(
    fake: FakeWavespeed, provider: WavespeedProvider
) -> None:
    fake.polls_to_finish = 2
    fake.fail_tasks("Task processing timeout")

    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.generate(video_job(seconds=6.0), HAILUO)

    assert caught.value.message == "Task processing timeout"
    assert caught.value.retry_elsewhere is True


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, UpstreamUnavailableError),
        (429, UpstreamRateLimitedError),
        (404, UpstreamUnavailableError),
    ],
)
async def test_poll_failures_are_translated(
    fake: FakeWavespeed,
    provider: WavespeedProvider,
    status: int,
    expected: type[UpstreamError],
) -> None:
    fake.polls_to_finish = 3
    fake.fail_polls(status, times=DEFAULT_RETRY.max_failures)

    with pytest.raises(expected):
        await provider.generate(video_job(), HUNYUAN)

    # 5xx and 429 are retried until they fail too often in a row; a vanished task is final.
    checks = DEFAULT_RETRY.max_failures if status != 404 else 1
    assert [r.method for r in fake.requests] == ["POST"] + ["GET"] * checks + ["DELETE"]
    assert len(fake.deleted) == 1  # given up: deleted at WaveSpeed


async def test_unknown_model_is_our_misconfiguration(provider: WavespeedProvider) -> None:
    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(video_job(), Target("wavespeed-ai/no-such-model"))


async def test_cancelled_task_deletes_the_vendor_task(
    fake: FakeWavespeed, provider: WavespeedProvider
) -> None:
    fake.polls_to_finish = 10**6
    provider.poll_interval = 0.01
    task = asyncio.create_task(provider.generate(video_job(job_id="gen-1"), HUNYUAN))
    await asyncio.wait_for(fake.polled.wait(), timeout=5)
    (task_id,) = fake.tasks

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert fake.deleted == [task_id]
    assert (fake.last.method, fake.last.path) == ("DELETE", f"/api/v3/predictions/{task_id}")
    assert fake.last.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert provider._in_flight.urls == {}


async def test_cancel_stops_a_running_job(fake: FakeWavespeed, provider: WavespeedProvider) -> None:
    fake.polls_to_finish = 10**6
    provider.poll_interval = 0.01
    running = video_job(job_id="gen-2")
    task = asyncio.create_task(provider.generate(running, HUNYUAN))
    await asyncio.wait_for(fake.polled.wait(), timeout=5)
    (task_id,) = fake.tasks

    await provider.cancel(running, HUNYUAN)

    with pytest.raises(UpstreamCancelledError) as caught:
        await task
    assert caught.value.retry_elsewhere is False
    assert fake.deleted == [task_id]


async def test_cancel_of_an_unknown_job_sends_nothing(
    fake: FakeWavespeed, provider: WavespeedProvider
) -> None:
    await provider.cancel(video_job(job_id="never-started"), HUNYUAN)

    assert fake.requests == []


async def test_missing_key_is_misconfiguration(http: httpx.AsyncClient) -> None:
    provider = WavespeedProvider(http, credential="", base_url=f"{ROOT}/api/v3")

    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(image_job(), GHIBLI)


async def test_poll_url_on_another_host_is_not_followed(
    fake: FakeWavespeed, provider: WavespeedProvider
) -> None:
    # Our key goes only to the configured host, whatever `urls.get` says.
    fake.polls_to_finish = 1
    original = fake._data

    def elsewhere(task: Any) -> dict[str, Any]:
        data = original(task)
        data["urls"] = {"get": "https://evil.test/result"}
        return data

    fake._data = elsewhere  # type: ignore[method-assign]

    await provider.generate(video_job(), HUNYUAN)

    assert fake.requests[1].path == f"/api/v3/predictions/{next(iter(fake.tasks))}/result"


# ------------------------------------------------------------------ the whole catalog


def _wavespeed_routes() -> list[tuple[str, Any, Any]]:
    catalog = load_catalog(image_inputs={"wavespeed": WavespeedProvider.image_inputs})
    return [
        (spec.id, spec, route)
        for spec in catalog.models.values()
        for route in spec.routes
        if route.provider == "wavespeed"
    ]


@pytest.mark.parametrize(
    ("spec", "route"),
    [(s, r) for _, s, r in _wavespeed_routes()],
    ids=[i for i, _, _ in _wavespeed_routes()],
)
async def test_every_catalog_route_is_accepted_by_the_vendor(
    provider: WavespeedProvider, spec: Any, route: Any
) -> None:
    options = route.resolve("auto")
    target = Target(str(options.pop("upstream", route.upstream)), options)
    with_image = (upload(),) if route.image_input else ()
    # Ghibli restyles an image: it has no text-only form.
    attempts = [with_image] if spec.id == "wavespeed/ghibli" else [(), with_image]
    for images in attempts:
        sent = Job(
            modality=spec.modality,
            model=spec.id,
            prompt="a quiet harbour",
            size=spec.sizes[0] if spec.sizes else "auto",
            seconds=spec.default_seconds,
            images=images,
        )

        result = await provider.generate(sent, target)

        assert result.artifacts


def catalog_target(model: str) -> Target:
    route = load_catalog().models[model].routes[0]
    return Target(route.upstream, route.resolve("auto"))


@pytest.mark.parametrize(("size", "sent"), [("832x480", "832*480"), ("720x1280", "720*1280")])
def test_hunyuan_sends_the_size_it_is_priced_by(size: str, sent: str) -> None:
    target = catalog_target("tencent/hunyuan-video-1.5")

    assert to_request(video_job(size=size), target).body["size"] == sent
    with_image = to_request(video_job(size=size, images=(upload(),)), target)
    assert with_image.body["size"] == sent


def test_models_not_priced_by_size_send_none() -> None:
    request = to_request(video_job(size="1920x1080"), catalog_target("minimax/hailuo-02-pro"))

    assert "size" not in request.body


async def test_the_size_reaches_wavespeed(fake: FakeWavespeed, provider: WavespeedProvider) -> None:
    target = catalog_target("tencent/hunyuan-video-1.5")

    await provider.generate(video_job(size="480x832"), target)

    assert fake.requests[0].json["size"] == "480*832"
