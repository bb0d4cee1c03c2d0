"""API key management: `/v1/api-keys` with a management key (spec §4 [docs]), and
`/v1/account/api-keys` for the signed-in owner (website session or Clerk session token).

Only a management API key (`Authorization: Bearer <management key>`) is accepted here.
Normal keys, website tokens, and unknown, revoked, disabled or expired keys get 401
`invalid_management_key`; a valid normal key gets 401 `not_management_key`, which says
what is needed instead.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel

from image_router.account import managed_keys
from image_router.account.service import AccountError, KeyView, create_key
from image_router.api.bodies import read_model
from image_router.api.deps import ResourcesDep
from image_router.api.idempotency import idempotently
from image_router.api.identity import Identity, IdentityDep, ManagerDep, require_recent_sign_in
from image_router.api.request_models import KeyChanges, NewKey, NewOwnKey
from image_router.api.responses import json_response
from image_router.db.session import unit_of_work
from image_router.errors import Forbidden, InvalidRequest
from image_router.kit.clock import iso
from image_router.kit.money import format_usd
from image_router.resources import Resources

router = APIRouter(tags=["API keys"])

MAX_BODY_BYTES = 10_000
NOT_AN_OBJECT = "Request body must be a JSON object"
Body = TypeVar("Body", bound=BaseModel)

# The request models parse with their own validators (exact decimals, field-named errors),
# which the generated schema cannot describe; documented here.
_SETTINGS: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1, "maxLength": 200},
    "spend_limit": {
        "type": ["number", "string", "null"],
        "description": "USD per period (a multiple of 0.0001); null: no limit",
    },
    "spend_limit_period": {
        "enum": ["day", "week", "month", None],
        "description": "UTC day, ISO week or calendar month; null: the key's lifetime",
    },
    "expires_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "ISO 8601, UTC when no offset is given; null: never",
    },
}


def _documented_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    }


@router.post(
    "/v1/api-keys",
    status_code=201,
    openapi_extra=_documented_body(
        {"type": "object", "required": ["name"], "properties": _SETTINGS}
    ),
)
async def create_api_key(request: Request, manager: ManagerDep, res: ResourcesDep) -> Response:
    """Create a normal key; the response is the only time its secret is shown (and its
    replay to an `Idempotency-Key` retry of the same account, docs/idempotency.md)."""
    return await idempotently(
        request,
        res,
        manager.account_id,
        partial(_body, model=NewKey),
        partial(_create, res, manager.account_id),
    )


@router.get("/v1/api-keys")
async def list_api_keys(manager: ManagerDep, res: ResourcesDep) -> Response:
    """The account's unrevoked keys (never their secrets), oldest first."""
    async with unit_of_work(res.engine) as conn:
        keys = await managed_keys.list_keys(conn, manager.account_id)
    return json_response({"data": [_managed(k) for k in keys]})


@router.patch(
    "/v1/api-keys/{key_id}",
    openapi_extra=_documented_body(
        {"type": "object", "properties": {**_SETTINGS, "disabled": {"type": "boolean"}}}
    ),
)
async def update_api_key(
    key_id: str, request: Request, manager: ManagerDep, res: ResourcesDep
) -> Response:
    """Rename, change the limit or expiry, or disable (`disabled: true`) a normal key."""
    values = (await _body(request, KeyChanges)).values()
    try:
        async with unit_of_work(res.engine) as conn:
            key = await managed_keys.update_key(conn, manager.account_id, key_id, values)
    except managed_keys.KeySettingError as exc:
        raise InvalidRequest(str(exc), param=exc.param) from None
    return json_response(_managed(key))


@router.delete("/v1/api-keys/{key_id}")
async def revoke_api_key(key_id: str, manager: ManagerDep, res: ResourcesDep) -> Response:
    """Revoke a normal key for good; it is refused from its next request on."""
    async with unit_of_work(res.engine) as conn:
        await managed_keys.revoke(conn, manager.account_id, key_id)
    return json_response({"id": key_id, "deleted": True})


# ------------------------------------------------------------ the signed-in owner's keys


async def get_owner(identity: IdentityDep) -> Identity:
    """A person signed in: an API key (even a management one) never manages keys here."""
    if identity.via == "api_key":
        raise Forbidden(
            "Sign in to manage your keys here (or use a management key with /v1/api-keys)",
            code="sign_in_required",
        )
    return identity


OwnerDep = Annotated[Identity, Depends(get_owner)]


@router.get("/v1/account/api-keys")
async def list_own_keys(owner: OwnerDep, res: ResourcesDep) -> Response:
    """Every unrevoked key of the signed-in account, management keys included."""
    async with unit_of_work(res.engine) as conn:
        keys = await managed_keys.list_keys(conn, owner.account_id)
    return json_response({"data": [_managed(k) for k in keys]})


@router.post(
    "/v1/account/api-keys",
    status_code=201,
    openapi_extra=_documented_body(
        {
            "type": "object",
            "required": ["name"],
            "properties": {**_SETTINGS, "management": {"type": "boolean"}},
        }
    ),
)
async def create_own_key(request: Request, owner: OwnerDep, res: ResourcesDep) -> Response:
    """Create a key (shown once). Needs a recent sign-in, like every credential change."""
    require_recent_sign_in(owner, res)
    return await idempotently(
        request,
        res,
        owner.account_id,
        partial(_body, model=NewOwnKey),
        partial(_create, res, owner.account_id),
    )


@router.patch("/v1/account/api-keys/{key_id}")
async def update_own_key(
    key_id: str, request: Request, owner: OwnerDep, res: ResourcesDep
) -> Response:
    """Rename any key; change limits, expiry or `disabled` of a normal key."""
    values = (await _body(request, KeyChanges)).values()
    try:
        async with unit_of_work(res.engine) as conn:
            if set(values) == {"name"}:
                key = await managed_keys.rename_key(conn, owner.account_id, key_id, values["name"])
            else:
                key = await managed_keys.update_key(conn, owner.account_id, key_id, values)
    except managed_keys.KeySettingError as exc:
        raise InvalidRequest(str(exc), param=exc.param) from None
    return json_response(_managed(key))


@router.delete("/v1/account/api-keys/{key_id}")
async def revoke_own_key(key_id: str, owner: OwnerDep, res: ResourcesDep) -> Response:
    """Revoke any key of the account, management keys included."""
    async with unit_of_work(res.engine) as conn:
        await managed_keys.revoke_owned(conn, owner.account_id, key_id)
    return json_response({"id": key_id, "deleted": True})


async def _create(res: Resources, account_id: str, new: NewKey) -> Response:
    try:
        async with unit_of_work(res.engine) as conn:
            view, secret = await create_key(
                conn,
                account_id,
                new.name,
                management=new.management,
                spend_limit=new.spend_limit,
                spend_limit_period=new.spend_limit_period,
                expires_at=new.expires_at,
            )
    except AccountError as exc:
        # The fields were parsed already: what is left is a period without a limit.
        raise InvalidRequest(str(exc), param="spend_limit_period") from None
    return json_response(_created(view, secret), status=201)


async def _body(request: Request, model: type[Body]) -> Body:
    return await read_model(request, model, max_bytes=MAX_BODY_BYTES, not_an_object=NOT_AN_OBJECT)


def _usd(credits: int | None) -> str | None:
    return None if credits is None else format_usd(credits)


def _created(view: KeyView, secret: str) -> dict[str, Any]:
    return {
        "id": view.id,
        "name": view.name,
        "key": secret,
        "prefix": view.prefix,
        "last_four": view.last_four,
        "is_management": view.is_management,
        "disabled": False,
        "spend_limit": _usd(view.spend_limit),
        "spend_limit_period": view.spend_limit_period,
        "expires_at": iso(view.expires_at),
        "created_at": iso(view.created_at),
    }


def _managed(key: managed_keys.ManagedKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "last_four": key.last_four,
        "is_management": key.is_management,
        "disabled": key.disabled,
        "spend_limit": _usd(key.spend_limit),
        "spend_limit_period": key.spend_limit_period,
        "period_spend": _usd(key.period_spend),
        "period_start": iso(key.period_start),
        "expires_at": iso(key.expires_at),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
    }
