from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from image_router.storage.images import (
    EXTENSIONS,
    OUTPUT_FORMATS,
    content_type_for_extension,
    convert_image,
    decode_base64,
    extension_for,
    sniff_content_type,
)


def raster(
    fmt: str,
    size: tuple[int, int] = (32, 16),
    mode: str = "RGB",
    color: tuple[int, ...] = (200, 30, 30),
    **save: object,
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, color).save(out, fmt, **save)
    return out.getvalue()


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ISO-BMFF: a 32-byte ftyp box (size, "ftyp", major brand, minor version, compatibles).
def ftyp(brand: bytes) -> bytes:
    return b"\x00\x00\x00\x20ftyp" + brand + b"\x00\x00\x02\x00" + brand + b"mp41" * 3


EBML_WEBM = bytes.fromhex("1a45dfa39f4286810142f7810142f2810442f381084282847765626d")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (raster("PNG"), "image/png"),
        (raster("JPEG"), "image/jpeg"),
        (raster("WEBP"), "image/webp"),
        (raster("GIF", mode="P", color=(1,)), "image/gif"),
        (raster("TIFF"), "image/tiff"),
        (ftyp(b"isom"), "video/mp4"),
        (ftyp(b"mp42"), "video/mp4"),
        (ftyp(b"qt  "), "video/quicktime"),
        (ftyp(b"avif"), "image/avif"),
        (EBML_WEBM, "video/webm"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        (b'\xef\xbb\xbf\n  <?xml version="1.0"?>\n<svg/>', "image/svg+xml"),
        (
            b'<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x">\n<SVG/>',
            "image/svg+xml",
        ),
        (b'<?xml version="1.0"?><feed/>', None),
        (b"<html><body>not an image</body></html>", None),
        (b"plain text", None),
        (b"", None),
    ],
)
def test_sniff_content_type_recognises_magic_bytes(data: bytes, expected: str | None) -> None:
    assert sniff_content_type(data) == expected


def test_tiff_sniffing_covers_both_byte_orders() -> None:
    assert sniff_content_type(b"MM\x00*\x00\x00\x00\x08") == "image/tiff"
    assert sniff_content_type(b"II*\x00\x08\x00\x00\x00") == "image/tiff"


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("image/jpeg", ".jpg"),
        ("image/png", ".png"),
        ("image/webp", ".webp"),
        ("image/gif", ".gif"),
        ("image/svg+xml", ".svg"),
        ("image/tiff", ".tiff"),
        ("video/mp4", ".mp4"),
        ("video/webm", ".webm"),
        ("video/quicktime", ".mov"),
        ("IMAGE/PNG; charset=binary", ".png"),
        ("video/avi", ""),
        ("application/octet-stream", ""),
        ("", ""),
    ],
)
def test_extension_for_follows_the_naming_table(content_type: str, extension: str) -> None:
    assert extension_for(content_type) == extension


def test_every_extension_maps_back_to_its_content_type() -> None:
    for content_type, extension in EXTENSIONS.items():
        assert content_type_for_extension(f"gen-1{extension}") == content_type


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.PNG", "image/png"),
        ("a.jpeg", "image/jpeg"),
        ("a.tif", "image/tiff"),
        ("a.b.webm", "video/webm"),
        ("noextension", None),
        ("a.bin", None),
        ("a.png.exe", None),
    ],
)
def test_content_type_for_extension(name: str, expected: str | None) -> None:
    assert content_type_for_extension(name) == expected


PNG = raster("PNG")


def test_decode_plain_base64() -> None:
    assert decode_base64(base64.b64encode(PNG).decode()) == (PNG, None)


def test_decode_data_uri_returns_its_type() -> None:
    text = "data:image/webp;base64," + base64.b64encode(PNG).decode()
    assert decode_base64(text) == (PNG, "image/webp")


def test_decode_data_uri_with_extra_parameters() -> None:
    text = "DATA:Image/PNG;name=a.png;base64," + base64.b64encode(PNG).decode()
    assert decode_base64(text) == (PNG, "image/png")


def test_decode_urlsafe_base64_without_padding() -> None:
    data = bytes(range(256)) + b"\xfb\xff"  # encodes to both '-' and '_'
    text = base64.urlsafe_b64encode(data).decode().rstrip("=")
    assert "-" in text
    assert "_" in text
    assert decode_base64(text) == (data, None)


def test_decode_tolerates_line_breaks() -> None:
    text = base64.encodebytes(PNG).decode()
    assert "\n" in text.strip()
    assert decode_base64(text) == (PNG, None)


@pytest.mark.parametrize("text", ["", "   ", "data:image/png;base64,", "===="])
def test_decode_empty_content(text: str) -> None:
    with pytest.raises(ValueError, match=r"^Invalid base64 data: empty content$"):
        decode_base64(text)


@pytest.mark.parametrize(
    "text",
    [
        "not base64 at all!",
        "abcde",  # one character past a whole group cannot be valid
        "ab==cd",
        "data:image/png,plain-text-not-base64",
    ],
)
def test_decode_invalid_base64(text: str) -> None:
    with pytest.raises(ValueError, match="Invalid base64 data"):
        decode_base64(text)


def test_output_formats() -> None:
    assert OUTPUT_FORMATS == {
        "png": "image/png",
        "jpeg": "image/jpeg",
        "webp": "image/webp",
    }


@pytest.mark.parametrize(
    ("source_fmt", "source_type", "output_format", "pil_format", "content_type"),
    [
        ("PNG", "image/png", "jpeg", "JPEG", "image/jpeg"),
        ("PNG", "image/png", "webp", "WEBP", "image/webp"),
        ("JPEG", "image/jpeg", "png", "PNG", "image/png"),
        ("WEBP", "image/webp", "png", "PNG", "image/png"),
        ("TIFF", "image/tiff", "jpg", "JPEG", "image/jpeg"),
        ("GIF", "image/gif", "png", "PNG", "image/png"),
    ],
)
def test_convert_between_raster_formats(
    source_fmt: str,
    source_type: str,
    output_format: str,
    pil_format: str,
    content_type: str,
) -> None:
    mode = "P" if source_fmt == "GIF" else "RGB"
    color: tuple[int, ...] = (3,) if mode == "P" else (10, 120, 240)
    source = raster(source_fmt, size=(48, 20), mode=mode, color=color)

    data, result_type = convert_image(source, source_type, output_format)

    assert result_type == content_type
    image = opened(data)
    assert image.format == pil_format
    assert image.size == (48, 20)


def test_png_to_jpeg_and_back_keeps_the_picture() -> None:
    jpeg, _ = convert_image(raster("PNG", color=(10, 120, 240)), "image/png", "jpeg")
    png, png_type = convert_image(jpeg, "image/jpeg", "png")
    assert png_type == "image/png"
    red, green, blue = opened(png).convert("RGB").getpixel((5, 5))  # type: ignore[misc]
    assert abs(red - 10) < 8
    assert abs(green - 120) < 8
    assert abs(blue - 240) < 8


def test_transparent_png_becomes_white_jpeg() -> None:
    source = raster("PNG", mode="RGBA", color=(255, 0, 0, 0))
    data, _ = convert_image(source, "image/png", "jpeg")
    assert opened(data).convert("RGB").getpixel((3, 3)) == pytest.approx((255, 255, 255), abs=2)


def test_palette_gif_with_transparency_converts_to_jpeg() -> None:
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    out = io.BytesIO()
    image.save(out, "GIF", transparency=0)
    data, content_type = convert_image(out.getvalue(), "image/gif", "jpeg")
    assert content_type == "image/jpeg"
    assert opened(data).convert("RGB").getpixel((1, 1)) == pytest.approx((255, 255, 255), abs=2)


def test_transparent_png_to_webp_keeps_alpha() -> None:
    source = raster("PNG", mode="RGBA", color=(255, 0, 0, 0))
    data, _ = convert_image(source, "image/png", "webp")
    assert opened(data).convert("RGBA").getpixel((3, 3))[3] == 0  # type: ignore[index]


def test_exif_orientation_is_applied_before_reencoding() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    source = raster("JPEG", size=(40, 20), exif=exif.tobytes())
    data, _ = convert_image(source, "image/jpeg", "png")
    assert opened(data).size == (20, 40)


@pytest.mark.parametrize("output_format", [None, "png", "PNG"])
def test_matching_format_returns_the_same_bytes(output_format: str | None) -> None:
    data, content_type = convert_image(PNG, "image/png", output_format)
    assert data is PNG
    assert content_type == "image/png"


def test_bytes_decide_over_a_wrong_label() -> None:
    jpeg = raster("JPEG")
    data, content_type = convert_image(jpeg, "image/png", "jpeg")
    assert data is jpeg
    assert content_type == "image/jpeg"


def test_svg_is_never_rasterised() -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'
    assert convert_image(svg, "image/svg+xml", "png") == (svg, "image/svg+xml")


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(ftyp(b"isom"), "video/mp4"), (EBML_WEBM, "video/webm")],
)
def test_videos_are_returned_unchanged(data: bytes, content_type: str) -> None:
    assert convert_image(data, content_type, "jpeg") == (data, content_type)


def test_unknown_output_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="Unsupported output_format 'bmp'"):
        convert_image(PNG, "image/png", "bmp")


@pytest.mark.parametrize(
    "data",
    [b"definitely not an image", PNG[: len(PNG) // 2], b"%!PS-Adobe-3.0 EPSF-3.0\n"],
)
def test_undecodable_bytes_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="Could not decode image"):
        convert_image(data, "image/png", "jpeg")


def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    source = raster("PNG", size=(20, 20))  # 4x the limit: Pillow raises
    with pytest.raises(ValueError, match="Image too large"):
        convert_image(source, "image/png", "jpeg")


def test_image_over_the_limit_is_refused_even_when_pillow_only_warns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    source = raster("PNG", size=(12, 12))  # 1.44x the limit: Pillow warns
    with pytest.raises(ValueError, match="Image too large"):
        convert_image(source, "image/png", "jpeg")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_limit_holds_when_warnings_are_not_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    source = raster("PNG", size=(12, 12))
    with pytest.raises(ValueError, match="144 pixels exceeds limit of 100"):
        convert_image(source, "image/png", "jpeg")


@pytest.mark.parametrize("output_format", ["png", "jpeg", "webp"])
@pytest.mark.parametrize(
    ("mode", "source_fmt"),
    [
        ("I;16", "PNG"),
        ("I", "TIFF"),
        ("F", "TIFF"),
        ("CMYK", "TIFF"),
        ("LA", "PNG"),
        ("1", "PNG"),
        ("RGB", "BMP"),
    ],
)
def test_unusual_modes_convert_to_every_format(
    mode: str, source_fmt: str, output_format: str
) -> None:
    out = io.BytesIO()
    Image.new(mode, (9, 7)).save(out, source_fmt)
    data, content_type = convert_image(out.getvalue(), "image/tiff", output_format)
    assert content_type == OUTPUT_FORMATS[output_format]
    image = opened(data)
    assert image.format == output_format.upper()
    assert image.size == (9, 7)
