"""`GET /files/{name}`: serves outputs kept by the local store.

Names are random UUIDs, so a URL is a capability: whoever has it can fetch the file, and
nobody can list or guess others (the same model as the reference's public bucket).
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from image_router.api.deps import ResourcesDep
from image_router.errors import NotFound
from image_router.privacy.export import EXPORT_PREFIX
from image_router.storage.base import StorageError

router = APIRouter()


@router.get("/files/{name}", include_in_schema=False)
async def get_file(name: str, res: ResourcesDep) -> Response:
    if name.startswith(EXPORT_PREFIX):
        # Data exports share the store but are personal: only their owner downloads them,
        # through /v1/account/exports/{id}/download, and only until they expire.
        raise NotFound("No such file")
    try:
        found = await res.store.get(name)
    except StorageError as exc:
        raise NotFound("No such file") from exc
    if found is None:
        raise NotFound("No such file")
    data, content_type = found
    return Response(
        data,
        media_type=content_type,
        headers={
            "cache-control": "public, max-age=31536000, immutable",
            "cross-origin-resource-policy": "cross-origin",
            # Outputs are vendor bytes served from our origin: an SVG may carry script, so
            # a file opened directly runs nothing (nosniff is set for every response).
            "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
        },
    )
