"""The Replicate adapter: the predictions it creates, its polling, cancelling and errors."""

from __future__ import annotations

import asyncio
from decimal import Decimal
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
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from image_router.providers.polling import DEFAULT_RETRY
from image_router.providers.replicate import (
    ReplicateProvider,
    error_from_response,
    from_prediction,
    prediction_error,
    to_request,
)
from tests.fakes.replicate import (
    DEFAULT_API_KEY,
    INSUFFICIENT_CREDIT,
    INVALID_VERSION,
    NOT_FOUND,
    SENSITIVE_ERROR,
    THROTTLED,
    UNAUTHENTICATED,
    Z_IMAGE_VERSION,
    FakeReplicate,
    problem,
)
from tests.unit.providers.conftest import ROOT, jobs, upload, vendor_fixtures

REVE = {
    "edit_upstream": "reve/edit",
    "edit_low_upstream": "reve/edit-fast",
    "remix_upstream": "reve/remix",
    "quality": None,
}


job = jobs(prompt="a lighthouse")
fake, provider = vendor_fixtures(
    FakeReplicate,
    lambda http: ReplicateProvider(
        http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1", poll_interval=0.0
    ),
)


def video(**overrides: Any) -> Job:
    values: dict[str, Any] = {"modality": "video", "model": "kling/kling-2.1-standard"}
    values["seconds"] = 5.0
    values.update(overrides)
    return job(**values)


def creations(fake: FakeReplicate) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST" and not r.path.endswith("/cancel")]


# ------------------------------------------------------------------ what we send (pure)


def test_text_to_image_sends_prompt_size_and_format() -> None:
    request = to_request(
        job(size="1536x1024", output_format="jpeg"), Target("leonardoai/lucid-origin")
    )

    assert request.path == "/models/leonardoai/lucid-origin/predictions"
    assert request.body == {
        "input": {
            "prompt": "a lighthouse",
            "output_format": "jpg",
            "width": 1536,
            "height": 1024,
        }
    }


def test_auto_size_and_unset_options_are_not_sent() -> None:
    request = to_request(job(), Target("luma/photon", {"num_inference_steps": None}))

    assert request.body == {"input": {"prompt": "a lighthouse"}}


def test_versioned_upstream_goes_to_predictions_with_the_full_version() -> None:
    upstream = f"prunaai/z-image-turbo:{Z_IMAGE_VERSION}"

    request = to_request(job(quality="high"), Target(upstream, {"num_inference_steps": 16}))

    assert request.path == "/predictions"
    assert request.body == {
        "version": upstream,
        "input": {"prompt": "a lighthouse", "num_inference_steps": 16},
    }


@pytest.mark.parametrize(
    ("images", "quality", "model", "field"),
    [
        (1, "auto", "reve/edit", "image"),
        (1, "high", "reve/edit", "image"),
        (1, "low", "reve/edit-fast", "image"),
        (3, "low", "reve/remix", "reference_images"),
    ],
)
def test_reve_picks_edit_or_remix_by_image_count(
    images: int, quality: str, model: str, field: str
) -> None:
    uploads = tuple(upload(fmt) for fmt in ("png", "jpeg", "webp")[:images])

    request = to_request(job(images=uploads, quality=quality), Target("reve/create", REVE))

    assert request.path == f"/models/{model}/predictions"
    sent = request.body["input"][field]
    expected = [u.data_uri() for u in uploads]
    assert sent == (expected[0] if images == 1 else expected)
    # Each data URI keeps its real type (the reference labelled them all PNG, §13.12).
    assert [u[: u.index(";")] for u in expected] == [
        "data:image/png",
        "data:image/jpeg",
        "data:image/webp",
    ][:images]


def test_reve_without_images_creates() -> None:
    request = to_request(job(quality="low"), Target("reve/create", REVE))

    assert request.path == "/models/reve/create/predictions"
    assert request.body == {"input": {"prompt": "a lighthouse"}}


def test_kling_video_sends_start_image_mode_and_duration() -> None:
    start = upload("jpeg")

    request = to_request(
        video(images=(start,), seconds=10.0, size="1920x1080", output_format="png"),
        Target("kwaivgi/kling-v2.1", {"mode": "pro"}),
    )

    assert request.path == "/models/kwaivgi/kling-v2.1/predictions"
    assert request.body == {
        "input": {
            "prompt": "a lighthouse",
            "enhance_prompt": True,
            "mode": "pro",
            "duration": 10,
            "start_image": start.data_uri(),
        }
    }


@pytest.mark.parametrize(
    ("size", "ratio"),
    [("1920x1080", "16:9"), ("1080x1920", "9:16"), ("1080x1080", "1:1"), ("1366x768", None)],
)
def test_text_to_video_sends_a_supported_aspect_ratio(size: str, ratio: str | None) -> None:
    request = to_request(video(size=size), Target("kwaivgi/kling-v2.1-master"))

    assert request.body["input"].get("aspect_ratio") == ratio
    assert request.body["input"]["duration"] == 5


# ------------------------------------------------------------------ answers (pure)


def prediction(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "abc",
        "status": "succeeded",
        "output": "https://replicate.delivery/xezq/out-0.webp",
        "created_at": "2025-03-01T10:00:05.123456789Z",
        "metrics": {"predict_time": 2.5, "total_time": 3.1},
        "input": {"prompt": "x", "image": "data:image/png;base64," + "A" * 5000},
    }
    body.update(overrides)
    return body


def test_succeeded_prediction_gives_urls_created_and_predict_time() -> None:
    result = from_prediction(prediction())

    assert [a.url for a in result.artifacts] == ["https://replicate.delivery/xezq/out-0.webp"]
    assert result.created == 1740823205
    assert result.predict_seconds == Decimal("2.5")
    assert result.extra == {"replicate_predict_time": 2.5}
    assert result.raw is not None
    assert result.raw["input"]["image"] == "[removed - data URI]"


def test_list_output_gives_one_artifact_per_url() -> None:
    result = from_prediction(prediction(output=["https://a/1.png", "https://a/2.png"]))

    assert [a.url for a in result.artifacts] == ["https://a/1.png", "https://a/2.png"]


@pytest.mark.parametrize("output", [None, [], [""], [3], {"url": "x"}])
def test_succeeded_without_urls_is_a_protocol_error(output: Any) -> None:
    with pytest.raises(UpstreamProtocolError):
        from_prediction(prediction(output=output))


def test_missing_metrics_leave_predict_seconds_unset() -> None:
    result = from_prediction(prediction(metrics=None))

    assert result.predict_seconds is None
    assert result.extra == {}


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        ("failed", SENSITIVE_ERROR, UpstreamRejectedError),
        ("failed", "NSFW content detected. Try running it again.", UpstreamRejectedError),
        ("failed", "Prediction interrupted; please retry (code: PA)", UpstreamUnavailableError),
        ("failed", "CUDA out of memory (E1001)", UpstreamUnavailableError),
        ("failed", None, UpstreamUnavailableError),
        ("canceled", None, UpstreamUnavailableError),
    ],
)
def test_ended_prediction_errors(
    status: str, error: str | None, expected: type[UpstreamError]
) -> None:
    failure = prediction_error(prediction(status=status, error=error, output=None))

    assert type(failure) is expected
    assert failure.message == (error or f"Replicate prediction {status}")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, UNAUTHENTICATED, UpstreamMisconfiguredError),
        (402, INSUFFICIENT_CREDIT, UpstreamRateLimitedError),
        (429, THROTTLED, UpstreamRateLimitedError),
        (404, NOT_FOUND, UpstreamMisconfiguredError),
        (422, INVALID_VERSION, UpstreamMisconfiguredError),
        (
            422,
            problem(422, "Input validation failed", "- input.width: bad\n"),
            UpstreamRejectedError,
        ),
        (400, problem(400, "Bad", "Your account balance is too low"), UpstreamRateLimitedError),
        (500, "<html>oops</html>", UpstreamUnavailableError),
        (504, problem(504, "Gateway Timeout", "upstream timed out"), UpstreamTimeoutError),
    ],
)
def test_http_errors_are_classified(status: int, body: Any, expected: type[UpstreamError]) -> None:
    failure = error_from_response(status, body)

    assert type(failure) is expected
    assert failure.status == status


def test_a_vanished_prediction_while_polling_is_unavailable_not_misconfigured() -> None:
    assert type(error_from_response(404, NOT_FOUND, polling=True)) is UpstreamUnavailableError


# ------------------------------------------------------------------ over HTTP


async def test_prediction_is_created_with_wait_then_polled(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.polls_to_finish = 3

    result = await provider.generate(
        job(output_format="png"), Target("stability-ai/stable-diffusion-3.5-large")
    )

    create, *polls = fake.requests
    assert create.path == "/v1/models/stability-ai/stable-diffusion-3.5-large/predictions"
    assert create.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert create.headers["prefer"] == "wait"
    assert create.json == {"input": {"prompt": "a lighthouse", "output_format": "png"}}
    prediction_id = next(iter(fake.predictions))
    assert [(p.method, p.path) for p in polls] == [("GET", f"/v1/predictions/{prediction_id}")] * 3
    assert "prefer" not in polls[0].headers
    assert [a.url for a in result.artifacts] == [f"{ROOT}/delivery/{prediction_id}/out-0.png"]
    assert result.predict_seconds == Decimal("1.234567")


async def test_prediction_finished_within_the_wait_needs_no_poll(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.polls_to_finish = 0

    result = await provider.generate(job(), Target("minimax/image-01"))

    assert len(fake.requests) == 1
    assert len(result.artifacts) == 2


async def test_outputs_are_downloadable_from_the_fake(
    fake: FakeReplicate, provider: ReplicateProvider, http: httpx.AsyncClient
) -> None:
    result = await provider.generate(job(output_format="jpeg"), Target("luma/photon"))

    url = result.artifacts[0].url
    assert url is not None
    downloaded = await http.get(url)
    assert downloaded.headers["content-type"] == "image/jpeg"
    assert downloaded.content.startswith(b"\xff\xd8\xff")


async def test_versioned_model_is_run_by_version(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    upstream = f"prunaai/z-image-turbo:{Z_IMAGE_VERSION}"

    await provider.generate(job(), Target(upstream, {"num_inference_steps": 8}))

    assert fake.requests[0].path == "/v1/predictions"
    assert fake.requests[0].json["version"] == upstream


async def test_quality_switched_model_is_the_one_called(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    # The catalog resolves ideogram's quality into the upstream name before the call.
    await provider.generate(job(quality="low"), Target("ideogram-ai/ideogram-v3-turbo"))

    assert fake.requests[0].path == "/v1/models/ideogram-ai/ideogram-v3-turbo/predictions"


async def test_reve_remix_is_accepted_by_the_vendor(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    result = await provider.generate(
        job(images=(upload(), upload("jpeg"))), Target("reve/create", REVE)
    )

    assert result.artifacts
    assert fake.requests[0].path == "/v1/models/reve/remix/predictions"
    assert len(fake.requests[0].json["input"]["reference_images"]) == 2


async def test_kling_video_succeeds_with_an_mp4_url(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    result = await provider.generate(
        video(images=(upload(),)), Target("kwaivgi/kling-v2.1", {"mode": "standard"})
    )

    assert result.artifacts[0].url is not None
    assert result.artifacts[0].url.endswith(".mp4")
    assert fake.requests[0].json["input"]["mode"] == "standard"


async def test_vendor_input_validation_is_rejected(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    # kling-v2.1 needs a start image: the vendor's 422 is about the user's input.
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(video(), Target("kwaivgi/kling-v2.1", {"mode": "pro"}))

    assert caught.value.message == "- input: start_image is required\n"
    assert caught.value.retry_elsewhere is False


async def test_unknown_model_is_our_misconfiguration(provider: ReplicateProvider) -> None:
    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(job(), Target("nobody/no-such-model"))


async def test_unknown_version_is_our_misconfiguration(provider: ReplicateProvider) -> None:
    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(job(), Target("prunaai/z-image-turbo:" + "0" * 64))

    assert caught.value.status == 422


async def test_failed_prediction_while_polling_is_unavailable(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.polls_to_finish = 2
    fake.fail_predictions("Prediction interrupted; please retry (code: PA)")

    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.generate(job(), Target("luma/photon"))

    assert caught.value.message == "Prediction interrupted; please retry (code: PA)"
    assert caught.value.retry_elsewhere is True


async def test_safety_failure_is_rejected(fake: FakeReplicate, provider: ReplicateProvider) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job(prompt="forbidden-content"), Target("luma/photon"))

    assert caught.value.message == SENSITIVE_ERROR
    assert caught.value.code == "content_moderation"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, UpstreamUnavailableError),
        (429, UpstreamRateLimitedError),
        (401, UpstreamMisconfiguredError),
    ],
)
async def test_poll_failures_are_translated(
    fake: FakeReplicate,
    provider: ReplicateProvider,
    status: int,
    expected: type[UpstreamError],
) -> None:
    fake.polls_to_finish = 3
    fake.fail_polls(status, times=DEFAULT_RETRY.max_failures)

    with pytest.raises(expected) as caught:
        await provider.generate(job(), Target("luma/photon"))

    # 5xx and 429 are retried until they fail too often in a row; our key refused is final.
    checks = DEFAULT_RETRY.max_failures if status != 401 else 1
    assert [r.method for r in fake.requests] == ["POST"] + ["GET"] * checks + ["POST"]
    assert fake.canceled == list(fake.predictions)  # given up: stopped at Replicate
    assert caught.value.vendor_job_cancelled


async def test_cancelled_task_cancels_the_prediction(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    fake.polls_to_finish = 10**6
    provider.poll_interval = 0.01
    task = asyncio.create_task(
        provider.generate(video(job_id="gen-1"), Target("kwaivgi/kling-v1.6-standard"))
    )
    await asyncio.wait_for(fake.polled.wait(), timeout=5)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    prediction_id = next(iter(fake.predictions))
    assert fake.canceled == [prediction_id]
    assert fake.last.path == f"/v1/predictions/{prediction_id}/cancel"
    assert fake.last.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert provider._in_flight.urls == {}


async def test_a_refused_cancel_is_logged_and_the_task_still_ends_cancelled(
    fake: FakeReplicate, provider: ReplicateProvider, caplog: pytest.LogCaptureFixture
) -> None:
    fake.polls_to_finish = 10**6
    provider.poll_interval = 0.01
    task = asyncio.create_task(
        provider.generate(video(job_id="gen-3"), Target("kwaivgi/kling-v1.6-standard"))
    )
    await asyncio.wait_for(fake.polled.wait(), timeout=5)
    fake.predictions.clear()  # the cancel now meets Replicate's 404

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert fake.last.path.endswith("/cancel")
    assert "refused to cancel" in caplog.text
    assert DEFAULT_API_KEY not in caplog.text


async def test_cancel_stops_a_running_job(fake: FakeReplicate, provider: ReplicateProvider) -> None:
    fake.polls_to_finish = 10**6
    provider.poll_interval = 0.01
    running = video(job_id="gen-2")
    target = Target("kwaivgi/kling-v1.6-standard")
    task = asyncio.create_task(provider.generate(running, target))
    await asyncio.wait_for(fake.polled.wait(), timeout=5)

    await provider.cancel(running, target)

    with pytest.raises(UpstreamCancelledError) as caught:
        await task
    assert caught.value.retry_elsewhere is False
    assert fake.canceled == [next(iter(fake.predictions))]


async def test_cancel_of_an_unknown_job_sends_nothing(
    fake: FakeReplicate, provider: ReplicateProvider
) -> None:
    await provider.cancel(video(job_id="never-started"), Target("kwaivgi/kling-v2.1"))

    assert fake.requests == []


async def test_poll_urls_on_another_host_are_not_followed(
    fake: FakeReplicate, http: httpx.AsyncClient
) -> None:
    # Our key goes only to the configured host, whatever `urls.get` says.
    provider = ReplicateProvider(
        http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1", poll_interval=0.0
    )
    fake.polls_to_finish = 1
    original = fake._body

    def elsewhere(prediction: Any) -> dict[str, Any]:
        body = original(prediction)
        body["urls"] = {"get": "https://evil.test/p", "cancel": "https://evil.test/c"}
        return body

    fake._body = elsewhere  # type: ignore[method-assign]

    await provider.generate(job(), Target("luma/photon"))

    assert fake.requests[1].path == f"/v1/predictions/{next(iter(fake.predictions))}"


async def test_missing_key_is_misconfiguration(http: httpx.AsyncClient) -> None:
    provider = ReplicateProvider(http, credential=None, base_url=f"{ROOT}/v1")

    with pytest.raises(UpstreamMisconfiguredError):
        await provider.generate(job(), Target("luma/photon"))


# ------------------------------------------------------------------ the whole catalog


def _replicate_routes() -> list[tuple[str, Any, Any]]:
    catalog = load_catalog(image_inputs={"replicate": ReplicateProvider.image_inputs})
    return [
        (spec.id, spec, route)
        for spec in catalog.models.values()
        for route in spec.routes
        if route.provider == "replicate"
    ]


@pytest.mark.parametrize(
    ("spec", "route"),
    [(s, r) for _, s, r in _replicate_routes()],
    ids=[i for i, _, _ in _replicate_routes()],
)
@pytest.mark.parametrize("quality", ["auto", "low", "high"])
async def test_every_catalog_route_is_accepted_by_the_vendor(
    fake: FakeReplicate, provider: ReplicateProvider, spec: Any, route: Any, quality: str
) -> None:
    options = route.resolve(quality)
    target = Target(str(options.pop("upstream", route.upstream)), options)
    images = (upload(),) * min(route.max_images, 2) if route.image_input else ()
    size = spec.sizes[-1] if spec.sizes else "auto"
    for attempt in ({"images": ()}, {"images": images}) if images else ({"images": ()},):
        if (
            spec.modality == "video"
            and route.upstream == "kwaivgi/kling-v2.1"
            and not attempt["images"]
        ):
            continue  # Kling 2.1 on Replicate is image-to-video only
        sent = Job(
            modality=spec.modality,
            model=spec.id,
            prompt="a quiet harbour",
            quality=quality,
            size=size,
            seconds=spec.default_seconds,
            output_format="jpeg" if spec.modality == "image" else None,
            **attempt,
        )

        result = await provider.generate(sent, target)

        assert result.artifacts
