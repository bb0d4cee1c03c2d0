"""`POST /v1/auth/test` and `GET /v1/credits` (spec §4, §8.6)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account import spend_limits
from image_router.api.deps import ResourcesDep
from image_router.api.identity import CallerDep
from image_router.api.responses import json_response
from image_router.db.outage import is_outage
from image_router.db.session import autocommit, unit_of_work
from image_router.errors import InternalError
from image_router.kit.clock import iso, utcnow
from image_router.kit.money import format_usd
from image_router.ledger import service as ledger
from image_router.usage import service as usage

router = APIRouter()


@router.post("/v1/auth/test")
async def auth_test(caller: CallerDep, res: ResourcesDep) -> Response:
    # Raw integer credits ($0.0001 units), as the reference answers. Read afresh: the
    # caller's own balance may be a few seconds old (api/identity.py caches keys).
    try:
        async with autocommit(res.engine) as conn:
            balance = await ledger.balance(conn, caller.account_id)
    except SQLAlchemyError as exc:
        if is_outage(exc):
            raise  # the app answers 503 database_unavailable (app.py `_database_outage`)
        raise InternalError("Error validating API key") from exc
    return json_response({"success": True, "credits": balance})


@router.get("/v1/credits")
async def credits(request: Request, caller: CallerDep, res: ResourcesDep) -> Response:
    try:
        async with unit_of_work(res.engine) as conn:
            remaining = await ledger.balance(conn, caller.account_id)
            deposits = await ledger.deposits(conn, caller.account_id)
            by_key = (
                await usage.usage_by_key(conn, caller.account_id)
                if request.query_params.get("by_api_key") == "true"
                else None
            )
            windows = await _limit_windows(conn, by_key or [])
    except SQLAlchemyError as exc:
        if is_outage(exc):
            raise  # the app answers 503 database_unavailable (app.py `_database_outage`)
        raise InternalError("Failed to fetch credit information") from exc
    body: dict[str, Any] = {
        "remaining_credits": format_usd(remaining),
        "credit_usage": format_usd(deposits - remaining),
        "total_deposits": format_usd(deposits),
    }
    if by_key is not None:
        body["usage_by_api_key"] = [_key_usage(k, windows) for k in by_key]
    return json_response(body)


async def _limit_windows(
    conn: AsyncConnection, keys: list[usage.KeyUsage]
) -> dict[str, tuple[int, datetime | None]]:
    """(spend in the current window, its start) of each listed key that has a spend limit."""
    now = utcnow()
    return {
        k.api_key_id: await spend_limits.period_spend(conn, k.api_key_id, k.spend_limit_period, now)
        for k in keys
        if k.api_key_id is not None and k.spend_limit is not None
    }


def _key_usage(
    k: usage.KeyUsage, windows: dict[str, tuple[int, datetime | None]]
) -> dict[str, Any]:
    if k.api_key_id is not None:
        key_id, name = k.api_key_id, k.key_name or "Deleted Key"
    elif k.via_web_token:
        key_id, name = "temp_jwt", "Temporary web token (imagerouter.io)"
    else:
        key_id, name = "unknown", "Unknown Key"
    window = windows.get(k.api_key_id) if k.api_key_id else None
    return {
        "api_key_id": key_id,
        "api_key_name": name,
        "credit_usage": format_usd(k.cost),
        "total_requests": k.requests,
        "created_at": iso(k.key_created_at),
        "is_active": True if k.key_active is None else k.key_active,
        "spend_limit": None if k.spend_limit is None else format_usd(k.spend_limit),
        "spend_limit_period": k.spend_limit_period,
        "period_spend": format_usd(window[0]) if window else None,
        "period_start": iso(window[1]) if window else None,
        "expires_at": iso(k.expires_at),
    }
