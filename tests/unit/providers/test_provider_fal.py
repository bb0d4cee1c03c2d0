"""The fal adapter: the queue life-cycle it drives, the inputs it sends, how it fails."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from image_router.providers.contract import InputFile, Target
from image_router.providers.errors import (
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from image_router.providers.fal import (
    FalProvider,
    app_root,
    error_from_response,
    from_response,
    queued_job,
    read_status,
    to_request,
)
from image_router.providers.polling import DEFAULT_RETRY
from tests.fakes.fal import (
    CONTENT_POLICY_BODY,
    CONTENT_POLICY_MESSAGE,
    DEFAULT_API_KEY,
    LOCKED_MESSAGE,
    NSFW_MESSAGE,
    FakeFal,
)
from tests.unit.providers.conftest import ROOT, jobs, upload, vendor_fixtures

FLUX = Target("fal-ai/flux-2/turbo", {"image_upstream": "fal-ai/flux-2/turbo/edit"})
RECRAFT = Target(
    "fal-ai/recraft/v3/text-to-image",
    {"image_upstream": "fal-ai/recraft/v3/image-to-image", "image_input": "fal_image_url"},
)


job = jobs(prompt="a quiet harbour")
fake, provider = vendor_fixtures(
    FakeFal,
    lambda http: FalProvider(http, credential=DEFAULT_API_KEY, base_url=ROOT, poll_interval=0.0),
)


def submitted(fake: FakeFal) -> dict[str, Any]:
    posts = [r for r in fake.requests if r.method == "POST"]
    assert len(posts) == 1
    body: dict[str, Any] = posts[0].json
    return body


# ------------------------------------------------------------------ the queue life-cycle


async def test_text_to_image_submits_polls_and_fetches_the_result(
    fake: FakeFal, provider: FalProvider, http: httpx.AsyncClient
) -> None:
    result = await provider.generate(job(size="1536x1024", output_format="png"), FLUX)

    submit, *polls, fetch = fake.requests
    assert (submit.method, submit.path) == ("POST", "/fal-ai/flux-2/turbo")
    assert submit.headers["authorization"] == f"Key {DEFAULT_API_KEY}"
    assert submit.json == {
        "prompt": "a quiet harbour",
        "enable_safety_checker": False,
        "image_size": {"width": 1536, "height": 1024},
        "output_format": "png",
    }
    request_id = next(iter(fake.jobs))
    # Status and result live under owner/app only, as fal names them.
    status_path = f"/fal-ai/flux-2/requests/{request_id}/status"
    assert [(p.method, p.path, p.query) for p in polls] == [("GET", status_path, {"logs": "0"})] * 3
    assert all(p.headers["authorization"] == f"Key {DEFAULT_API_KEY}" for p in polls)
    assert (fetch.method, fetch.path) == ("GET", f"/fal-ai/flux-2/requests/{request_id}")

    (artifact,) = result.artifacts
    assert artifact.content_type == "image/png"
    assert artifact.url is not None and artifact.url.startswith(f"{ROOT}/files/")
    downloaded = await http.get(artifact.url)
    assert downloaded.content.startswith(b"\x89PNG")
    assert isinstance(result.extra["seed"], int)
    assert result.raw is not None and result.raw["images"][0]["url"] == artifact.url
    assert DEFAULT_API_KEY not in str(result.raw)


async def test_a_job_completed_at_submit_is_not_polled() -> None:
    # An answer may say COMPLETED at once; the result is then fetched without a status call.
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        if request.method == "POST":
            return httpx.Response(200, json={"request_id": "r1", "status": "COMPLETED"})
        return httpx.Response(200, json={"images": [{"url": "https://v3.fal.media/f/x.png"}]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        direct = FalProvider(client, credential="k", base_url="https://queue.fal.run")
        result = await direct.generate(job(), FLUX)

    assert seen == ["POST /fal-ai/flux-2/turbo", "GET /fal-ai/flux-2/requests/r1"]
    assert result.artifacts[0].url == "https://v3.fal.media/f/x.png"


async def test_several_images_go_to_the_edit_endpoint_as_image_urls(
    fake: FakeFal, provider: FalProvider
) -> None:
    images = (upload("png"), upload("jpeg", (0, 0, 200)))
    target = Target(FLUX.upstream, {**FLUX.options, "image_input": "fal_image_urls"})

    result = await provider.generate(job(images=images), target)

    assert fake.requests[0].path == "/fal-ai/flux-2/turbo/edit"
    body = submitted(fake)
    assert body["image_urls"] == [image.data_uri() for image in images]
    assert body["image_urls"][1].startswith("data:image/jpeg;base64,")
    assert "image_url" not in body
    assert result.artifacts


async def test_one_image_on_a_single_image_route_is_image_url_on_image_upstream(
    fake: FakeFal, provider: FalProvider
) -> None:
    image = upload("webp")

    await provider.generate(job(images=(image,)), RECRAFT)

    assert fake.requests[0].path == "/fal-ai/recraft/v3/image-to-image"
    assert submitted(fake)["image_url"] == image.data_uri()


async def test_route_without_image_upstream_keeps_its_endpoint(
    fake: FakeFal, provider: FalProvider
) -> None:
    target = Target("fal-ai/recraft/vectorize", {"image_input": "fal_image_url"})

    result = await provider.generate(job(images=(upload("png"),)), target)

    assert fake.requests[0].path == "/fal-ai/recraft/vectorize"
    # vectorize answers one `image` object, not an `images` list.
    assert [a.content_type for a in result.artifacts] == ["image/svg+xml"]


def test_images_without_a_declared_token_are_inferred_from_their_count() -> None:
    one = to_request(job(images=(upload("png"),)), Target("fal-ai/hidream-e1-1"))
    two = to_request(job(images=(upload("png"), upload("png"))), Target("x/y"))

    assert "image_url" in one.body and "image_urls" not in one.body
    assert len(two.body["image_urls"]) == 2


def test_too_many_images_for_a_single_image_route_are_refused() -> None:
    with pytest.raises(UpstreamRejectedError, match="only one image"):
        to_request(job(images=(upload("png"), upload("png"))), RECRAFT)


def test_unknown_image_token_is_our_misconfiguration() -> None:
    target = Target("x/y", {"image_input": "multipart"})
    with pytest.raises(UpstreamMisconfiguredError):
        to_request(job(images=(upload("png"),)), target)


def test_a_mask_is_refused_before_any_call() -> None:
    with pytest.raises(UpstreamRejectedError, match="Mask editing"):
        to_request(job(images=(upload("png"),), mask=upload("png")), FLUX)


# ------------------------------------------------------------------ quality, size, format


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"num_inference_steps": 4}, 4),
        ({"num_inference_steps": 8}, 8),
        ({"steps": 45}, 45),  # qwen-image / Ovis keep the reference's `steps` name
        ({"num_inference_steps": None}, None),
        ({}, None),
    ],
)
def test_quality_mapping_becomes_num_inference_steps(
    options: dict[str, Any], expected: int | None
) -> None:
    body = to_request(job(quality="high"), Target("fal-ai/qwen-image", options)).body
    assert body.get("num_inference_steps") == expected


async def test_steps_reach_the_endpoint_and_are_validated_there(
    fake: FakeFal, provider: FalProvider
) -> None:
    await provider.generate(job(), Target("fal-ai/qwen-image", {"steps": 45}))
    assert submitted(fake)["num_inference_steps"] == 45

    with pytest.raises(UpstreamRejectedError, match="between 1 and 8"):
        await provider.generate(job(), Target("fal-ai/z-image/turbo", {"num_inference_steps": 30}))


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("auto", None),
        ("1024x1024", {"width": 1024, "height": 1024}),
        ("768x1344", {"width": 768, "height": 1344}),
    ],
)
def test_size_becomes_image_size(size: str, expected: dict[str, int] | None) -> None:
    assert to_request(job(size=size), FLUX).body.get("image_size") == expected


@pytest.mark.parametrize(("fmt", "sent"), [("png", "png"), ("jpeg", "jpeg"), ("webp", None)])
async def test_output_format_is_sent_only_where_every_endpoint_takes_it(
    fake: FakeFal, provider: FalProvider, fmt: str, sent: str | None
) -> None:
    # qwen-image takes only jpeg/png: webp must be left to the gateway's conversion.
    result = await provider.generate(job(output_format=fmt), Target("fal-ai/qwen-image"))

    assert submitted(fake).get("output_format") == sent
    assert result.artifacts[0].content_type == f"image/{sent or 'png'}"


# ------------------------------------------------------------------ video


async def test_video_sends_duration_resolution_and_first_image(
    fake: FakeFal, provider: FalProvider
) -> None:
    image = upload("png")
    video = job(modality="video", seconds=5.0, images=(image,))

    result = await provider.generate(video, Target("fal-ai/fake-video/text-to-video"))

    assert submitted(fake) == {
        "prompt": "a quiet harbour",
        "resolution": "720p",
        "duration": 5,
        "image_url": image.data_uri(),
    }
    (artifact,) = result.artifacts
    assert artifact.content_type == "video/mp4" and artifact.url is not None
    assert artifact.url.endswith(".mp4")


def test_video_without_a_video_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="without any video"):
        from_response({"images": [{"url": "https://x/y.png"}]}, "video")


# ------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("prompt", "expected", "message"),
    [
        ("nsfw-failure please", UpstreamRejectedError, NSFW_MESSAGE),
        ("a forbidden-content scene", UpstreamRejectedError, CONTENT_POLICY_MESSAGE),
        ("runner-crash now", UpstreamUnavailableError, "internal server error"),
    ],
)
async def test_a_failed_job_raises_the_matching_error(
    provider: FalProvider, prompt: str, expected: type[Exception], message: str
) -> None:
    with pytest.raises(expected, match=re.escape(message)) as caught:
        await provider.generate(job(prompt=prompt), FLUX)
    assert type(caught.value) is expected


async def test_invalid_input_reported_after_the_run_is_the_users_error(
    provider: FalProvider,
) -> None:
    broken = InputFile(b"not an image", "image/png", "x.png")
    with pytest.raises(UpstreamRejectedError, match="Could not load image"):
        await provider.generate(job(images=(broken,)), RECRAFT)


async def test_locked_account_is_rate_limited_so_another_route_is_tried(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.locked = True
    with pytest.raises(UpstreamRateLimitedError, match="Exhausted balance") as caught:
        await provider.generate(job(), FLUX)
    assert caught.value.retry_elsewhere is True


async def test_unknown_endpoint_is_our_misconfiguration(provider: FalProvider) -> None:
    with pytest.raises(UpstreamMisconfiguredError, match="not found"):
        await provider.generate(job(), Target("fal-ai/no-such-model"))


@pytest.mark.parametrize(
    ("status", "expected"),
    [(500, UpstreamUnavailableError), (429, UpstreamRateLimitedError), (504, UpstreamTimeoutError)],
)
async def test_a_failed_poll_raises_instead_of_a_billed_soft_failure(
    fake: FakeFal, provider: FalProvider, status: int, expected: type[Exception]
) -> None:
    """Once the status checks keep failing, the job is given up and cancelled at fal."""
    fake.fail_polls(status, times=DEFAULT_RETRY.max_failures)
    with pytest.raises(expected):
        await provider.generate(job(), FLUX)
    polls = ["GET"] * DEFAULT_RETRY.max_failures
    assert [r.method for r in fake.requests] == ["POST", *polls, "PUT"]
    assert fake.cancelled == list(fake.jobs)


async def test_garbage_from_a_poll_is_a_protocol_error(
    fake: FakeFal, provider: FalProvider
) -> None:
    fake.fail_polls(200, "<html>proxy</html>", times=DEFAULT_RETRY.max_failures)
    with pytest.raises(UpstreamProtocolError):
        await provider.generate(job(), FLUX)


async def test_no_credential_fails_without_a_call(fake: FakeFal, http: httpx.AsyncClient) -> None:
    with pytest.raises(UpstreamMisconfiguredError):
        await FalProvider(http, base_url=ROOT).generate(job(), FLUX)
    assert fake.requests == []


# ------------------------------------------------------------------ cancellation


async def test_a_task_cancelled_mid_poll_cancels_the_fal_job(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    fake.polls_before_done = 10_000
    provider = FalProvider(http, credential=DEFAULT_API_KEY, base_url=ROOT, poll_interval=0.01)
    task = asyncio.create_task(provider.generate(job(job_id="gen-1"), FLUX))
    await asyncio.wait_for(fake.polled.wait(), 5)
    assert provider._in_flight.urls == {"gen-1": fake.requests[0].base_url + _cancel_path(fake)}

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    (request_id,) = fake.jobs
    cancels = [r for r in fake.requests if r.method == "PUT"]
    assert [r.path for r in cancels] == [f"/fal-ai/flux-2/requests/{request_id}/cancel"]
    assert cancels[0].headers["authorization"] == f"Key {DEFAULT_API_KEY}"
    assert fake.cancelled == [request_id]
    assert provider._in_flight.urls == {}


async def test_cancel_by_job_reaches_the_running_fal_job(
    fake: FakeFal, http: httpx.AsyncClient
) -> None:
    fake.polls_before_done = 10_000
    provider = FalProvider(http, credential=DEFAULT_API_KEY, base_url=ROOT, poll_interval=0.01)
    running = job(job_id="gen-2")
    task = asyncio.create_task(provider.generate(running, FLUX))
    await asyncio.wait_for(fake.polled.wait(), 5)

    await provider.cancel(running, FLUX)
    # The job now reports fal's client_cancelled outcome, which ends our poll.
    with pytest.raises(UpstreamUnavailableError, match="cancelled"):
        await task

    assert fake.cancelled == list(fake.jobs)
    assert provider._in_flight.urls == {}


async def test_cancel_of_an_unknown_job_does_nothing(fake: FakeFal, provider: FalProvider) -> None:
    await provider.cancel(job(job_id="never-ran"), FLUX)
    assert fake.requests == []


def _cancel_path(fake: FakeFal) -> str:
    (request_id,) = fake.jobs
    return f"fal-ai/flux-2/requests/{request_id}/cancel"


# ------------------------------------------------------------------ pure functions


def test_app_root_drops_the_endpoint_path() -> None:
    assert app_root("fal-ai/bytedance/seedream/v3/text-to-image") == "fal-ai/bytedance"
    assert app_root("fal-ai/qwen-image") == "fal-ai/qwen-image"


def test_queued_job_builds_missing_urls_from_the_app_root() -> None:
    queued = queued_job({"request_id": "abc"}, "https://queue.fal.run", "fal-ai/flux-2/turbo")
    assert queued.status_url == "https://queue.fal.run/fal-ai/flux-2/requests/abc/status"
    assert queued.response_url == "https://queue.fal.run/fal-ai/flux-2/requests/abc"
    assert queued.cancel_url == "https://queue.fal.run/fal-ai/flux-2/requests/abc/cancel"
    with pytest.raises(UpstreamProtocolError):
        queued_job({"status": "IN_QUEUE"}, "https://queue.fal.run", "a/b")


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ({"status": "IN_QUEUE", "queue_position": 3}, False),
        ({"status": "IN_PROGRESS"}, False),
        ({"status": "COMPLETED"}, True),
        ({"status": "FAILED", "error": "NSFW content detected"}, UpstreamRejectedError),
        ({"status": "FAILED"}, UpstreamUnavailableError),
        ({"status": "ERROR", "error": "CUDA out of memory"}, UpstreamUnavailableError),
        ({"status": "CANCELED"}, UpstreamUnavailableError),
        ({"status": "SOMETHING_NEW"}, UpstreamProtocolError),
        (["not", "an", "object"], UpstreamProtocolError),
    ],
)
def test_read_status(body: Any, outcome: bool | type[Exception]) -> None:
    if isinstance(outcome, bool):
        assert read_status(body) is outcome
        return
    with pytest.raises(outcome) as caught:
        read_status(body)
    assert type(caught.value) is outcome


def test_from_response_flattens_nested_images_and_single_image() -> None:
    result = from_response(
        {
            "images": [[{"url": "https://a/1.png", "content_type": "image/png"}], {"url": ""}],
            "image": "https://a/2.jpg",
            "seed": 7,
        }
    )
    assert [(a.url, a.content_type) for a in result.artifacts] == [
        ("https://a/1.png", "image/png"),
        ("https://a/2.jpg", None),
    ]
    assert result.extra == {"seed": 7}


def test_from_response_without_images_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="without any image"):
        from_response({"images": [], "has_nsfw_concepts": []})


@pytest.mark.parametrize(
    ("status", "body", "expected", "message"),
    [
        (422, CONTENT_POLICY_BODY, UpstreamRejectedError, "content checker"),
        (403, {"detail": LOCKED_MESSAGE}, UpstreamRateLimitedError, "Exhausted"),
        (401, {"detail": "No user found for Key ID and Secret"}, UpstreamMisconfiguredError, "Key"),
        (429, {"detail": "Too many requests"}, UpstreamRateLimitedError, "Too many"),
        (
            422,
            {"detail": [{"loc": ["body", "prompt"], "msg": "Field required", "type": "missing"}]},
            UpstreamRejectedError,
            "Field required",
        ),
        (
            503,
            {"detail": "No runner", "error_type": "runner_scheduling_failure"},
            UpstreamUnavailableError,
            "No runner",
        ),
        (
            504,
            {"detail": "Request timed out", "error_type": "request_timeout"},
            UpstreamTimeoutError,
            "timed out",
        ),
        (499, {"detail": "x", "error_type": "client_cancelled"}, UpstreamUnavailableError, "x"),
        (400, {"error": "NSFW content detected"}, UpstreamRejectedError, "NSFW"),
        (502, "<html>Bad gateway</html>", UpstreamUnavailableError, "Bad gateway"),
        (500, {"message": "boom"}, UpstreamUnavailableError, "boom"),
        (500, None, UpstreamUnavailableError, "HTTP 500"),
    ],
)
def test_error_from_response(
    status: int, body: Any, expected: type[Exception], message: str
) -> None:
    error = error_from_response(status, body)
    assert type(error) is expected
    assert message in error.message
    assert error.status == status


def test_a_vanished_job_is_unavailable_not_misconfigured() -> None:
    assert type(error_from_response(404, {"detail": "x"})) is UpstreamMisconfiguredError
    error = error_from_response(404, {"detail": "x"}, on_submit=False)
    assert type(error) is UpstreamUnavailableError
