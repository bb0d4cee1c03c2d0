"""What kind of media some bytes are, what to call them, and changing raster formats.

Pure functions: no I/O, no event loop. `convert_image` is CPU-bound, so async callers
should run it with `asyncio.to_thread`.
"""

from __future__ import annotations

import binascii
import io
import re

import pybase64
from PIL import Image, ImageOps

EXTENSIONS: dict[str, str] = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/webp": ".webp",
    "image/gif": ".gif",
    "image/svg+xml": ".svg",
    "image/tiff": ".tiff",
    "video/mp4": ".mp4",
    "video/webm": ".webm",
    "video/quicktime": ".mov",
}

# Spellings we read but never write: stored names always use the EXTENSIONS form.
_EXTENSION_ALIASES = {".jpeg": "image/jpeg", ".tif": "image/tiff"}
_TYPE_BY_EXTENSION = {ext: ctype for ctype, ext in EXTENSIONS.items()} | _EXTENSION_ALIASES

OUTPUT_FORMATS: dict[str, str] = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
}

# ISO-BMFF (the `ftyp` box) also carries still images; calling an AVIF "video/mp4" would
# give it a playable-video extension and a player that cannot show it.
_STILL_IMAGE_BRANDS = {
    b"avif": "image/avif",
    b"avis": "image/avif",
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"mif1": "image/heif",
    b"msf1": "image/heif",
}

# Only decoders we trust with untrusted bytes: Pillow's EPS plugin runs Ghostscript.
_RASTER_DECODERS = ("PNG", "JPEG", "WEBP", "GIF", "TIFF", "BMP")

_JPEG_QUALITY = 92
_WEBP_QUALITY = 90
# Modes every supported Pillow (>=10.3) writes as PNG; "I" stopped being one in 13.
_PNG_MODES = {"1", "L", "LA", "I;16", "P", "RGB", "RGBA"}


def sniff_content_type(data: bytes) -> str | None:
    """The media type announced by the first bytes of `data`, or None if unknown."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand == b"qt  ":
            return "video/quicktime"
        return _STILL_IMAGE_BRANDS.get(brand, "video/mp4")
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    if _looks_like_svg(data):
        return "image/svg+xml"
    return None


def _looks_like_svg(data: bytes) -> bool:
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg"):
        return True
    # An XML declaration, doctype or comment may precede the root element.
    return head.startswith((b"<?xml", b"<!")) and b"<svg" in head


def _bare_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def extension_for(content_type: str) -> str:
    """The file extension (with dot) for `content_type`; '' when it has none (§11.2)."""
    return EXTENSIONS.get(_bare_type(content_type), "")


def content_type_for_extension(name: str) -> str | None:
    """The media type implied by the extension of file name `name`, or None."""
    dot = name.rfind(".")
    if dot < 0:
        return None
    return _TYPE_BY_EXTENSION.get(name[dot:].lower())


_DATA_URI = re.compile(r"data:(?P<type>[^;,]*)(?P<params>(?:;[^;,]*)*),", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def decode_base64(text: str) -> tuple[bytes, str | None]:
    """Decode plain, URL-safe or `data:<type>;base64,` text; return any declared type.

    Missing padding is tolerated because several providers strip it.
    """
    payload = text.strip()
    declared: str | None = None
    match = _DATA_URI.match(payload)
    if match is not None:
        params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
        if "base64" not in params:
            raise ValueError("Invalid base64 data: data URI is not base64-encoded")
        declared = match["type"].strip().lower() or None
        payload = payload[match.end() :]
    payload = _WHITESPACE.sub("", payload).rstrip("=")
    if not payload:
        raise ValueError("Invalid base64 data: empty content")
    if len(payload) % 4 == 1:
        raise ValueError("Invalid base64 data: truncated content")
    payload = payload.replace("-", "+").replace("_", "/") + "=" * (-len(payload) % 4)
    try:
        decoded = pybase64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"Invalid base64 data: {exc}") from exc
    return decoded, declared


def convert_image(data: bytes, content_type: str, output_format: str | None) -> tuple[bytes, str]:
    """Re-encode a raster image as `output_format` ('png', 'jpeg' or 'webp').

    Returns the bytes and their content type. Nothing is re-encoded when no format is
    asked for, when the bytes already are that format, or when they are a vector or a
    video.
    Raises ValueError for an unknown format or bytes Pillow cannot decode safely.
    """
    if output_format is None:
        return data, content_type
    fmt = output_format.strip().lower()
    fmt = "jpeg" if fmt == "jpg" else fmt
    target = OUTPUT_FORMATS.get(fmt)
    if target is None:
        raise ValueError(
            f"Unsupported output_format '{output_format}'; expected one of "
            + ", ".join(OUTPUT_FORMATS)
        )
    # The bytes, not the label, decide: providers sometimes mislabel what they send.
    actual = sniff_content_type(data) or _bare_type(content_type)
    if actual == target:
        return data, target
    if actual == "image/svg+xml" or actual.startswith("video/"):
        return data, content_type
    image = _open_raster(data)
    try:
        return _encode(image, fmt), target
    finally:
        image.close()


def _open_raster(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=_RASTER_DECODERS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning is raised here only when warnings are errors (as in the tests).
        raise ValueError(f"Image too large to convert: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ValueError(f"Could not decode image: {exc}") from exc
    # Pillow only warns between 1x and 2x MAX_IMAGE_PIXELS and a warning is no refusal,
    # so enforce the limit here (filtering warnings is not thread-safe before 3.14).
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and image.width * image.height > limit:
        pixels = image.width * image.height
        image.close()
        raise ValueError(f"Image too large to convert: {pixels} pixels exceeds limit of {limit}")
    try:
        image.load()
        # Re-encoding drops EXIF, so bake the orientation into the pixels first.
        ImageOps.exif_transpose(image, in_place=True)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        image.close()
        raise ValueError(f"Could not decode image: {exc}") from exc
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _encode(image: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    if fmt == "jpeg":
        if _has_alpha(image):
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            image = flat
        elif image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        image.save(out, "JPEG", quality=_JPEG_QUALITY)
    elif fmt == "webp":
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if _has_alpha(image) else "RGB")
        image.save(out, "WEBP", quality=_WEBP_QUALITY)
    else:
        if image.mode not in _PNG_MODES:
            image = image.convert("RGBA" if _has_alpha(image) else "RGB")
        # optimize=True costs several times the encode for a few percent of size.
        image.save(out, "PNG", optimize=False)
    return out.getvalue()
