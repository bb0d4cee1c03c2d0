"""Billing over HTTP: top-up checkout, the deposits history and the Stripe webhook.

The billing routes authenticate with an API key for now; the website's session sign-in will
call the same use cases. With `PAYMENTS_PROVIDER=none` checkout and the webhook answer 404
`payments_disabled` (the operator grants credits with the CLI); the history still answers.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from image_router.account.service import Caller
from image_router.api.bodies import read_limited
from image_router.api.deps import ResourcesDep
from image_router.api.idempotency import idempotently
from image_router.api.identity import CallerDep
from image_router.api.responses import json_response
from image_router.db.session import unit_of_work
from image_router.errors import InvalidRequest, NotFound
from image_router.kit.clock import iso
from image_router.payment import topups, webhooks
from image_router.payment.amounts import format_cents
from image_router.payment.charges import WebhookPolicy
from image_router.payment.stripe_api import InvalidSignature
from image_router.resources import Resources

router = APIRouter(tags=["billing"])

_MAX_CHECKOUT_BODY = 4 * 1024
# Stripe's events are a few kilobytes; anything near this is not one of them.
_MAX_WEBHOOK_BODY = 1024 * 1024

_CHECKOUT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["amount_usd"],
                "properties": {
                    "amount_usd": {
                        "type": "string",
                        "example": "10.00",
                        "description": "USD to add, in whole cents, within the configured "
                        "bounds (TOPUP_MIN_CENTS, TOPUP_MAX_CENTS)",
                    }
                },
            }
        }
    },
}


def _payments(res: Resources) -> topups.Payments:
    if res.payments is None:
        raise topups.PaymentsDisabled(topups.DISABLED_MESSAGE)
    return res.payments


@router.post("/v1/billing/checkout", openapi_extra={"requestBody": _CHECKOUT_BODY})
async def checkout(request: Request, caller: CallerDep, res: ResourcesDep) -> Response:
    """Start a Stripe Checkout for a top-up; answers the URL to send the person to."""
    payments = _payments(res)
    return await idempotently(
        request, res, caller.account_id, _checkout_amount, partial(_checkout, res, payments, caller)
    )


async def _checkout_amount(request: Request) -> object:
    body = await read_limited(request, _MAX_CHECKOUT_BODY)
    try:
        fields = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest('The body must be JSON such as {"amount_usd": "10.00"}') from None
    if not isinstance(fields, dict) or "amount_usd" not in fields:
        raise InvalidRequest("amount_usd is required", param="amount_usd")
    return fields["amount_usd"]


async def _checkout(
    res: Resources, payments: topups.Payments, caller: Caller, amount_usd: object
) -> Response:
    started = await topups.start_checkout(res.engine, payments, caller.account_id, amount_usd)
    return json_response(
        {
            "id": started.topup.id,
            "url": started.url,
            "amount_usd": format_cents(started.topup.amount_cents),
            "credits": started.topup.credits,
            "currency": started.topup.currency,
            "status": started.topup.status,
        }
    )


@router.get("/v1/billing/topups")
async def list_topups(
    caller: CallerDep, res: ResourcesDep, limit: int = Query(100, ge=1, le=1000)
) -> Response:
    """The caller's top-ups (deposits history), newest first."""
    async with unit_of_work(res.engine) as conn:
        views = await topups.list_topups(conn, caller.account_id, limit=limit)
    return json_response({"object": "list", "data": [_topup(v) for v in views]})


@router.get("/v1/billing/topups/{topup_id}")
async def get_topup(topup_id: str, caller: CallerDep, res: ResourcesDep) -> Response:
    """One top-up: its status moves to `paid` once Stripe's event has credited it."""
    async with unit_of_work(res.engine) as conn:
        view = await topups.get_topup(conn, caller.account_id, topup_id)
    if view is None:
        raise NotFound(f"No top-up {topup_id}")
    return json_response(_topup(view))


@router.post("/webhooks/stripe", include_in_schema=False)
async def stripe_webhook(request: Request, res: ResourcesDep) -> Response:
    payments = _payments(res)
    # The signature covers the raw bytes: they are verified before anything parses them.
    payload = await read_limited(request, _MAX_WEBHOOK_BODY)
    try:
        event = payments.gateway.verify_event(payload, request.headers.get("stripe-signature"))
    except InvalidSignature as exc:
        raise InvalidRequest(str(exc), code="invalid_signature") from None
    policy = WebhookPolicy(livemode=payments.gateway.livemode, currency=payments.policy.currency)
    received = await webhooks.process_event(res.engine, event, policy)
    return json_response({"received": True, "outcome": received.outcome})


def _topup(view: topups.TopupView) -> dict[str, Any]:
    return {
        "id": view.id,
        "object": "topup",
        "status": view.status,
        "amount_usd": format_cents(view.amount_cents),
        "currency": view.currency,
        "credits": view.credits,
        "refunded_usd": format_cents(view.refunded_cents),
        "disputed_usd": format_cents(view.disputed_cents),
        "created_at": iso(view.created_at),
        "paid_at": iso(view.paid_at),
    }
