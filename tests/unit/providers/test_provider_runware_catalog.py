"""Every Runware route of the packaged catalog, run against the fake Runware.

The fake validates each task like Runware does, so a route whose options or image input
the adapter mishandles fails here. Targets are built as the gateway builds them
(`Route.resolve`), with the route's `image_input` token added to the options.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from image_router.catalog.loader import load_catalog
from image_router.catalog.spec import ModelSpec, Route
from image_router.providers.contract import Job, Target
from image_router.providers.errors import UpstreamRejectedError
from image_router.providers.runware import RunwareProvider
from tests.fakes.runware import DEFAULT_API_KEY, FakeRunware, encoded, png_input

ROOT = "http://fake.test"
CATALOG = load_catalog(image_inputs={"runware": RunwareProvider.image_inputs})
ROUTES = [
    (model, route)
    for model in CATALOG.models.values()
    for route in model.routes
    if route.provider == "runware"
]
# Where each image_input token puts the uploads in the task.
PLACES = {
    "seed_image": ("seedImage",),
    "reference_images": ("referenceImages",),
    "reference_images_1024": ("referenceImages",),
    "inputs_reference_images": ("inputs", "referenceImages"),
    "inputs_references_1024": ("inputs", "references"),
    "input_image": ("inputImage",),
    "inputs_image": ("inputs", "image"),
    "frame_image": ("frameImages",),
    "inputs_frame_images": ("inputs", "frameImages"),
}


def target_for(route: Route, quality: str) -> Target:
    options = route.resolve(quality)
    upstream = str(options.pop("upstream", route.upstream))
    options["image_input"] = route.image_input
    return Target(upstream, options)


def job_for(model: ModelSpec, quality: str, *, with_images: bool, route: Route) -> Job:
    images = (png_input(300, 200), png_input(64, 64))[: route.max_images] if with_images else ()
    return Job(
        modality=model.modality,
        model=model.id,
        prompt="a lighthouse at dusk",
        quality=quality,
        seconds=model.default_seconds,
        images=images,
        mask=png_input(300, 200, "mask.png") if with_images and route.mask else None,
        job_id="5b0a3f2e-8c1d-4e6f-9a7b-0c1d2e3f4a5b",
    )


@pytest.fixture
def fake() -> FakeRunware:
    fake = FakeRunware()
    fake.polls_to_finish = 1
    return fake


@pytest.fixture
async def provider(fake: FakeRunware) -> AsyncIterator[RunwareProvider]:
    async with fake.client(ROOT) as http:
        yield RunwareProvider(
            http, credential=DEFAULT_API_KEY, base_url=f"{ROOT}/v1", poll_interval=0.0
        )


def test_the_catalog_has_all_runware_routes() -> None:
    assert len(ROUTES) == 88
    tokens = {route.image_input for _, route in ROUTES if route.image_input}
    assert tokens == RunwareProvider.image_inputs


@pytest.mark.parametrize(("model", "route"), ROUTES, ids=[f"{m.id}" for m, _ in ROUTES])
async def test_route_is_accepted_by_runware(
    provider: RunwareProvider, fake: FakeRunware, model: ModelSpec, route: Route
) -> None:
    variants = [(q, False) for q in ("auto", "low", "medium", "high")]
    if route.image_input:
        variants.append(("auto", True))
    for quality, with_images in variants:
        if route.refusal(quality) is not None:
            continue
        target = target_for(route, quality)
        job = job_for(model, quality, with_images=with_images, route=route)
        if not with_images and target.options.get("task_type"):
            # Upscalers and background removal need an image: refused before any call.
            with pytest.raises(UpstreamRejectedError, match="Image input is missing"):
                await provider.generate(job, target)
            continue

        result = await provider.generate(job, target)

        assert result.artifacts
        assert result.reported_cost is not None
        submit = next(t for t in reversed(fake.tasks) if t["taskType"] != "getResponse")
        check_task(submit, route, target, job)


def check_task(task: dict[str, Any], route: Route, target: Target, job: Job) -> None:
    options = target.options
    assert task["taskUUID"] == job.job_id
    expected_model = target.upstream
    if job.images and options.get("image_upstream"):
        expected_model = options["image_upstream"]
    assert task["model"] == expected_model
    for key in ("steps", "acceleration"):
        assert task.get(key) == options.get(key)
    if options.get("openai_quality") is not None:
        assert task["providerSettings"] == {"openai": {"quality": options["openai_quality"]}}
    if job.images:
        value: Any = task
        for key in PLACES[str(route.image_input)]:
            value = value[key]
        if route.image_input in ("frame_image", "inputs_frame_images"):
            assert list(value[0].values()) == [encoded(job.images[0])]
        elif isinstance(value, list):
            assert value == [encoded(i) for i in job.images]
        else:
            assert value == encoded(job.images[0])
    if job.mask is not None:
        assert task["maskImage"] == encoded(job.mask)
    if job.modality == "video":
        assert task["duration"] == job.seconds
