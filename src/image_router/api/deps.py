"""The collaborators of a request: this process's resources, and the client's address.

Who is calling is `identity.py`; the generation gates are `gates.py`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from image_router.resources import Resources


async def get_resources(request: Request) -> Resources:
    # async on purpose: FastAPI runs a sync dependency in a worker thread, and that hop on
    # every request made the event loop queue for the GIL (throughput fell to a fifth).
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def client_ip(request: Request) -> str | None:
    """The client's address under TRUSTED_PROXY_COUNT / CLIENT_IP_HEADER (spec §1.1)."""
    resources: Resources = request.app.state.resources
    return resources.limits.client_ip(request.scope)
