"""Produce `providers/assets/test-video.mp4`, the answer of `ir/test-video`.

Dev-only (needs PyAV, a dev dependency): the asset is committed, so the server never
runs this. 320x180, 24 frames at 12 fps (2 s), H.264 (libx264, yuv420p, so every
browser and player can show it) in an MP4 with the index up front (`+faststart`), so a
player can start before the whole file has arrived. Each frame shows a coloured bar
moving left to right over a dark background and its frame number.

    .venv/bin/python scripts/make_test_video.py [OUTPUT]
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 320, 180
FPS = 12
FRAMES = 24
DEFAULT_OUTPUT = (
    Path(__file__).resolve().parent.parent / "src/image_router/providers/assets/test-video.mp4"
)


def frame_image(index: int) -> Image.Image:
    image = Image.new("RGB", (WIDTH, HEIGHT), (24, 28, 40))
    draw = ImageDraw.Draw(image)
    bar = 40
    x = index * (WIDTH - bar) // (FRAMES - 1)
    # The hue walks round the colour wheel over the clip, so each frame looks different.
    hue = index * 255 // FRAMES
    colour = Image.new("HSV", (1, 1), (hue, 200, 230)).convert("RGB").getpixel((0, 0))
    draw.rectangle((x, 0, x + bar - 1, HEIGHT - 1), fill=colour)
    font = ImageFont.load_default(size=28)
    draw.text((12, 12), f"{index + 1:02d}/{FRAMES}", font=font, fill=(255, 255, 255))
    draw.text(
        (12, HEIGHT - 30),
        "image-router test video",
        font=ImageFont.load_default(size=16),
        fill=(200, 200, 200),
    )
    return image


def write(output: Path) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    with av.open(
        str(output), mode="w", format="mp4", options={"movflags": "+faststart"}
    ) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = WIDTH, HEIGHT
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, FPS)
        # One thread and fixed settings: the same bytes on every run with the same
        # x264 and Pillow.
        stream.codec_context.options = {
            "crf": "30",
            "preset": "veryslow",
            "threads": "1",
            "profile": "main",
        }
        for index in range(FRAMES):
            # Converted here rather than by `encode`: PyAV's implicit conversion gave
            # slightly different pixels depending on the output path.
            frame = av.VideoFrame.from_image(frame_image(index)).reformat(format="yuv420p")
            frame.pts = index
            frame.time_base = Fraction(1, FPS)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    write(output)
    sys.stdout.write(f"wrote {output} ({output.stat().st_size} bytes)\n")


if __name__ == "__main__":
    main()
