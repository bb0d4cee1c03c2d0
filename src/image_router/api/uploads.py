"""Reading a generation request body: JSON, multipart or urlencoded.

Multipart uploads follow the reference's multer limits and messages (spec §2.4): image
fields `image`, `image[]` (and `image[0]`… as some clients send them) up to 16 files, mask
fields `mask`, `mask[]` one file, 25 MB per file; anything else is `Unexpected field`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

from image_router.errors import InvalidRequest, PayloadTooLarge, UploadError
from image_router.providers.contract import InputFile

MAX_FILE_BYTES = 25 * 1024 * 1024
MAX_JSON_BYTES = 100 * 1024
_INDEXED = re.compile(r"^(image|mask)\[(\d{1,2})\]$")


@dataclass(frozen=True)
class UploadLimits:
    max_images: int
    allow_mask: bool


IMAGE_LIMITS = UploadLimits(max_images=16, allow_mask=True)
VIDEO_LIMITS = UploadLimits(max_images=6, allow_mask=False)


@dataclass(frozen=True)
class Body:
    fields: Mapping[str, Any]
    images: tuple[InputFile, ...] = ()
    mask: InputFile | None = None


async def read_body(request: Request, limits: UploadLimits) -> Body:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _read_multipart(request, limits)
    if content_type == "application/x-www-form-urlencoded":
        form = await request.form()
        return Body(fields={k: v for k, v in form.items() if isinstance(v, str)})
    if content_type == "application/json" or content_type.endswith("+json"):
        return Body(fields=await _read_json(request))
    # The reference parses nothing else, so such a body reaches validation as `{}`.
    return Body(fields={})


async def _read_json(request: Request) -> dict[str, Any]:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise PayloadTooLarge(
                "JSON request bodies are limited to 100 kB; send images as multipart/form-data"
            )
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("The request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(value, dict):
        kind = "array" if isinstance(value, list) else type(value).__name__
        raise InvalidRequest(f"Expected object, received {kind}", code="invalid_json")
    return value


async def _read_multipart(request: Request, limits: UploadLimits) -> Body:
    try:
        form = await request.form(max_files=64, max_fields=1000)
    except MultiPartException as exc:
        raise UploadError(f"File upload error: {exc.message}") from exc
    except ClientDisconnect:
        raise
    fields: dict[str, Any] = {}
    files: dict[str, list[UploadFile]] = {}
    indexed: dict[int, UploadFile] = {}
    for name, value in form.multi_items():
        if isinstance(value, str):
            fields.setdefault(name, value)
            continue
        match = _INDEXED.match(name)
        if match and match.group(1) == "image" and int(match.group(2)) < limits.max_images:
            indexed[int(match.group(2))] = value
            continue
        if name in ("image", "image[]") or (limits.allow_mask and name in ("mask", "mask[]")):
            files.setdefault(name, []).append(value)
            continue
        raise UploadError("File upload error: Unexpected field")
    for name, uploads in files.items():
        if len(uploads) > (limits.max_images if name.startswith("image") else 1):
            raise UploadError("File upload error: Unexpected field")
    all_uploads = [u for group in files.values() for u in group] + list(indexed.values())
    if any((u.size or 0) > MAX_FILE_BYTES for u in all_uploads):
        raise UploadError("File upload error: File too large")

    # `image` wins over `image[]` (the reference ignores `image[]` then), then `image[N]`.
    chosen = files.get("image") or files.get("image[]") or [indexed[i] for i in sorted(indexed)]
    if len(chosen) > limits.max_images:
        raise UploadError("File upload error: Unexpected field")
    masks = files.get("mask") or files.get("mask[]") or []
    images = tuple([await _input_file(u) for u in chosen])
    mask = await _input_file(masks[0]) if masks else None
    await form.close()
    return Body(fields=fields, images=images, mask=mask)


async def _input_file(upload: UploadFile) -> InputFile:
    data = await upload.read()
    return InputFile(
        data=data,
        content_type=upload.content_type or "application/octet-stream",
        filename=upload.filename or "upload",
    )
