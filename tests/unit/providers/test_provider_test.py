"""The offline test provider: real, deterministic images and a real video, no network."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from collections.abc import AsyncIterator

import av
import httpx
import pytest
from PIL import Image, ImageChops, ImageStat

from image_router.providers.contract import InputFile, Job, Result, Target
from image_router.providers.errors import UpstreamRejectedError, UpstreamUnavailableError
from image_router.providers.test import Faults, TestProvider, parse_faults

TARGET = Target(upstream="test/test")
PROMPT = "a red fox in the snow, watercolour"


@pytest.fixture
async def provider() -> AsyncIterator[TestProvider]:
    async with httpx.AsyncClient() as http:
        yield TestProvider(http)


def image_job(prompt: str = PROMPT, **fields: object) -> Job:
    return Job(modality="image", model="test/test", prompt=prompt, **fields)  # type: ignore[arg-type]


def png(image: Image.Image, fmt: str = "PNG", **options: object) -> InputFile:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return InputFile(buffer.getvalue(), f"image/{fmt.lower()}", f"in.{fmt.lower()}")


def halves(size: tuple[int, int], left: object, right: object, mode: str = "RGB") -> Image.Image:
    image = Image.new(mode, size, left)  # type: ignore[arg-type]
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))  # type: ignore[arg-type]
    return image


async def run(provider: TestProvider, job: Job) -> tuple[Result, bytes]:
    result = await provider.generate(job, TARGET)
    assert len(result.artifacts) == 1
    data = result.artifacts[0].data
    assert data is not None
    return result, data


async def render(provider: TestProvider, job: Job) -> Image.Image:
    _, data = await run(provider, job)
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def above_caption(image: Image.Image) -> tuple[int, int, int, int]:
    """The part of the picture above the prompt band (which takes < 20% of the height)."""
    return (0, 0, image.width, image.height * 4 // 5)


# ---------------------------------------------------------------------- the contract


def test_declares_an_offline_image_and_video_provider() -> None:
    assert TestProvider.id == "test"
    assert TestProvider.modalities == frozenset({"image", "video"})
    assert TestProvider.needs_credential is False
    assert TestProvider.image_inputs == frozenset({"passthrough"})


async def test_result_carries_one_artifact_a_timestamp_and_a_raw_record(
    provider: TestProvider,
) -> None:
    before = int(time.time())
    result, _ = await run(provider, image_job())
    assert result.created is not None
    assert before <= result.created <= int(time.time())
    assert result.raw == {"provider": "test"}
    assert result.artifacts[0].url is None


# ---------------------------------------------------------------------- text to image


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
async def test_the_same_request_gives_byte_identical_output(
    provider: TestProvider, output_format: str
) -> None:
    job = image_job(quality="high", size="640x360", output_format=output_format)
    _, first = await run(provider, job)
    _, second = await run(provider, job)
    assert first == second


async def test_auto_size_is_1024_square(provider: TestProvider) -> None:
    assert (await render(provider, image_job(size="auto"))).size == (1024, 1024)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("640x360", (640, 360)),
        ("333x77", (333, 77)),
        ("1536X1024", (1536, 1024)),
        ("2x5000", (8, 4096)),
        ("9999x0", (4096, 8)),
    ],
)
async def test_size_is_honoured_within_8_to_4096(
    provider: TestProvider, size: str, expected: tuple[int, int]
) -> None:
    assert (await render(provider, image_job(size=size))).size == expected


@pytest.mark.parametrize(
    ("output_format", "pil_format", "content_type"),
    [
        (None, "PNG", "image/png"),
        ("png", "PNG", "image/png"),
        ("jpeg", "JPEG", "image/jpeg"),
        ("jpg", "JPEG", "image/jpeg"),
        ("webp", "WEBP", "image/webp"),
    ],
)
async def test_output_format_is_the_real_encoding(
    provider: TestProvider,
    output_format: str | None,
    pil_format: str,
    content_type: str,
) -> None:
    result, data = await run(provider, image_job(size="256x256", output_format=output_format))
    assert result.artifacts[0].content_type == content_type
    assert Image.open(io.BytesIO(data)).format == pil_format


async def test_a_malformed_size_is_refused(provider: TestProvider) -> None:
    with pytest.raises(UpstreamRejectedError, match="size 'big' is not"):
        await provider.generate(image_job(size="big"), TARGET)


async def test_an_unknown_output_format_is_refused(provider: TestProvider) -> None:
    with pytest.raises(UpstreamRejectedError, match="'gif' is not supported"):
        await provider.generate(image_job(output_format="gif"), TARGET)


async def test_the_picture_depends_on_the_prompt(provider: TestProvider) -> None:
    fox = await render(provider, image_job("a fox", size="256x256"))
    owl = await render(provider, image_job("an owl", size="256x256"))
    difference = ImageChops.difference(fox.convert("RGB"), owl.convert("RGB"))
    # Not a few stray pixels: the colours and shapes change across the picture.
    assert max(ImageStat.Stat(difference.crop(above_caption(fox))).mean) > 20


async def test_the_prompt_is_written_on_the_picture(provider: TestProvider) -> None:
    def white_pixels(image: Image.Image) -> int:
        band = image.convert("L").crop((0, image.height * 9 // 10, image.width, image.height))
        return sum(band.histogram()[200:])

    assert white_pixels(await render(provider, image_job("", size="512x512"))) == 0
    assert white_pixels(await render(provider, image_job("HELLO WORLD", size="512x512"))) > 50


async def test_quality_changes_the_picture(provider: TestProvider) -> None:
    outputs = {}
    for quality in ("auto", "low", "medium", "high"):
        _, outputs[quality] = await run(provider, image_job(quality=quality, size="256x256"))
    assert len({outputs["low"], outputs["medium"], outputs["high"]}) == 3
    assert outputs["auto"] == outputs["medium"]


async def test_large_images_are_drawn_off_the_event_loop(provider: TestProvider) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = ticks
    await provider.generate(image_job(size="1024x1024"), TARGET)
    task.cancel()
    # Drawn inline, the loop could not have run the ticker until the image was done.
    assert ticks > started


# ---------------------------------------------------------------------- edits


async def test_an_edit_is_derived_from_the_input_image(provider: TestProvider) -> None:
    source = png(halves((400, 300), (255, 0, 0), (0, 0, 255)))
    output = (await render(provider, image_job(size="512x384", images=(source,)))).convert("RGB")
    top = above_caption(output)
    left = ImageStat.Stat(output.crop((0, 0, output.width // 2, top[3]))).mean
    right = ImageStat.Stat(output.crop((output.width // 2, 0, output.width, top[3]))).mean
    assert left[0] > right[0] + 80
    assert right[2] > left[2] + 80


async def test_only_the_first_input_image_is_used(provider: TestProvider) -> None:
    first = png(halves((64, 64), (255, 0, 0), (0, 0, 255)))
    second = png(halves((64, 64), (0, 255, 0), (255, 255, 0)))
    _, both = await run(provider, image_job(size="256x256", images=(first, second)))
    _, alone = await run(provider, image_job(size="256x256", images=(first,)))
    _, other = await run(provider, image_job(size="256x256", images=(second,)))
    assert both == alone != other


async def test_an_exif_rotated_photo_is_used_upright(provider: TestProvider) -> None:
    # Stored 100x200 with red on top; orientation 6 means "turn 90° clockwise to show",
    # so the user sees a 200x100 picture, blue on the left and red on the right.
    stored = Image.new("RGB", (100, 200), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    source = png(stored, "JPEG", exif=exif)
    output = (await render(provider, image_job(size="512x256", images=(source,)))).convert("RGB")
    band_top = above_caption(output)[3]
    left = ImageStat.Stat(output.crop((0, 0, 256, band_top))).mean
    right = ImageStat.Stat(output.crop((256, 0, 512, band_top))).mean
    assert right[0] > left[0] + 80
    assert left[2] > right[2] + 80


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "1", "CMYK", "I;16"])
async def test_input_images_of_any_colour_mode_are_accepted(
    provider: TestProvider, mode: str
) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    source = png(Image.new("RGB", (32, 32), (10, 200, 30)).convert(mode), fmt)
    assert (await render(provider, image_job(size="64x64", images=(source,)))).size == (64, 64)


async def test_a_mask_fills_its_white_region_with_one_colour(provider: TestProvider) -> None:
    # A source with many colours, so that a filled region stands out.
    source = png(Image.linear_gradient("L").convert("RGB").resize((512, 384)))
    mask = png(halves((512, 384), 255, 0, mode="L"))
    plain = (await render(provider, image_job(size="512x384", images=(source,)))).convert("RGB")
    masked_job = image_job(size="512x384", images=(source,), mask=mask)
    masked = (await render(provider, masked_job)).convert("RGB")

    band_top = above_caption(masked)[3]
    left = (0, 0, 252, band_top)
    assert dominant_share(masked.crop(left)) > 0.95
    assert dominant_share(plain.crop(left)) < 0.2
    # Outside the mask the edit is untouched (a margin for the resampled mask edge).
    right = (260, 0, 512, band_top)
    assert ImageChops.difference(masked.crop(right), plain.crop(right)).getbbox() is None


def dominant_share(image: Image.Image) -> float:
    colours = image.getcolors(image.width * image.height)
    assert colours is not None
    return max(count for count, _ in colours) / (image.width * image.height)


async def test_the_same_edit_gives_byte_identical_output(provider: TestProvider) -> None:
    source = png(halves((300, 200), (255, 0, 0), (0, 0, 255)))
    mask = png(halves((300, 200), 0, 255, mode="L"))
    job = image_job(size="300x200", images=(source,), mask=mask)
    assert (await run(provider, job))[1] == (await run(provider, job))[1]


def png_claiming_size(width: int, height: int) -> bytes:
    """A PNG whose header announces `width`x`height`; the pixel data is never read."""
    data = bytearray(png(Image.new("1", (1, 1))).data)
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:33] = header + struct.pack(">I", zlib.crc32(header))
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not an image at all", "The input image could not be read"),
        (b"", "The input image could not be read"),
        (png(Image.new("RGB", (64, 64), (1, 2, 3))).data[:60], "could not be read"),
        (png_claiming_size(9000, 9000), r"The input image is too large \(9000x9000\)"),
        (png_claiming_size(20_000, 20_000), "The input image is too large"),
    ],
    ids=["garbage", "empty", "truncated", "huge", "bomb"],
)
async def test_an_unreadable_input_image_is_rejected(
    provider: TestProvider, data: bytes, message: str
) -> None:
    job = image_job(images=(InputFile(data, "image/png", "in.png"),))
    with pytest.raises(UpstreamRejectedError, match=message) as caught:
        await provider.generate(job, TARGET)
    assert caught.value.provider == "test"
    assert caught.value.retry_elsewhere is False


async def test_an_unreadable_mask_is_rejected(provider: TestProvider) -> None:
    source = png(Image.new("RGB", (64, 64)))
    job = image_job(images=(source,), mask=InputFile(b"nope", "image/png", "mask.png"))
    with pytest.raises(UpstreamRejectedError, match="The mask could not be read"):
        await provider.generate(job, TARGET)


# ---------------------------------------------------------------------- fault injection


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a cat", Faults()),
        ("a cat [test:reject]", Faults(reject=True)),
        ("[test:unavailable] a cat", Faults(unavailable=True)),
        ("a [test:sleep=2.5] cat", Faults(sleep=2.5)),
        ("[test:sleep=3][test:reject]", Faults(sleep=3.0, reject=True)),
        ("[test:sleep=9999]", Faults(sleep=600.0)),
        ("[test:sleep=-1] [test:sleep=abc] [test:sleep=] [TEST:reject] test:reject", Faults()),
    ],
)
def test_fault_markers_are_parsed(prompt: str, expected: Faults) -> None:
    assert parse_faults(prompt) == expected


@pytest.mark.parametrize("modality", ["image", "video"])
async def test_reject_marker_raises_a_content_refusal(
    provider: TestProvider, modality: str
) -> None:
    job = Job(modality=modality, model="m", prompt="a cat [test:reject]")  # type: ignore[arg-type]
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(job, TARGET)
    assert caught.value.message == (
        "Request was rejected by the test provider's content filter: a cat [test:reject]"
    )
    assert caught.value.provider == "test"


async def test_unavailable_marker_raises_an_outage_worth_failing_over(
    provider: TestProvider,
) -> None:
    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.generate(image_job("[test:unavailable]"), TARGET)
    assert caught.value.retry_elsewhere is True


async def test_sleep_marker_delays_the_answer_and_can_be_cancelled(
    provider: TestProvider,
) -> None:
    # Without the marker a 64x64 image is ready in a couple of milliseconds.
    job = image_job("a cat [test:sleep=600]", size="64x64")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.generate(job, TARGET), timeout=0.2)


async def test_sleep_comes_before_the_injected_failure(provider: TestProvider) -> None:
    # Refused after the wait, not at once: a deadline test can see a slow refusal.
    job = image_job("[test:reject] [test:sleep=600]", size="64x64")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.generate(job, TARGET), timeout=0.2)


# ---------------------------------------------------------------------- video


async def test_video_is_a_real_playable_mp4(provider: TestProvider) -> None:
    job = Job(modality="video", model="ir/test-video", prompt="a cat", seconds=5)
    result, data = await run(provider, job)
    assert result.artifacts[0].content_type == "video/mp4"
    assert data[4:8] == b"ftyp"
    assert len(data) < 64 * 1024

    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (320, 180)
        assert container.duration is not None
        assert container.duration / av.time_base == pytest.approx(2.0, abs=0.1)
        frames = list(container.decode(video=0))
    assert len(frames) >= 10
    assert frames[0].to_image().size == (320, 180)
    # A moving picture, not a still: the first and last frames differ.
    assert ImageChops.difference(frames[0].to_image(), frames[-1].to_image()).getbbox()


async def test_video_is_the_same_asset_every_time(provider: TestProvider) -> None:
    job = Job(modality="video", model="ir/test-video", prompt="anything")
    assert (await run(provider, job))[1] == (await run(provider, job))[1]


async def test_n_images_differ_and_the_first_is_the_single_one(provider: TestProvider) -> None:
    result = await provider.generate(image_job(size="64x64", n=3), TARGET)
    _, single = await run(provider, image_job(size="64x64"))

    images = [artifact.data for artifact in result.artifacts]
    assert len(images) == 3 and len(set(images)) == 3
    assert images[0] == single
    again = await provider.generate(image_job(size="64x64", n=3), TARGET)
    assert [artifact.data for artifact in again.artifacts] == images
