"""The offline `test` provider behind `test/test` (image) and `ir/test-video` (video).

It makes no network call and needs no credential, so the whole gateway (billing,
storage, response shapes, failover) can be exercised without a vendor account.

Images are drawn locally with Pillow and are deterministic: the same prompt, quality,
size, output format and input files give byte-identical output.

- Text to image: a two-colour gradient whose colours (and direction) come from the
  sha256 of the prompt, a few filled shapes placed by that hash, and the first 60
  characters of the prompt on a black band at the bottom. `quality` sets the number of
  shapes (low 3, medium and auto 6, high 12).
- Edit (`job.images` non-empty): the FIRST input image, cover-cropped to the output
  size and tinted with the prompt colour, the shapes as outlines only, and the prompt
  band. With a mask, the pixels brighter than 127 once it is greyscale are filled with
  the prompt colour ("white = repaint"; alpha is ignored).
- `size` "auto" is 1024x1024; each side of a concrete size is clamped to 8..4096 (see
  `MIN_SIDE`, `MAX_SIDE`; the catalog lets clients ask for 16..2048 only). `output_format`
  png (default), jpeg or webp.
- `n` images per job: the first is the one described above, each further one is drawn
  from the prompt and its index, so the n images differ but stay deterministic.

Video: a small bundled H.264 MP4 (320x180, 2 s at 12 fps, `assets/test-video.mp4`,
made by `scripts/make_test_video.py`). `job.seconds`, size and inputs do not change it.

Fault injection for gateway tests (either modality; a marker may appear anywhere in the
prompt and is drawn like any other text):

- `[test:sleep=<seconds>]` waits first (at most 600 s; cancellable), to exercise
  heartbeats and deadlines.
- `[test:reject]` then raises `UpstreamRejectedError` (a content-filter refusal).
- `[test:unavailable]` then raises `UpstreamUnavailableError` (an outage: failover).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from PIL import Image, ImageDraw, ImageFont, ImageOps

from image_router.providers.contract import Artifact, Job, Modality, Provider, Result, Target
from image_router.providers.errors import UpstreamRejectedError, UpstreamUnavailableError

PROVIDER_ID = "test"
VIDEO_ASSET = Path(__file__).with_name("assets") / "test-video.mp4"

# The provider is free and usable with zero credits, so an unbounded size would let
# anyone make the server allocate gigabytes (100000x100000 RGB is 30 GB); 4096² RGB is
# 48 MiB. Below 8 px there is nothing to draw, and 0 px cannot be encoded at all.
MIN_SIDE = 8
MAX_SIDE = 4096
AUTO_SIZE = (1024, 1024)
# Checked before decoding: Pillow reads only the header when it opens a file.
MAX_INPUT_PIXELS = 64 * 1024 * 1024
# Up to 256x256 rendering takes 1-3 ms: a stall the event loop absorbs, and cheaper
# than queueing on the default executor, whose few threads every `to_thread` caller
# shares. 1024x1024 takes ~20 ms and 4096x4096 ~400 ms, which would stall every other
# request on the loop; Pillow releases the GIL while it resizes and encodes.
THREAD_THRESHOLD_PIXELS = 256 * 256
MAX_SLEEP_SECONDS = 600.0
PROMPT_TEXT_CHARS = 60
TINT_ALPHA = 0.35

_SHAPES_BY_QUALITY = {"low": 3, "medium": 6, "auto": 6, "high": 12}
_FORMATS = {
    "png": ("PNG", "image/png"),
    "jpeg": ("JPEG", "image/jpeg"),
    "jpg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
}
# Fixed encoder settings, so identical input gives identical bytes. PNG level 1 and
# WebP method 0 are the fastest each offers (PNG level 1 is ~25% faster than the default
# here); the files are larger, which does not matter for a test double.
_SAVE_OPTIONS: dict[str, dict[str, int]] = {
    "PNG": {"compress_level": 1},
    "JPEG": {"quality": 90},
    "WEBP": {"quality": 90, "method": 0},
}
_MARKERS = re.compile(r"\[test:(reject|unavailable|sleep=(\d+(?:\.\d+)?))\]")

RGB = tuple[int, int, int]
Size = tuple[int, int]


# ---------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class Faults:
    """What the fault-injection markers in a prompt ask for."""

    sleep: float = 0.0
    reject: bool = False
    unavailable: bool = False


def parse_faults(prompt: str) -> Faults:
    sleep, reject, unavailable = 0.0, False, False
    for match in _MARKERS.finditer(prompt):
        if match.group(1) == "reject":
            reject = True
        elif match.group(1) == "unavailable":
            unavailable = True
        else:
            sleep = min(float(match.group(2)), MAX_SLEEP_SECONDS)
    return Faults(sleep=sleep, reject=reject, unavailable=unavailable)


# ---------------------------------------------------------------------------- drawing


def output_size(size: Size | None) -> Size:
    """The size actually drawn: "auto" (None) is 1024x1024, sides are clamped."""
    if size is None:
        return AUTO_SIZE
    width, height = size
    return (
        min(max(width, MIN_SIDE), MAX_SIDE),
        min(max(height, MIN_SIDE), MAX_SIDE),
    )


def _gradient(size: Size, start: RGB, end: RGB, horizontal: bool) -> Image.Image:
    # A one-pixel strip of 256 steps per channel (through a lookup table), stretched
    # along the gradient and then repeated across it: no Python loop over pixels, and
    # ~1 ms at 1024x1024 where resizing a 256x256 gradient takes ~6 ms.
    ramp = Image.linear_gradient("L").crop((0, 0, 1, 256))
    channels = [
        ramp.point([a + (b - a) * v // 255 for v in range(256)])
        for a, b in zip(start, end, strict=True)
    ]
    strip = Image.merge("RGB", channels)
    width, height = size
    if horizontal:
        strip = strip.transpose(Image.Transpose.ROTATE_90)
        strip = strip.resize((width, 1), Image.Resampling.BILINEAR)
    else:
        strip = strip.resize((1, height), Image.Resampling.BILINEAR)
    return strip.resize(size, Image.Resampling.NEAREST)


def _shapes(image: Image.Image, seed: bytes, count: int, filled: bool) -> None:
    width, height = image.size
    draw = ImageDraw.Draw(image)
    stream = hashlib.shake_256(seed).digest(6 * count)
    line = max(1, min(width, height) // 128)
    for i in range(count):
        kind, cx, cy, extent, hue, shade = stream[6 * i : 6 * i + 6]
        x, y = cx * (width - 1) // 255, cy * (height - 1) // 255
        # Half-extent between 5% and 25% of each side, so every shape is visible.
        rx = width * (13 + extent * 51 // 255) // 256
        ry = height * (13 + extent * 51 // 255) // 256
        box = (x - rx, y - ry, x + rx, y + ry)
        colour = (hue, shade, 255 - hue)
        fill = colour if filled else None
        if kind % 3 == 0:
            draw.rectangle(box, fill=fill, outline=colour, width=line)
        elif kind % 3 == 1:
            draw.ellipse(box, fill=fill, outline=colour, width=line)
        else:
            points = [(x, y - ry), (x + rx, y + ry), (x - rx, y + ry)]
            draw.polygon(points, fill=fill, outline=colour, width=line)


def _caption(image: Image.Image, prompt: str) -> None:
    # Pillow's bundled font has ASCII glyphs only; others would be drawn as empty boxes.
    text = "".join(
        c if " " <= c <= "~" else " " if c.isspace() else "?" for c in prompt[:PROMPT_TEXT_CHARS]
    )
    width, height = image.size
    font_size = max(8, min(width // 40, height // 10))
    band = font_size * 8 // 5
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, height - band, width, height), fill=(0, 0, 0))
    # Loading the bundled font takes ~0.2 ms; a fresh one per call is never shared
    # between the threads that render concurrently.
    font = ImageFont.load_default(size=font_size)
    origin = (font_size // 2, height - band + font_size // 4)
    draw.text(origin, text, font=font, fill=(255, 255, 255))


def _open(data: bytes, what: str, size: Size) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_INPUT_PIXELS:
            raise UpstreamRejectedError(
                f"The {what} is too large ({image.width}x{image.height})",
                provider=PROVIDER_ID,
            )
        # A JPEG decodes at 1/2, 1/4 or 1/8 scale for a fraction of the cost; a square
        # of the longer side stays big enough whatever EXIF rotation follows.
        side = max(size)
        image.draft("RGB", (side, side))
        image.load()
        # Phone photos are stored sideways with an EXIF rotation tag; use them the way
        # the user sees them.
        return ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as exc:
        # Pillow's own limit (~179 MP), checked as it opens the file, before ours can be.
        raise UpstreamRejectedError(f"The {what} is too large", provider=PROVIDER_ID) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise UpstreamRejectedError(f"The {what} could not be read", provider=PROVIDER_ID) from exc


def _edit_base(
    image_data: bytes, mask_data: bytes | None, size: Size, colour: RGB
) -> tuple[Image.Image, Image.Image | None]:
    """The input image fitted and tinted, and the region the mask selects, if any."""
    source = _open(image_data, "input image", size).convert("RGB")
    fitted = ImageOps.fit(source, size, Image.Resampling.BILINEAR)
    tinted = Image.blend(fitted, Image.new("RGB", size, colour), TINT_ALPHA)
    if mask_data is None:
        return tinted, None
    # Cropped like the input image, so that the two stay aligned.
    mask = _open(mask_data, "mask", size).convert("L")
    fitted_mask = ImageOps.fit(mask, size, Image.Resampling.BILINEAR)
    return tinted, fitted_mask.point(lambda v: 255 if v > 127 else 0)


def render_image(
    prompt: str,
    quality: str,
    size: Size,
    output_format: str = "png",
    image: bytes | None = None,
    mask: bytes | None = None,
    variant: int = 0,
) -> tuple[bytes, str]:
    """Draw a job's image at exactly `size`; returns (encoded bytes, content type).

    CPU-bound and blocking. Raises `UpstreamRejectedError` for unreadable inputs.
    """
    fmt = _FORMATS.get(output_format.lower())
    if fmt is None:
        raise UpstreamRejectedError(
            f"output_format '{output_format}' is not supported", provider=PROVIDER_ID
        )
    # Variant 0 is the prompt alone, so the first image does not change with `n`.
    seed = prompt if variant == 0 else f"{prompt}\x00{variant}"
    digest = hashlib.sha256(seed.encode("utf-8")).digest()
    colour: RGB = (digest[0], digest[1], digest[2])
    count = _SHAPES_BY_QUALITY.get(quality, _SHAPES_BY_QUALITY["medium"])

    region: Image.Image | None = None
    if image is None:
        second: RGB = (digest[3], digest[4], digest[5])
        canvas = _gradient(size, colour, second, horizontal=bool(digest[6] & 1))
    else:
        canvas, region = _edit_base(image, mask, size, colour)
    # Shapes are solid on a generated image and outlines on an edit, so the input stays
    # visible. The masked region is filled after them (it is what a model would
    # repaint), and the caption comes last so that it is always legible.
    _shapes(canvas, digest, count, filled=image is None)
    if region is not None:
        canvas.paste(colour, (0, 0, *size), region)
    _caption(canvas, prompt)

    pil_format, content_type = fmt
    out = io.BytesIO()
    canvas.save(out, format=pil_format, **_SAVE_OPTIONS[pil_format])
    return out.getvalue(), content_type


# ---------------------------------------------------------------------------- provider


class TestProvider(Provider):
    """Offline provider: draws images locally and returns a bundled video."""

    __test__ = False  # the name starts with "Test": keep pytest from collecting it

    id: ClassVar[str] = PROVIDER_ID
    modalities: ClassVar[frozenset[Modality]] = frozenset({"image", "video"})
    image_inputs: ClassVar[frozenset[str]] = frozenset({"passthrough"})
    needs_credential: ClassVar[bool] = False

    _video: bytes | None = None

    async def generate(self, job: Job, target: Target) -> Result:
        faults = parse_faults(job.prompt)
        if faults.sleep > 0:
            await asyncio.sleep(faults.sleep)
        if faults.reject:
            # Quoting the prompt, as real vendors' refusals often do.
            raise UpstreamRejectedError(
                f"Request was rejected by the test provider's content filter: {job.prompt}",
                provider=PROVIDER_ID,
            )
        if faults.unavailable:
            raise UpstreamUnavailableError(
                "The test provider is unavailable ([test:unavailable] in the prompt)",
                provider=PROVIDER_ID,
                status=503,
            )
        if job.modality == "video":
            artifacts: tuple[Artifact, ...] = (await self._video_artifact(),)
        else:
            artifacts = tuple([await self._image_artifact(job, i) for i in range(max(job.n, 1))])
        return Result(
            artifacts=artifacts,
            created=int(time.time()),
            raw={"provider": PROVIDER_ID},
        )

    async def _image_artifact(self, job: Job, variant: int = 0) -> Artifact:
        try:
            size = output_size(job.dimensions)
        except ValueError as exc:
            raise UpstreamRejectedError(
                f"size '{job.size}' is not 'auto' or WIDTHxHEIGHT", provider=PROVIDER_ID
            ) from exc
        image = job.images[0].data if job.images else None
        mask = job.mask.data if job.mask is not None else None
        fmt = job.output_format or "png"
        if size[0] * size[1] >= THREAD_THRESHOLD_PIXELS:
            data, content_type = await asyncio.to_thread(
                render_image, job.prompt, job.quality, size, fmt, image, mask, variant
            )
        else:
            data, content_type = render_image(
                job.prompt, job.quality, size, fmt, image, mask, variant
            )
        return Artifact(data=data, content_type=content_type)

    async def _video_artifact(self) -> Artifact:
        if self._video is None:
            self._video = await asyncio.to_thread(VIDEO_ASSET.read_bytes)
        return Artifact(data=self._video, content_type="video/mp4")
