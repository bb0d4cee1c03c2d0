"""The data export over HTTP (privacy-payments.md DSR-1, §4.2).

    GET  /v1/account/export                   the ZIP now, or 202 + an archive when large
    POST /v1/account/exports                  always an archive, built in the background
    GET  /v1/account/exports/{id}             the archive's status
    GET  /v1/account/exports/{id}/download    the ZIP while not expired (410 afterwards)

Starting an export is a step-up action (CLK-8): it needs a website sign-in within
REVERIFY_MAX_MINUTES, so an API key cannot export; a stolen key must not be able to take
away the account's history. Status and download accept any credential of the account,
including its API keys (the download was started by a fresh sign-in). Another account's
archive id answers 404, as a missing one does.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import IO

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from image_router.api.deps import ResourcesDep
from image_router.api.identity import Identity, IdentityDep, require_recent_sign_in
from image_router.api.responses import json_response
from image_router.db.session import autocommit, unit_of_work
from image_router.errors import Conflict, GatewayError, NotFound
from image_router.kit.clock import utcnow
from image_router.observability.logging import request_id
from image_router.privacy import export
from image_router.resources import Resources

router = APIRouter(tags=["Account"])
_CHUNK = 256 * 1024


class ExportExpired(GatewayError):
    status = 410
    error_type = "invalid_request_error"
    code = "export_expired"


class ExportNotReady(Conflict):
    code = "export_not_ready"


def _actor(principal: Identity) -> export.ExportActor:
    return export.ExportActor(
        actor_type="user", actor_id=principal.account_id, request_id=request_id.get()
    )


def _archive_body(view: export.ArchiveView) -> dict[str, object]:
    base = f"/v1/account/exports/{view.id}"
    return {
        "id": view.id,
        "object": "account.export",
        "status": view.status,
        "created_at": view.created_at,
        "ready_at": view.ready_at,
        "expires_at": view.expires_at,
        "downloaded_at": view.downloaded_at,
        "size_bytes": view.size_bytes,
        "sha256": view.sha256,
        "status_url": base,
        "download_url": f"{base}/download" if view.status == export.READY else None,
    }


async def _start_archive(res: Resources, principal: Identity) -> Response:
    async with unit_of_work(res.engine) as conn:
        view = await export.request_archive(conn, principal.account_id, _actor(principal), utcnow())
    return json_response(_archive_body(view), status=202)


EXPORT_STARTED_PAGE = "/account/privacy?done=export_started#data"


def _browser_navigation(request: Request) -> bool:
    """A page load (link click) rather than an API call: such a client cannot read a 202."""
    if request.headers.get("sec-fetch-mode") == "navigate":
        return True
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


@router.get("/v1/account/export")
async def export_now(request: Request, principal: IdentityDep, res: ResourcesDep) -> Response:
    """The account's data as a ZIP; 202 with an archive to poll when it is too large."""
    require_recent_sign_in(principal, res)
    now = utcnow()
    if await res.export.too_large_to_wait_for(principal.account_id, now):
        started = await _start_archive(res, principal)
        if _browser_navigation(request):
            # "Download my data" clicked on the settings page: back there, where the
            # archive is listed until it is ready to download.
            return RedirectResponse(EXPORT_STARTED_PAGE, status_code=303)
        return started
    built = await res.export.build_file(principal.account_id, now)
    # Opened, then unlinked at once: the file disappears however the download ends.
    stream = await asyncio.to_thread(built.path.open, "rb")
    await asyncio.to_thread(os.unlink, built.path)
    try:
        async with unit_of_work(res.engine) as conn:
            await export.record_self_service(conn, principal.account_id, _actor(principal), now)
    except BaseException:
        stream.close()
        raise
    return StreamingResponse(
        _chunks(stream),
        media_type="application/zip",
        headers={
            "content-disposition": _attachment(now.strftime("%Y%m%d")),
            "content-length": str(built.size),
            "cache-control": "no-store",
        },
    )


async def _chunks(stream: IO[bytes]) -> AsyncIterator[bytes]:
    try:
        while chunk := await asyncio.to_thread(stream.read, _CHUNK):
            yield chunk
    finally:
        stream.close()


def _attachment(stamp: str) -> str:
    return f'attachment; filename="image-router-export-{stamp}.zip"'


@router.post("/v1/account/exports")
async def create_export(principal: IdentityDep, res: ResourcesDep) -> Response:
    """Start a background export (one pending at a time: asking again returns it)."""
    require_recent_sign_in(principal, res)
    return await _start_archive(res, principal)


@router.get("/v1/account/exports/{archive_id}")
async def export_status(archive_id: str, principal: IdentityDep, res: ResourcesDep) -> Response:
    async with autocommit(res.engine) as conn:
        try:
            view = await export.get_archive(conn, principal.account_id, archive_id)
        except export.ArchiveNotFound:
            raise NotFound("No such export") from None
    return json_response(_archive_body(view))


@router.get("/v1/account/exports/{archive_id}/download")
async def export_download(archive_id: str, principal: IdentityDep, res: ResourcesDep) -> Response:
    try:
        view, data = await res.export.read_archive(principal.account_id, archive_id, utcnow())
    except export.ArchiveNotFound:
        raise NotFound("No such export") from None
    except export.ArchiveNotReady:
        raise ExportNotReady("The export is still being prepared; try again shortly") from None
    except export.ArchiveGone:
        raise ExportExpired("This export has expired; request a new one") from None
    assert view.ready_at is not None
    return Response(
        data,
        media_type="application/zip",
        headers={
            "content-disposition": _attachment(view.ready_at.strftime("%Y%m%d")),
            "cache-control": "no-store",
        },
    )
