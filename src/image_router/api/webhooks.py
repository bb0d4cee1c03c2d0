"""`/v1/webhooks`: an account's webhook endpoints, its delivery log and its request secret.

Authenticated like the account's own routes (`IdentityDep`): a normal API key, a website
session (with the page's CSRF token) or a Clerk session token; management keys are refused.
An endpoint's signing secret is in the answer that created it and nowhere else. See
docs/webhooks.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from image_router.api.bodies import read_model
from image_router.api.deps import ResourcesDep
from image_router.api.identity import IdentityDep
from image_router.api.request_models import NewWebhook
from image_router.api.responses import json_response
from image_router.kit.clock import iso
from image_router.webhooks.endpoints import DeliveryView, EndpointView

router = APIRouter(tags=["Webhooks"])

MAX_BODY_BYTES = 10_000


@router.post(
    "/v1/webhooks",
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["url"],
                        "properties": {
                            "url": {
                                "type": "string",
                                "maxLength": 2000,
                                "description": "http(s), at a public address",
                            },
                            "description": {"type": ["string", "null"], "maxLength": 200},
                        },
                    }
                }
            },
        }
    },
)
async def create_webhook(request: Request, identity: IdentityDep, res: ResourcesDep) -> Response:
    """Register an endpoint for every generation event of the account; the answer is the
    only time its signing `secret` is shown."""
    body = await read_model(request, NewWebhook, max_bytes=MAX_BODY_BYTES)
    endpoint, secret = await res.webhooks.register(identity.account_id, body.url, body.description)
    return json_response({**_endpoint(endpoint), "secret": secret}, status=201)


@router.get("/v1/webhooks")
async def list_webhooks(identity: IdentityDep, res: ResourcesDep) -> Response:
    """The account's endpoints (never their secrets), oldest first."""
    found = await res.webhooks.endpoints(identity.account_id)
    return json_response({"data": [_endpoint(e) for e in found]})


@router.get("/v1/webhooks/default/secret")
async def request_secret(identity: IdentityDep, res: ResourcesDep) -> Response:
    """The secret that signs the deliveries of a request's own `webhook_url`."""
    return json_response({"key": await res.webhooks.request_secret(identity.account_id)})


@router.get("/v1/webhooks/deliveries")
async def list_deliveries(
    identity: IdentityDep,
    res: ResourcesDep,
    limit: int = Query(50, ge=1, le=500),
    endpoint_id: str | None = Query(None, max_length=36),
) -> Response:
    """The delivery log, newest first: each event sent (or being sent) to each target."""
    found = await res.webhooks.deliveries(identity.account_id, limit=limit, endpoint_id=endpoint_id)
    return json_response({"data": [_delivery(d) for d in found]})


@router.post(
    "/v1/webhooks/deliveries/{delivery_id}/resend",
    status_code=202,
    responses={409: {"description": "The delivery's endpoint is disabled: enable it first"}},
)
async def resend_delivery(delivery_id: str, identity: IdentityDep, res: ResourcesDep) -> Response:
    """Send a delivery again now (same `webhook-id` and body), retried as a new one."""
    await res.webhooks.resend(identity.account_id, delivery_id)
    return json_response({"id": delivery_id, "status": "pending"}, status=202)


@router.post("/v1/webhooks/{endpoint_id}/enable")
async def enable_webhook(endpoint_id: str, identity: IdentityDep, res: ResourcesDep) -> Response:
    """Turn an endpoint disabled after failing back on."""
    await res.webhooks.enable(identity.account_id, endpoint_id)
    return json_response({"id": endpoint_id, "disabled": False})


@router.delete("/v1/webhooks/{endpoint_id}")
async def delete_webhook(endpoint_id: str, identity: IdentityDep, res: ResourcesDep) -> Response:
    """Delete an endpoint and its delivery log; nothing more is sent to it."""
    await res.webhooks.delete(identity.account_id, endpoint_id)
    return json_response({"id": endpoint_id, "deleted": True})


def _endpoint(endpoint: EndpointView) -> dict[str, Any]:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "description": endpoint.description,
        "disabled": endpoint.disabled,
        "disabled_at": iso(endpoint.disabled_at),
        "disabled_reason": endpoint.disabled_reason,
        "failing_since": iso(endpoint.failing_since),
        "created_at": iso(endpoint.created_at),
    }


def _delivery(delivery: DeliveryView) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "endpoint_id": delivery.endpoint_id,
        "url": delivery.url,
        "event_type": delivery.event_type,
        "generation_id": delivery.generation_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "response_status": delivery.response_status,
        "last_error": delivery.last_error,
        "created_at": iso(delivery.created_at),
        "last_attempt_at": iso(delivery.last_attempt_at),
        "next_attempt_at": iso(delivery.next_attempt_at),
        "delivered_at": iso(delivery.delivered_at),
    }
