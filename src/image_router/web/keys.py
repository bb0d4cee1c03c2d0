"""The API keys pages (`/account/keys`): list, create, rename, disable or re-enable, and revoke
the account's keys. A disabled key is refused (401) from its next request on until it is
enabled again; a revoked one for good.

Every change is a POST carrying the session's CSRF token; a key of another account is
answered 404, exactly like one that does not exist. A new key's secret is only ever in the
answer to the POST that created it (`Cache-Control: no-store`): it is not stored, so a
reload of the list cannot show it again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from image_router.account import managed_keys
from image_router.account.managed_keys import KeySettingError, ManagedKey
from image_router.account.service import AccountError, create_key
from image_router.account.sessions import SessionView
from image_router.api.deps import ResourcesDep
from image_router.db.session import unit_of_work
from image_router.errors import NotFound
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.resources import Resources
from image_router.web.common import SignedInDep, SignedInFormDep, field, redirect, render

router = APIRouter(include_in_schema=False)

KEYS_URL = "/account/keys"
NO_SUCH_KEY = "There is no such API key in your account. It may have been revoked already."
# What happened, as a code in the redirect's query, so a link cannot inject text.
DONE = {
    "renamed": "The key has been renamed.",
    "revoked": "The key has been revoked: it is refused from its next request on.",
    "disabled": "The key has been disabled: it is refused until you enable it again.",
    "enabled": "The key has been enabled: it works again.",
}
_PERIOD_WORDS = {"day": "per UTC day", "week": "per ISO week", "month": "per calendar month"}
_CREATE_FIELDS = ("name", "spend_limit", "spend_limit_period", "expires_at", "management")
# The service's messages name the API's fields; the form calls them this.
_FIELD_WORDS = (
    ("spend_limit_period", "the limit period"),
    ("spend_limit", "spend limit"),
    ("expires_at", "expiry"),
)


@dataclass(frozen=True)
class KeyRow:
    """One key as the list shows it."""

    id: str
    name: str
    masked: str
    kind: str
    status: str
    created: str
    last_used: str
    limit: str
    expires: str


def when(moment: datetime | None, never: str = "never") -> str:
    return never if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _limit(key: ManagedKey) -> str:
    if key.spend_limit is None:
        return "no limit"
    period = _PERIOD_WORDS.get(key.spend_limit_period or "", "over its lifetime")
    spent = f"${format_usd(key.period_spend or 0)} spent"
    return f"${format_usd(key.spend_limit)} {period} ({spent})"


def _status(key: ManagedKey, now: datetime) -> str:
    if key.disabled:
        return "disabled"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def row(key: ManagedKey, now: datetime) -> KeyRow:
    return KeyRow(
        id=key.id,
        name=key.name,
        masked=f"{key.prefix}…{key.last_four}",
        kind="management" if key.is_management else "API",
        status=_status(key, now),
        created=when(key.created_at),
        last_used=when(key.last_used_at),
        limit=_limit(key),
        expires=when(key.expires_at),
    )


def for_people(error: AccountError) -> str:
    """The service's message in the form's words, naming the field when it does not."""
    message = str(error)
    if isinstance(error, KeySettingError) and error.param not in message:
        message = f"{error.param}: {message}"
    for name, words in _FIELD_WORDS:
        message = message.replace(name, words)
    return message[:1].upper() + message[1:]


async def _keys_page(
    request: Request, res: Resources, session: SessionView, *, status: int = 200, **context: Any
) -> Response:
    async with unit_of_work(res.engine) as conn:
        keys = await managed_keys.list_keys(conn, session.account_id)
    now = utcnow()
    return render(
        request,
        "keys.html",
        session,
        status=status,
        keys=[row(k, now) for k in keys],
        **context,
    )


def _site(request: Request, res: Resources) -> str:
    return (res.settings.serving.public_url or str(request.base_url)).rstrip("/")


def _no_such_key(request: Request, session: SessionView) -> Response:
    return render(request, "error.html", session, status=404, message=NO_SUCH_KEY)


@router.get(KEYS_URL)
async def keys_page(
    request: Request, res: ResourcesDep, session: SignedInDep, done: str = ""
) -> Response:
    return await _keys_page(request, res, session, notice=DONE.get(done))


def _new_key_settings(form: FormData) -> dict[str, Any]:
    """The create form's fields as `create_key` arguments (KeySettingError when invalid)."""
    limit, period = field(form, "spend_limit").strip(), field(form, "spend_limit_period")
    expiry = field(form, "expires_at").strip()
    return {
        "name": managed_keys.parse_name(field(form, "name")),
        "spend_limit": managed_keys.parse_spend_limit(limit or None),
        "spend_limit_period": managed_keys.parse_period(period or None),
        "expires_at": managed_keys.parse_expiry(expiry or None, utcnow()),
        "management": field(form, "management") == "on",
    }


@router.post(KEYS_URL)
async def create(request: Request, res: ResourcesDep, signed: SignedInFormDep) -> Response:
    """Create a key and show its secret, this once."""
    session, form = signed
    try:
        settings = _new_key_settings(form)
        async with unit_of_work(res.engine) as conn:
            view, secret = await create_key(conn, session.account_id, **settings)
    except AccountError as exc:  # KeySettingError included
        entered = {name: field(form, name) for name in _CREATE_FIELDS}
        return await _keys_page(
            request, res, session, status=400, error=for_people(exc), entered=entered
        )
    return render(
        request,
        "key_created.html",
        session,
        status=201,
        secret=secret,
        name=view.name,
        is_management=view.is_management,
        api_base=_site(request, res) + "/v1/openai",
    )


@router.post(KEYS_URL + "/{key_id}/rename")
async def rename(
    request: Request, key_id: str, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    session, form = signed
    try:
        async with unit_of_work(res.engine) as conn:
            await managed_keys.rename_key(conn, session.account_id, key_id, field(form, "name"))
    except NotFound:
        return _no_such_key(request, session)
    except KeySettingError as exc:
        return await _keys_page(request, res, session, status=400, error=for_people(exc))
    return redirect(request, f"{KEYS_URL}?done=renamed")


@router.get(KEYS_URL + "/{key_id}/revoke")
async def confirm_revoke(
    request: Request, key_id: str, res: ResourcesDep, session: SignedInDep
) -> Response:
    """Ask before revoking: a revoked key cannot be brought back."""
    try:
        async with unit_of_work(res.engine) as conn:
            key = await managed_keys.get_key(conn, session.account_id, key_id)
    except NotFound:
        return _no_such_key(request, session)
    return render(request, "key_revoke.html", session, key=row(key, utcnow()))


@router.post(KEYS_URL + "/{key_id}/revoke")
async def revoke(
    request: Request, key_id: str, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    session, _ = signed
    try:
        async with unit_of_work(res.engine) as conn:
            await managed_keys.revoke_owned(conn, session.account_id, key_id)
    except NotFound:
        return _no_such_key(request, session)
    return redirect(request, f"{KEYS_URL}?done=revoked")


@router.post(KEYS_URL + "/{key_id}/disable")
@router.post(KEYS_URL + "/{key_id}/enable")
async def disable_or_enable(
    request: Request, key_id: str, res: ResourcesDep, signed: SignedInFormDep
) -> Response:
    session, _ = signed
    disabled = request.url.path.endswith("/disable")
    try:
        async with unit_of_work(res.engine) as conn:
            await managed_keys.set_disabled(conn, session.account_id, key_id, disabled)
    except NotFound:
        return _no_such_key(request, session)
    return redirect(request, f"{KEYS_URL}?done={'disabled' if disabled else 'enabled'}")
