"""The Runware adapter, images: the exact tasks it sends and how it reads the answers."""

from __future__ import annotations

import base64
import io
import uuid
from dataclasses import replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
from PIL import Image

from image_router.providers.contract import InputFile, Job, Target
from image_router.providers.errors import (
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRejectedError,
)
from image_router.providers.runware import (
    RunwareProvider,
    image_result,
    task_uuid_for,
    to_request,
)
from tests.fakes.runware import DEFAULT_API_KEY, FakeRunware, encoded, png_input
from tests.unit.providers.conftest import ROOT, vendor_fixtures

JOB_ID = "3d4c2b1a-0f9e-4d8c-b7a6-123456789abc"
BASE = Job(modality="image", model="m", prompt="a red kite", job_id=JOB_ID)


fake, provider = vendor_fixtures(
    FakeRunware,
    lambda http: RunwareProvider(http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1"),
)


def image_file(fmt: str, size: tuple[int, int] = (40, 30)) -> InputFile:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 10)).save(buffer, format=fmt)
    kind = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[fmt]
    return InputFile(buffer.getvalue(), kind, f"in.{fmt.lower()}")


async def run(provider: RunwareProvider, fake: FakeRunware, job: Job, target: Target) -> Any:
    result = await provider.generate(job, target)
    return result, fake.tasks[-1]


# ---------------------------------------------------------------------------- text to image


async def test_text_to_image_sends_the_reference_task(
    provider: RunwareProvider, fake: FakeRunware, http: httpx.AsyncClient
) -> None:
    result, task = await run(provider, fake, BASE, Target("runware:100@1", {"steps": 4}))

    assert fake.last.path == "/v1"
    assert fake.last.headers["authorization"] == f"Bearer {DEFAULT_API_KEY}"
    assert task == {
        "taskType": "imageInference",
        "taskUUID": JOB_ID,
        "model": "runware:100@1",
        "outputType": "URL",
        "outputFormat": "WEBP",
        "includeCost": True,
        "steps": 4,
        "positivePrompt": "a red kite",
        "numberResults": 1,
        "width": 1024,
        "height": 1024,
    }
    assert result.reported_cost == Decimal("0.0013")
    (artifact,) = result.artifacts
    assert artifact.content_type == "image/webp"
    assert artifact.url is not None
    assert artifact.url.startswith(f"{ROOT}/image/ws/2/ii/")
    downloaded = await http.get(artifact.url)
    assert downloaded.content[8:12] == b"WEBP"


@pytest.mark.parametrize(
    ("output_format", "sent", "content_type"),
    [("png", "PNG", "image/png"), ("jpeg", "JPG", "image/jpeg"), ("webp", "WEBP", "image/webp")],
)
async def test_output_format_is_sent_in_runware_spelling(
    provider: RunwareProvider,
    fake: FakeRunware,
    output_format: str,
    sent: str,
    content_type: str,
) -> None:
    job = replace(BASE, output_format=output_format)
    result, task = await run(provider, fake, job, Target("runware:101@1"))

    assert task["outputFormat"] == sent
    assert result.artifacts[0].content_type == content_type


@pytest.mark.parametrize(
    ("size", "options", "expected"),
    [
        ("1536x640", {}, (1536, 640)),
        ("auto", {"text_default_size": "2048x2048"}, (2048, 2048)),
        ("auto", {"text_default_size": "4096x4096"}, (4096, 4096)),
        ("2304x1728", {"text_default_size": "2048x2048"}, (2304, 1728)),
    ],
)
async def test_size_becomes_width_and_height(
    provider: RunwareProvider,
    fake: FakeRunware,
    size: str,
    options: dict[str, Any],
    expected: tuple[int, int],
) -> None:
    _, task = await run(provider, fake, replace(BASE, size=size), Target("bytedance:5@0", options))

    assert (task["width"], task["height"]) == expected


async def test_qwen_image_layered_gets_tiff_and_no_size(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    target = Target(
        "alibaba:qwen-image@layered", {"output_format": "TIFF", "send_size": False, "steps": 30}
    )
    result, task = await run(provider, fake, replace(BASE, output_format="png"), target)

    assert task["outputFormat"] == "TIFF"
    assert "width" not in task
    assert "height" not in task
    assert result.artifacts[0].content_type == "image/tiff"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"steps": 45}, {"steps": 45}),
        ({"acceleration": "high"}, {"acceleration": "high"}),
        ({"openai_quality": "medium"}, {"providerSettings": {"openai": {"quality": "medium"}}}),
        # A quality mapped to None (gpt-image "auto") sends nothing at all.
        ({"openai_quality": None}, {}),
        ({"steps": None}, {}),
    ],
)
async def test_quality_mappings_reach_runware(
    provider: RunwareProvider,
    fake: FakeRunware,
    options: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    _, task = await run(provider, fake, BASE, Target("openai:1@1", options))

    knobs = {k: task[k] for k in ("steps", "acceleration", "providerSettings") if k in task}
    assert knobs == expected


# ---------------------------------------------------------------------------- input images


async def test_seed_image_with_mask_and_auto_size(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    image, mask = png_input(300, 200), png_input(300, 200, "mask.png")
    job = replace(BASE, images=(image,), mask=mask)
    target = Target(
        "runware:100@1",
        {
            "image_input": "seed_image",
            "strength": 0.8,
            "auto_size": {"min_dimension": 128, "max_dimension": 2048, "pixel_step": 64},
            "steps": 4,
        },
    )
    _, task = await run(provider, fake, job, target)

    assert task["seedImage"] == encoded(image)
    assert task["maskImage"] == encoded(mask)
    assert task["strength"] == 0.8
    assert (task["width"], task["height"]) == (320, 192)
    assert task["model"] == "runware:100@1"


async def test_seed_image_without_strength_option_sends_none(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    target = Target("alibaba:qwen-image@2512", {"image_input": "seed_image"})
    _, task = await run(provider, fake, replace(BASE, images=(png_input(),)), target)

    assert "strength" not in task
    assert "width" not in task


async def test_several_reference_images_keep_their_own_types(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    images = (image_file("PNG"), image_file("JPEG"), image_file("WEBP"))
    target = Target("runware:106@1", {"image_input": "reference_images", "steps": 25})
    _, task = await run(provider, fake, replace(BASE, images=images), target)

    assert task["referenceImages"] == [encoded(i) for i in images]
    assert [uri.split(";")[0] for uri in task["referenceImages"]] == [
        "data:image/png",
        "data:image/jpeg",
        "data:image/webp",
    ]
    # No size asked for: Runware keeps the input's aspect ratio.
    assert "width" not in task
    assert "height" not in task


@pytest.mark.parametrize(
    ("token", "place"),
    [
        ("reference_images_1024", ("referenceImages",)),
        ("inputs_references_1024", ("inputs", "references")),
    ],
)
async def test_1024_tokens_default_the_size(
    provider: RunwareProvider, fake: FakeRunware, token: str, place: tuple[str, ...]
) -> None:
    images = (png_input(), png_input(64, 64))
    _, task = await run(
        provider, fake, replace(BASE, images=images), Target("bfl:3@1", {"image_input": token})
    )

    value: Any = task
    for key in place:
        value = value[key]
    assert value == [encoded(i) for i in images]
    assert (task["width"], task["height"]) == (1024, 1024)


async def test_inputs_reference_images_for_flux_2(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    images = (png_input(), png_input(50, 50))
    target = Target(
        "runware:400@1", {"image_input": "inputs_reference_images", "acceleration": "low"}
    )
    _, task = await run(provider, fake, replace(BASE, images=images, size="1024x768"), target)

    assert task["inputs"] == {"referenceImages": [encoded(i) for i in images]}
    assert task["acceleration"] == "low"
    assert (task["width"], task["height"]) == (1024, 768)


async def test_inputs_image_for_bria_fibo(provider: RunwareProvider, fake: FakeRunware) -> None:
    image = png_input()
    target = Target("bria:20@1", {"image_input": "inputs_image", "steps": 50})
    _, task = await run(provider, fake, replace(BASE, images=(image,)), target)

    assert task["inputs"] == {"image": encoded(image)}
    assert task["steps"] == 50


@pytest.mark.parametrize(
    ("upstream", "task_type"),
    [("runware:110@1", "imageBackgroundRemoval"), ("runware:503@1", "imageUpscale")],
)
async def test_background_removal_and_upscale_send_only_their_parameters(
    provider: RunwareProvider, fake: FakeRunware, upstream: str, task_type: str
) -> None:
    image = png_input()
    target = Target(upstream, {"image_input": "input_image", "task_type": task_type})
    result, task = await run(provider, fake, replace(BASE, images=(image,), size="512x512"), target)

    assert task == {
        "taskType": task_type,
        "taskUUID": JOB_ID,
        "model": upstream,
        "outputType": "URL",
        "outputFormat": "WEBP",
        "includeCost": True,
        "inputImage": encoded(image),
    }
    assert result.artifacts


async def test_image_upstream_applies_only_with_images(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    options = {
        "image_input": "reference_images",
        "image_upstream": "runware:108@20",
        "auto_size": {"min_pixels": 1024, "max_pixels": 1048576, "pixel_step": 32},
    }
    _, text_task = await run(provider, fake, BASE, Target("runware:108@1", options))
    _, edit_task = await run(
        provider,
        fake,
        replace(BASE, images=(png_input(1920, 1080),)),
        Target("runware:108@1", options),
    )

    assert text_task["model"] == "runware:108@1"
    assert "referenceImages" not in text_task
    assert edit_task["model"] == "runware:108@20"
    assert (edit_task["width"], edit_task["height"]) == (1344, 768)


async def test_input_problems_are_refused_before_calling_runware(
    provider: RunwareProvider, fake: FakeRunware
) -> None:
    two = (png_input(), png_input())
    cases = [
        (replace(BASE, images=two), {"image_input": "seed_image"}, UpstreamRejectedError),
        (replace(BASE, mask=png_input()), {"image_input": "seed_image"}, UpstreamRejectedError),
        # The route's token is missing or unknown: a catalog or gateway mistake.
        (replace(BASE, images=two[:1]), {}, UpstreamMisconfiguredError),
        (replace(BASE, images=two[:1]), {"image_input": "frame_image"}, UpstreamMisconfiguredError),
        (BASE, {"task_type": "imageMagic"}, UpstreamMisconfiguredError),
        (BASE, {"text_default_size": "huge"}, UpstreamMisconfiguredError),
    ]
    for job, options, expected in cases:
        with pytest.raises(expected):
            await provider.generate(job, Target("runware:100@1", options))
    assert fake.requests == []


async def test_no_key_is_misconfiguration_without_a_call(
    http: httpx.AsyncClient, fake: FakeRunware
) -> None:
    provider = RunwareProvider(http, credential=None, base_url=f"{ROOT}/v1")
    with pytest.raises(UpstreamMisconfiguredError, match="no Runware API key"):
        await provider.generate(BASE, Target("runware:100@1"))
    assert fake.requests == []


def test_provider_declares_every_catalog_token() -> None:
    assert RunwareProvider.image_inputs == {
        "seed_image",
        "reference_images",
        "reference_images_1024",
        "inputs_reference_images",
        "inputs_references_1024",
        "input_image",
        "inputs_image",
        "frame_image",
        "inputs_frame_images",
    }
    assert RunwareProvider.modalities == {"image", "video"}
    assert RunwareProvider.default_base_url == "https://api.runware.ai/v1"


# ---------------------------------------------------------------------------- pure mapping


def test_task_uuid_is_the_job_id_or_a_fresh_uuid4() -> None:
    assert task_uuid_for(BASE) == JOB_ID
    fresh = task_uuid_for(replace(BASE, job_id=""))
    assert uuid.UUID(fresh).version == 4
    assert task_uuid_for(replace(BASE, job_id="not-a-uuid")) != "not-a-uuid"


def test_to_request_is_an_array_with_one_task() -> None:
    body = to_request(BASE, Target("runware:100@1"), JOB_ID)
    assert isinstance(body, list)
    assert len(body) == 1
    assert body[0]["taskUUID"] == JOB_ID


def test_result_reads_every_output_type() -> None:
    png = png_input().data
    body = {
        "data": [
            {"taskUUID": "other", "imageURL": "https://im.runware.ai/other.webp", "cost": 9},
            {"taskUUID": JOB_ID, "imageBase64Data": base64.b64encode(png).decode(), "cost": 0.002},
            {"taskUUID": JOB_ID, "imageDataURI": "data:image/png;base64,AAAA", "cost": "0.001"},
        ]
    }
    result = image_result(body, JOB_ID, "PNG")

    assert [a.data for a in result.artifacts] == [png, None]
    assert result.artifacts[1].url == "data:image/png;base64,AAAA"
    assert result.reported_cost == Decimal("0.003")
    assert result.raw is not None


def test_result_falls_back_to_the_first_item_and_tolerates_no_cost() -> None:
    body = {"data": [{"taskUUID": "someone-else", "imageURL": "https://im.runware.ai/a.webp"}]}
    result = image_result(body, JOB_ID, "WEBP")

    assert result.artifacts[0].url == "https://im.runware.ai/a.webp"
    assert result.reported_cost is None


@pytest.mark.parametrize(
    "body",
    [
        {"data": []},
        {"data": [{"taskUUID": JOB_ID, "imageUUID": "x"}]},
        {"data": [{"taskUUID": JOB_ID, "imageBase64Data": "!!not base64!!"}]},
    ],
)
def test_result_without_an_image_is_a_protocol_error(body: dict[str, Any]) -> None:
    with pytest.raises(UpstreamProtocolError):
        image_result(body, JOB_ID, "WEBP")


def test_result_listing_our_task_as_failed_raises_its_error() -> None:
    body = {
        "data": [],
        "errors": [{"code": "invalidProviderContent", "message": "flagged", "taskUUID": JOB_ID}],
    }
    with pytest.raises(UpstreamRejectedError, match="flagged"):
        image_result(body, JOB_ID, "WEBP")
