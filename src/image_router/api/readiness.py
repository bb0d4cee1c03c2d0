"""`GET /ready`: whether this process can serve requests now (a load balancer's check).

`/health` says the process is up (liveness); `/ready` says whether it should be sent work:
the database answers a trivial query, the output storage can be written (a local directory
is writable; an S3 bucket answers HEAD), and the process is not draining. Each check has
READY_TIMEOUT_S. Redis, when configured, is checked and reported but does not make the
process unready: without it the gateway falls back to per-process rate limits and route
health, and taking every instance out of the balancer because Redis restarts would turn a
degraded service into none.

Neither authenticated nor rate-limited (`limits/asgi.py`): a balancer polls it every few
seconds. The answer names what failed, never an address or a credential (those go to the
log).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter

from image_router.api.deps import ResourcesDep
from image_router.api.responses import json_response
from image_router.db.outage import ping
from image_router.resources import Resources

log = logging.getLogger(__name__)
router = APIRouter()

_CHECK = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "ms": {"type": "number", "description": "How long the check took"},
        "error": {"type": "string", "description": "What failed (no addresses)"},
    },
    "required": ["ok"],
}
_BODY = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ready", "unavailable", "draining"]},
        "checks": {
            "type": "object",
            "properties": {"database": _CHECK, "storage": _CHECK, "redis": _CHECK},
            "required": ["database", "storage"],
        },
    },
    "required": ["status", "checks"],
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Ready: the database and the storage answer",
        "content": {"application/json": {"schema": _BODY}},
    },
    503: {
        "description": "Not ready: a check failed (named in `checks`), or the server is "
        "draining (shutting down)",
        "content": {"application/json": {"schema": _BODY}},
    },
}


@router.get("/ready", responses=_RESPONSES, response_model=None, tags=["Service"])
async def ready(res: ResourcesDep) -> Any:
    """Readiness: 200 when this process can serve, 503 (with the failed check) when it
    cannot or is shutting down."""
    timeout = res.settings.serving.ready_timeout_s
    probes: dict[str, Callable[[], Awaitable[None]]] = {
        "database": lambda: ping(res.engine),
        "storage": res.store.check,
    }
    if res.redis is not None:
        probes["redis"] = lambda: _redis(res)
    results = await asyncio.gather(
        *(_check(name, probe, timeout) for name, probe in probes.items())
    )
    checks = dict(zip(probes, results, strict=True))
    failed = [name for name in ("database", "storage") if not checks[name]["ok"]]
    if res.drain.draining:
        status = "draining"
    elif failed:
        status = "unavailable"
    else:
        status = "ready"
    return json_response(
        {"status": status, "checks": checks},
        200 if status == "ready" else 503,
        {"Cache-Control": "no-store"},
    )


async def _redis(res: Resources) -> None:
    assert res.redis is not None
    try:
        await res.redis.ping()
    except Exception as exc:
        if res.redis_link is not None:
            res.redis_link.failed(exc)
        raise
    if res.redis_link is not None:
        res.redis_link.worked()  # back sooner than the next request would notice


async def _check(
    name: str, probe: Callable[[], Awaitable[None]], timeout_s: float
) -> dict[str, Any]:
    started = time.monotonic()
    try:
        await asyncio.wait_for(probe(), timeout=timeout_s)
    except TimeoutError:
        log.debug("readiness: %s did not answer within %.1f s", name, timeout_s)
        return {"ok": False, "error": f"no answer within {timeout_s:g} s"}
    except Exception as exc:
        log.debug("readiness: %s failed: %s", name, exc)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "ms": round((time.monotonic() - started) * 1000, 1)}
