"""The webhooks page (`/account/webhooks`): the account's endpoints, the delivery log with a
"Resend" button, the request secret, and a banner for each endpoint disabled after failing.

Every change is a POST carrying the session's CSRF token; an endpoint or a delivery of
another account is answered 404, like one that does not exist. A new endpoint's signing
secret is only in the answer to the POST that created it (`Cache-Control: no-store`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from image_router.account.sessions import SessionView
from image_router.api.deps import ResourcesDep
from image_router.errors import Conflict, InvalidRequest, NotFound
from image_router.resources import Resources
from image_router.web.common import SignedInDep, SignedInFormDep, field, redirect, render
from image_router.webhooks.endpoints import DeliveryView, EndpointView

router = APIRouter(include_in_schema=False)

WEBHOOKS_URL = "/account/webhooks"
LOG_ROWS = 50
DONE = {
    "deleted": "The endpoint has been deleted: nothing more is sent to it.",
    "enabled": "The endpoint has been enabled: events are sent to it again.",
    "resent": "The delivery will be sent again within a few seconds.",
}


@dataclass(frozen=True)
class EndpointRow:
    id: str
    url: str
    description: str
    status: str  # active | failing | disabled
    created: str
    failing_since: str
    disabled_at: str
    disabled_reason: str


@dataclass(frozen=True)
class DeliveryRow:
    id: str
    created: str
    event_type: str
    url: str
    target: str  # the endpoint's description or "this request's webhook_url"
    status: str
    attempts: int
    response: str
    next_try: str
    error: str
    can_resend: bool


def when(moment: datetime | None, never: str = "—") -> str:
    return never if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def endpoint_row(endpoint: EndpointView) -> EndpointRow:
    status = "disabled" if endpoint.disabled else "failing" if endpoint.failing_since else "active"
    return EndpointRow(
        id=endpoint.id,
        url=endpoint.url,
        description=endpoint.description or "",
        status=status,
        created=when(endpoint.created_at),
        failing_since=when(endpoint.failing_since),
        disabled_at=when(endpoint.disabled_at),
        disabled_reason=endpoint.disabled_reason or "",
    )


def delivery_row(delivery: DeliveryView, names: dict[str, str]) -> DeliveryRow:
    if delivery.endpoint_id is None:
        target = "the request's webhook_url"
    else:
        target = names.get(delivery.endpoint_id, "endpoint")
    return DeliveryRow(
        id=delivery.id,
        created=when(delivery.created_at),
        event_type=delivery.event_type,
        url=delivery.url,
        target=target,
        status=delivery.status,
        attempts=delivery.attempts,
        response=str(delivery.response_status) if delivery.response_status else "—",
        next_try=when(delivery.next_attempt_at) if delivery.status == "pending" else "—",
        error=delivery.last_error or "",
        can_resend=delivery.status != "pending",
    )


async def _page(
    request: Request, res: Resources, session: SessionView, *, status: int = 200, **context: Any
) -> Response:
    account_id = session.account_id
    endpoints = await res.webhooks.endpoints(account_id)
    deliveries = await res.webhooks.deliveries(account_id, limit=LOG_ROWS)
    names = {e.id: e.description or e.url for e in endpoints}
    return render(
        request,
        "webhooks.html",
        session,
        status=status,
        endpoints=[endpoint_row(e) for e in endpoints],
        disabled=[endpoint_row(e) for e in endpoints if e.disabled],
        deliveries=[delivery_row(d, names) for d in deliveries],
        request_secret=await res.webhooks.request_secret(account_id),
        disable_after_days=f"{res.settings.webhooks.webhook_disable_after_days:g}",
        retry_hours=f"{res.settings.webhooks.webhook_retry_hours:g}",
        **context,
    )


def _not_found(request: Request, session: SessionView, error: NotFound) -> Response:
    return render(request, "error.html", session, status=404, message=error.message)


@router.get(WEBHOOKS_URL)
async def webhooks_page(
    request: Request, res: ResourcesDep, session: SignedInDep, done: str = ""
) -> Response:
    return await _page(request, res, session, notice=DONE.get(done))


@router.post(WEBHOOKS_URL)
async def create(request: Request, res: ResourcesDep, signed: SignedInFormDep) -> Response:
    """Register an endpoint and show its signing secret, this once."""
    session, form = signed
    try:
        endpoint, secret = await res.webhooks.register(
            session.account_id, field(form, "url"), field(form, "description")
        )
    except InvalidRequest as exc:
        entered = {"url": field(form, "url"), "description": field(form, "description")}
        return await _page(request, res, session, status=400, error=exc.message, entered=entered)
    return render(
        request,
        "webhook_created.html",
        session,
        status=201,
        endpoint=endpoint_row(endpoint),
        secret=secret,
    )


@router.post(WEBHOOKS_URL + "/{endpoint_id}/delete")
async def delete(
    request: Request, endpoint_id: str, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    session, _ = signed
    try:
        await res.webhooks.delete(session.account_id, endpoint_id)
    except NotFound as exc:
        return _not_found(request, session, exc)
    return redirect(request, f"{WEBHOOKS_URL}?done=deleted")


@router.post(WEBHOOKS_URL + "/{endpoint_id}/enable")
async def enable(
    request: Request, endpoint_id: str, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    session, _ = signed
    try:
        await res.webhooks.enable(session.account_id, endpoint_id)
    except NotFound as exc:
        return _not_found(request, session, exc)
    return redirect(request, f"{WEBHOOKS_URL}?done=enabled")


@router.post(WEBHOOKS_URL + "/deliveries/{delivery_id}/resend")
async def resend(
    request: Request, delivery_id: str, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    session, _ = signed
    try:
        await res.webhooks.resend(session.account_id, delivery_id)
    except NotFound as exc:
        return _not_found(request, session, exc)
    except Conflict as exc:
        return await _page(request, res, session, status=409, error=exc.message)
    return redirect(request, f"{WEBHOOKS_URL}?done=resent")
