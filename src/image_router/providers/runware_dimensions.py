"""The width and height a Runware task gets (spec §3.8, §9.1, §9.2).

Text-to-image jobs without a size get the route's `text_default_size` (else 1024x1024);
video routes have their own defaults.

When a client edits an image with size "auto", the reference derives width and height from
the first input image (`calculateRunwareDimensions`): keep its aspect ratio, bring it within
the model's pixel and side limits, and snap each side to the model's pixel step. The catalog
route carries the limits as `options.auto_size`. The arithmetic copies JavaScript's (IEEE
doubles, `Math.round` rounding halves up) so that the same upload gets the same size here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from image_router.kit.sizes import parse_size
from image_router.providers.contract import Job
from image_router.providers.errors import UpstreamMisconfiguredError, UpstreamRejectedError

_KEYS = ("min_pixels", "max_pixels", "min_dimension", "max_dimension", "pixel_step")


@dataclass(frozen=True)
class DimensionRules:
    """A model's limits; the defaults are the reference's (1, ∞, 1, ∞, 1)."""

    min_pixels: float = 1
    max_pixels: float = math.inf
    min_dimension: float = 1
    max_dimension: float = math.inf
    pixel_step: int = 1

    def __post_init__(self) -> None:
        for name in _KEYS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"auto_size.{name} must be a positive number, not {value!r}")
        if not isinstance(self.pixel_step, int) or math.isinf(self.pixel_step):
            raise ValueError(f"auto_size.pixel_step must be an integer, not {self.pixel_step!r}")
        if self.min_pixels > self.max_pixels or self.min_dimension > self.max_dimension:
            raise ValueError("auto_size minimums must not exceed the maximums")

    @classmethod
    def from_options(cls, table: Any) -> DimensionRules:
        """Rules from a route's `auto_size` table; unknown keys are a catalog mistake."""
        if not isinstance(table, Mapping):
            raise ValueError("auto_size must be a table")
        unknown = sorted(str(key) for key in table if key not in _KEYS)
        if unknown:
            raise ValueError(f"auto_size has unknown keys: {', '.join(unknown)}")
        return cls(**{str(key): value for key, value in table.items()})


def js_round(value: float) -> int:
    """JavaScript's `Math.round`: halves go up (2.5 → 3, -2.5 → -2), unlike `round`."""
    floor = math.floor(value)
    return floor + 1 if value - floor >= 0.5 else floor


def calculate_runware_dimensions(width: int, height: int, rules: DimensionRules) -> tuple[int, int]:
    """The (width, height) Runware gets for an input image of `width` x `height`."""
    if width <= 0 or height <= 0:
        raise ValueError(f"an image cannot measure {width}x{height}")
    aspect = width / height
    # Floats like JavaScript numbers: a fractional limit stays fractional until snapped.
    new_width: float = width
    new_height: float = height

    if new_width > rules.max_dimension or new_height > rules.max_dimension:
        if aspect >= 1:
            new_width = rules.max_dimension
            new_height = js_round(new_width / aspect)
        else:
            new_height = rules.max_dimension
            new_width = js_round(new_height * aspect)

    if new_width < rules.min_dimension or new_height < rules.min_dimension:
        if aspect >= 1:
            new_height = rules.min_dimension
            new_width = js_round(new_height * aspect)
        else:
            new_width = rules.min_dimension
            new_height = js_round(new_width / aspect)

    total = new_width * new_height
    if total > rules.max_pixels:
        scale = math.sqrt(rules.max_pixels / total)
        new_width = math.floor(new_width * scale)
        new_height = math.floor(new_height * scale)
    elif total < rules.min_pixels:
        scale = math.sqrt(rules.min_pixels / total)
        new_width = math.ceil(new_width * scale)
        new_height = math.ceil(new_height * scale)

    step = rules.pixel_step
    new_width = js_round(new_width / step) * step
    new_height = js_round(new_height / step) * step

    # Rounding to the step may overshoot the pixel budget again.
    while new_width * new_height > rules.max_pixels:
        if new_width * new_height > 1.01 * rules.max_pixels:
            scale = math.sqrt(rules.max_pixels / (new_width * new_height))
            new_width = math.floor(new_width * scale / step) * step
            new_height = math.floor(new_height * scale / step) * step
        elif new_width >= new_height:
            new_width -= step
        else:
            new_height -= step

    return int(max(step, new_width)), int(max(step, new_height))


def image_dimensions(data: bytes) -> tuple[int, int]:
    """(width, height) from an image's header; ValueError when it is not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError("the input image could not be read") from exc
    return int(width), int(height)


# ---------------------------------------------------------------------------- per job

DEFAULT_TEXT_SIZE = (1024, 1024)


def image_task_size(job: Job, options: Mapping[str, Any]) -> tuple[int, int] | None:
    """Width and height for an image task; None lets Runware keep the input's aspect."""
    if job.dimensions is not None:
        return job.dimensions
    if not job.images:
        return option_size(options, "text_default_size") or DEFAULT_TEXT_SIZE
    if str(options.get("image_input")).endswith("_1024"):
        return DEFAULT_TEXT_SIZE
    if "auto_size" not in options:
        return None
    try:
        rules = DimensionRules.from_options(options["auto_size"])
    except ValueError as exc:
        raise _misconfigured(f"invalid Runware auto_size option: {exc}") from exc
    try:
        width, height = image_dimensions(job.images[0].data)
    except ValueError as exc:
        raise UpstreamRejectedError(
            "The input image could not be read", provider="runware", code="invalid_image"
        ) from exc
    return calculate_runware_dimensions(width, height, rules)


def video_task_size(job: Job, options: Mapping[str, Any]) -> tuple[int, int] | None:
    """`default_size` applies with or without a frame image, `text_default_size` without."""
    size = job.dimensions or option_size(options, "default_size")
    if size is None and not job.images:
        size = option_size(options, "text_default_size")
    return size


def option_size(options: Mapping[str, Any], key: str) -> tuple[int, int] | None:
    value = options.get(key)
    if value is None:
        return None
    try:
        return parse_size(str(value))
    except ValueError as exc:
        raise _misconfigured(f"Runware route option {key} is not a size: {value!r}") from exc


def _misconfigured(message: str) -> UpstreamMisconfiguredError:
    return UpstreamMisconfiguredError(message, provider="runware", code="route_option")
