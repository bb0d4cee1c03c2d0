"""The API reference: Swagger UI at /docs, inside the site's own layout.

It works offline: Swagger UI's script and style come from the `fastapi-offline` package (from
PyPI, pinned like every dependency) and are served by us under `ASSETS_PATH`; the page asks
nothing of any third party (Swagger UI's online validator is turned off in api-docs.js).
ReDoc is not offered: its bundle loads its logo from its vendor's CDN.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.staticfiles import StaticFiles

from image_router.api.identity import SessionDep
from image_router.web.common import render

ASSETS_PATH = "/docs/assets"
#: Swagger UI's bundle (and others we do not use); the app mounts this at ASSETS_PATH.
ASSETS = StaticFiles(directory=str(files("fastapi_offline") / "static"))

router = APIRouter(include_in_schema=False)


@router.get("/docs")
async def swagger_ui(request: Request, session: SessionDep) -> Response:
    return render(request, "api_docs.html", session, assets=ASSETS_PATH)
