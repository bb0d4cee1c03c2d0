"""The operator area's read-only pages: usage across accounts, provider health, catalog status.

Guarded like every page of `/admin` (`admin.AdminDep`). Provider health is the data of
`GET /v1/providers/status` (the configured vendors, and each route's learned latency, error
rate and circuit state, shared through Redis when configured); the catalog status is
`image-router catalog check` (every model enabled or not, and why, from the vendors'
configuration).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from image_router.api.deps import ResourcesDep
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.resources import Resources
from image_router.usage.overview import daily_usage
from image_router.web.admin import ADMIN, AdminDep
from image_router.web.charts import bar_chart
from image_router.web.common import render

router = APIRouter(include_in_schema=False)

USAGE_DAYS = 30
UNKNOWN_PROVIDER = "unknown provider (not implemented)"
STATE_WORDS = {"closed": "healthy", "half_open": "probing", "open": "open (skipped)"}
STATE_BADGES = {"closed": "ok", "half_open": "warn", "open": "bad"}


@dataclass
class DayTotal:
    day: str
    requests: int = 0
    errors: int = 0
    spend: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


@router.get(f"{ADMIN}/usage")
async def usage_page(request: Request, res: ResourcesDep, session: AdminDep) -> Response:
    """Requests, errors and spend per UTC day, model and vendor over the last 30 days."""
    since = (utcnow() - timedelta(days=USAGE_DAYS - 1)).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    async with unit_of_work(res.engine) as conn:
        found = await daily_usage(conn, since)
    days: dict[str, DayTotal] = {}
    totals = DayTotal("all")
    for row in found:
        day = days.setdefault(row.day, DayTotal(row.day))
        for total in (day, totals):
            total.requests += row.requests
            total.errors += row.errors
            total.spend += row.spend
        day.rows.append(
            {
                "model": row.model,
                "provider": row.provider or "—",
                "requests": row.requests,
                "errors": row.errors,
                "spend": f"${format_usd(row.spend)}",
            }
        )
    every_day = [(since + timedelta(days=i)).date().isoformat() for i in range(USAGE_DAYS)]
    points = [
        (d, days[d].spend if d in days else 0, f"{days[d].requests if d in days else 0} requests")
        for d in every_day
    ]
    return render(
        request,
        "admin_usage.html",
        session,
        days=list(days.values()),
        totals=totals,
        since=since.date().isoformat(),
        usd=lambda credits: f"${format_usd(credits)}",
        usage_days=USAGE_DAYS,
        chart=bar_chart(f"Credits charged per day, last {USAGE_DAYS} days", points),
        chart_rows=[(d, f"${format_usd(c)}", words.split()[0]) for d, c, words in points],
    )


@router.get(f"{ADMIN}/providers")
async def providers_page(request: Request, res: ResourcesDep, session: AdminDep) -> Response:
    snapshot = await res.health.snapshot()
    vendors = [{"id": pid, "enabled": True, "reason": ""} for pid in sorted(res.providers)] + [
        {"id": pid, "enabled": False, "reason": why} for pid, why in sorted(res.disabled.items())
    ]
    routes = [
        {
            "key": key,
            "state": STATE_WORDS.get(h.state, h.state),
            "badge": STATE_BADGES.get(h.state, "warn"),
            "error_rate": f"{h.error_rate:.0%}",
            "latency": "—" if h.latency_s is None else f"{round(h.latency_s * 1000)} ms",
            "failures": h.consecutive_failures,
            "samples": h.samples,
        }
        for key, h in sorted(snapshot.items())
    ]
    return render(
        request,
        "admin_providers.html",
        session,
        vendors=vendors,
        routes=routes,
        policy=res.health.policy,
        shared=res.settings.storage.redis_url is not None,
    )


def _route_problem(res: Resources, provider: str) -> str | None:
    if provider in res.providers:
        return None
    return res.disabled.get(provider, UNKNOWN_PROVIDER)


@router.get(f"{ADMIN}/catalog")
async def catalog_page(
    request: Request, res: ResourcesDep, session: AdminDep, show: str = "all"
) -> Response:
    """Every model, enabled when one of its routes has a configured vendor, else why not."""
    models = []
    blocked_by: dict[str, int] = defaultdict(int)
    for spec in res.catalog.models.values():
        routes = [
            {
                "provider": r.provider,
                "upstream": r.upstream,
                "problem": _route_problem(res, r.provider),
            }
            for r in spec.routes
        ]
        enabled = any(r["problem"] is None for r in routes)
        if not enabled:
            for provider in {r.provider for r in spec.routes}:
                blocked_by[provider] += 1
        models.append({"id": spec.id, "type": spec.modality, "enabled": enabled, "routes": routes})
    enabled_count = sum(1 for m in models if m["enabled"])
    if show in ("enabled", "disabled"):
        models = [m for m in models if m["enabled"] == (show == "enabled")]
    else:
        show = "all"
    reasons = [
        {"provider": pid, "reason": _route_problem(res, pid), "models": count}
        for pid, count in sorted(blocked_by.items(), key=lambda item: (-item[1], item[0]))
    ]
    return render(
        request,
        "admin_catalog.html",
        session,
        models=models,
        show=show,
        enabled_count=enabled_count,
        total=len(res.catalog.models),
        reasons=reasons,
    )
