"""Runware sizes: the reference's `calculateRunwareDimensions` and the per-job defaults.

The expected values were produced by running the reference's JavaScript function on the
same inputs (IEEE doubles, `Math.round`), so these tests pin bit-for-bit agreement.
"""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from image_router.providers.contract import InputFile, Job
from image_router.providers.errors import UpstreamMisconfiguredError, UpstreamRejectedError
from image_router.providers.runware_dimensions import (
    DimensionRules,
    calculate_runware_dimensions,
    image_dimensions,
    image_task_size,
    js_round,
    option_size,
    video_task_size,
)
from tests.fakes.runware import png_input

# The limits the catalog's Runware routes use.
SD_64 = DimensionRules(min_dimension=128, max_dimension=2048, pixel_step=64)
SEEDREAM_4 = DimensionRules(
    min_pixels=921600, max_pixels=16777216, min_dimension=256, max_dimension=16383
)
SEEDREAM_45 = DimensionRules(
    min_pixels=3686400, max_pixels=16777216, min_dimension=256, max_dimension=16383
)
QWEN = DimensionRules(
    min_pixels=1024, max_pixels=1048576, min_dimension=128, max_dimension=2048, pixel_step=32
)
QWEN_EDIT_PLUS = DimensionRules(min_dimension=512, max_dimension=2048, pixel_step=16)
QWEN_2512 = DimensionRules(min_dimension=128, max_dimension=2048, pixel_step=8)
UNBOUNDED = DimensionRules()


@pytest.mark.parametrize(
    ("width", "height", "rules", "expected"),
    [
        # Within limits: only snapped to the step.
        (1024, 1024, SD_64, (1024, 1024)),
        (1920, 1080, SD_64, (1920, 1088)),
        (1080, 1920, SD_64, (1088, 1920)),
        (1920, 1080, QWEN_2512, (1920, 1080)),
        # Too large: the long side comes down to max_dimension, aspect kept.
        (4096, 4096, SD_64, (2048, 2048)),
        (3000, 2000, SD_64, (2048, 1344)),
        (3000, 2000, QWEN_EDIT_PLUS, (2048, 1360)),
        (3000, 2000, QWEN_2512, (2048, 1368)),
        # Too small: the short side goes up to min_dimension.
        (64, 64, SD_64, (128, 128)),
        (33, 77, SD_64, (128, 320)),
        (33, 77, QWEN_EDIT_PLUS, (512, 1200)),
        # Pixel budgets: scaled up to min_pixels (ceil) or down to max_pixels (floor).
        (1, 1, SEEDREAM_4, (960, 960)),
        (1024, 1024, SEEDREAM_45, (1920, 1920)),
        (1920, 1080, SEEDREAM_45, (2560, 1440)),
        (33, 77, SEEDREAM_45, (1258, 2933)),
        (4096, 4096, QWEN, (1024, 1024)),
        (1920, 1080, QWEN, (1344, 768)),
        (3000, 2000, QWEN, (1248, 832)),
        # Step rounding overshoots max_pixels by <1%: the longer side is nudged down.
        (4073, 2441, QWEN, (1280, 800)),
        (2193, 19, QWEN, (10912, 96)),
        # ... by more than 1%: scaled down proportionally, floored to the step.
        (9, 3057, QWEN, (32, 17568)),
        # Reference quirk kept: growing the short side of an extreme image ignores the
        # long-side limit (Runware then refuses the width, a user-visible 400).
        (5000, 10, SD_64, (64000, 128)),
        (2048, 1, QWEN_EDIT_PLUS, (1048576, 512)),
        (100, 3000, SEEDREAM_45, (351, 10517)),
        # ... and a side floored to 0 comes back as one step, over the pixel budget.
        (7, 9000, QWEN, (32, 34656)),
        # No limits: the image's own size.
        (33, 77, UNBOUNDED, (33, 77)),
        (2048, 1, UNBOUNDED, (2048, 1)),
    ],
)
def test_dimensions_match_the_reference(
    width: int, height: int, rules: DimensionRules, expected: tuple[int, int]
) -> None:
    assert calculate_runware_dimensions(width, height, rules) == expected


@pytest.mark.parametrize("rules", [SD_64, SEEDREAM_4, SEEDREAM_45, QWEN, QWEN_EDIT_PLUS, QWEN_2512])
def test_results_are_multiples_of_the_step_within_the_pixel_budget(
    rules: DimensionRules,
) -> None:
    sides = (1, 7, 100, 513, 1999, 4000, 9000)
    # Photos, not slivers: extreme aspect ratios break the budget (quirk pinned above).
    shapes = [(w, h) for w in sides for h in sides if max(w, h) <= 4 * min(w, h)]
    assert len(shapes) > 10
    for width, height in shapes:
        w, h = calculate_runware_dimensions(width, height, rules)
        assert w % rules.pixel_step == 0
        assert h % rules.pixel_step == 0
        assert w * h <= rules.max_pixels


def test_js_round_rounds_halves_up_like_math_round() -> None:
    assert [js_round(x) for x in (2.5, 3.5, -2.5, -0.5, 0.49999, 4.6875, 3.125)] == [
        3,
        4,
        -2,
        0,
        0,
        5,
        3,
    ]
    # Python's round would give 2 and 4 (banker's rounding).
    assert round(2.5) == 2
    assert js_round(2.5) == 3


def test_rules_from_catalog_options_use_reference_defaults() -> None:
    rules = DimensionRules.from_options({"min_dimension": 128, "pixel_step": 64})
    assert rules == DimensionRules(min_dimension=128, pixel_step=64)
    assert rules.min_pixels == 1
    assert rules.max_pixels == math.inf
    assert rules.max_dimension == math.inf


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"pixel_stp": 64}, "unknown keys: pixel_stp"),
        ({"pixel_step": 0}, "pixel_step must be a positive number"),
        ({"pixel_step": 2.5}, "pixel_step must be an integer"),
        ({"max_pixels": "many"}, "max_pixels must be a positive number"),
        ({"min_dimension": True}, "min_dimension must be a positive number"),
        ({"min_dimension": 512, "max_dimension": 256}, "must not exceed"),
        ([128, 2048], "must be a table"),
    ],
)
def test_invalid_rules_are_refused(table: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DimensionRules.from_options(table)


def test_zero_sized_image_is_refused() -> None:
    with pytest.raises(ValueError, match="0x5"):
        calculate_runware_dimensions(0, 5, SD_64)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_image_dimensions_reads_the_header(fmt: str) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buffer, format=fmt)
    assert image_dimensions(buffer.getvalue()) == (300, 200)


def test_image_dimensions_refuses_non_images() -> None:
    with pytest.raises(ValueError, match="could not be read"):
        image_dimensions(b"definitely not an image")


# ---------------------------------------------------------------------------- per job


def _job(size: str = "auto", images: tuple[InputFile, ...] = (), modality: str = "image") -> Job:
    return Job(modality=modality, model="m", prompt="p", size=size, images=images)  # type: ignore[arg-type]


def test_text_to_image_defaults_to_1024_or_the_route_default() -> None:
    assert image_task_size(_job(), {}) == (1024, 1024)
    assert image_task_size(_job(), {"text_default_size": "2048x2048"}) == (2048, 2048)
    assert image_task_size(_job("832x1216"), {"text_default_size": "2048x2048"}) == (832, 1216)


def test_image_to_image_without_size_lets_runware_keep_the_aspect() -> None:
    images = (png_input(300, 200),)
    assert image_task_size(_job(images=images), {"image_input": "reference_images"}) is None
    assert image_task_size(_job("640x480", images), {"image_input": "seed_image"}) == (640, 480)


def test_1024_tokens_default_to_1024_only_for_auto() -> None:
    images = (png_input(300, 200),)
    for token in ("reference_images_1024", "inputs_references_1024"):
        assert image_task_size(_job(images=images), {"image_input": token}) == (1024, 1024)
        assert image_task_size(_job("1248x832", images), {"image_input": token}) == (1248, 832)


def test_auto_size_comes_from_the_first_image() -> None:
    images = (png_input(300, 200), png_input(10, 1000))
    options = {
        "image_input": "seed_image",
        "auto_size": {"min_dimension": 128, "max_dimension": 2048, "pixel_step": 64},
    }
    # 300x200 → 4.6875 and 3.125 steps of 64 → 5 and 3 steps.
    assert image_task_size(_job(images=images), options) == (320, 192)


def test_auto_size_problems_are_ours_or_the_users() -> None:
    bad_rules = {"image_input": "seed_image", "auto_size": {"pixel_step": -1}}
    with pytest.raises(UpstreamMisconfiguredError, match="auto_size"):
        image_task_size(_job(images=(png_input(),)), bad_rules)
    broken = InputFile(b"\x89PNG broken", "image/png", "x.png")
    rules = {"image_input": "seed_image", "auto_size": {"pixel_step": 8}}
    with pytest.raises(UpstreamRejectedError, match="could not be read") as caught:
        image_task_size(_job(images=(broken,)), rules)
    assert caught.value.retry_elsewhere is False


def test_video_sizes_follow_the_reference_defaults() -> None:
    frame = (png_input(),)
    kling = {"default_size": "1280x720"}
    sora = {"text_default_size": "1280x720"}
    assert video_task_size(_job(modality="video"), kling) == (1280, 720)
    assert video_task_size(_job(images=frame, modality="video"), kling) == (1280, 720)
    assert video_task_size(_job(modality="video"), sora) == (1280, 720)
    # With a frame image the text default does not apply: the frame decides.
    assert video_task_size(_job(images=frame, modality="video"), sora) is None
    assert video_task_size(_job("720x1280", frame, "video"), kling) == (720, 1280)
    assert video_task_size(_job(modality="video"), {}) is None


def test_option_size_refuses_garbage() -> None:
    assert option_size({}, "default_size") is None
    with pytest.raises(UpstreamMisconfiguredError, match="default_size"):
        option_size({"default_size": "big"}, "default_size")
