"""An account's keys as a management key sees them (`/v1/api-keys`), and the parsing of
key settings shared by that API and the CLI.

A management key lists every unrevoked key of its account, and creates, changes and
revokes normal keys. It cannot create, change or revoke management keys: a leaked
management key must not be able to mint a successor that outlives it, nor lock the owner
out. Those are the owner's (the website's keys page: `rename_key`, `revoke_owned`) and the
operator's (CLI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account import spend_limits
from image_router.account.service import AccountError, check_limit, revoke_key
from image_router.db.tables import ApiKey
from image_router.errors import Forbidden, NotFound
from image_router.kit.clock import utcnow
from image_router.kit.money import CREDITS_PER_USD, MoneyFormatError, parse_usd

MAX_SPEND_LIMIT_USD = Decimal(1_000_000_000)
FIELDS = ("name", "spend_limit", "spend_limit_period", "expires_at")
PATCH_FIELDS = (*FIELDS, "disabled")


class KeySettingError(AccountError):
    """A bad key setting; `param` names the field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class ManagedKey:
    id: str
    name: str
    prefix: str
    last_four: str
    is_management: bool
    disabled: bool
    spend_limit: int | None
    spend_limit_period: str | None
    expires_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None
    # Spend in the current window of the key's limit; None when it has no limit.
    period_spend: int | None
    period_start: datetime | None


# --------------------------------------------------------------------------- parsing


def parse_spend_limit(value: object) -> int | None:
    """A USD amount (JSON number, or string such as "5" or "$0.50") or None → credits."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            amount = parse_usd(value)
        except MoneyFormatError as exc:
            raise KeySettingError(str(exc), "spend_limit") from None
    elif isinstance(value, int | Decimal) and not isinstance(value, bool):
        amount = Decimal(value)
    else:
        raise KeySettingError("spend_limit must be a USD amount or null", "spend_limit")
    if not amount.is_finite() or amount < 0:
        raise KeySettingError("spend_limit must not be negative", "spend_limit")
    if amount > MAX_SPEND_LIMIT_USD:
        raise KeySettingError(f"spend_limit must be at most ${MAX_SPEND_LIMIT_USD}", "spend_limit")
    credits = amount * CREDITS_PER_USD
    if credits != credits.to_integral_value():
        # Rounding either way would silently change the limit a client asked for.
        raise KeySettingError("spend_limit must be a multiple of $0.0001", "spend_limit")
    return int(credits)


def parse_period(value: object) -> str | None:
    if value is None or (isinstance(value, str) and value in spend_limits.PERIODS):
        return value
    raise KeySettingError(
        'spend_limit_period must be "day", "week", "month" or null (lifetime)',
        "spend_limit_period",
    )


def parse_expiry(value: object, now: datetime) -> datetime | None:
    """An ISO 8601 moment in the future (without an offset it is UTC) or None."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise KeySettingError("expires_at must be an ISO 8601 date-time or null", "expires_at")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise KeySettingError(
            f"expires_at '{value}' is not an ISO 8601 date-time", "expires_at"
        ) from None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if moment <= now:
        raise KeySettingError("expires_at must be in the future", "expires_at")
    return moment


def parse_name(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 200:
        raise KeySettingError("name must be a string of 1 to 200 characters", "name")
    return value.strip()


def parse_settings(
    body: Mapping[str, Any], now: datetime, *, allowed: tuple[str, ...]
) -> dict[str, Any]:
    """The fields present in a create or update body, validated, as column values."""
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise KeySettingError(
            f"unknown field '{unknown[0]}'; accepted: {', '.join(allowed)}", unknown[0]
        )
    values: dict[str, Any] = {}
    if "name" in body:
        values["name"] = parse_name(body["name"])
    if "spend_limit" in body:
        values["spend_limit"] = parse_spend_limit(body["spend_limit"])
    if "spend_limit_period" in body:
        values["spend_limit_period"] = parse_period(body["spend_limit_period"])
    if "expires_at" in body:
        values["expires_at"] = parse_expiry(body["expires_at"], now)
    if "disabled" in body:
        if not isinstance(body["disabled"], bool):
            raise KeySettingError("disabled must be true or false", "disabled")
        values["is_active"] = not body["disabled"]
    return values


# --------------------------------------------------------------------------- operations


async def list_keys(
    conn: AsyncConnection, account_id: str, *, clock: Callable[[], datetime] = utcnow
) -> list[ManagedKey]:
    """Every unrevoked key of the account, oldest first, with its spend in the window."""
    rows = (
        await conn.execute(
            select(ApiKey)
            .where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
            .order_by(ApiKey.created_at)
        )
    ).all()
    now = clock()
    return [await _view(conn, row, now) for row in rows]


async def update_key(
    conn: AsyncConnection,
    account_id: str,
    key_id: str,
    values: Mapping[str, Any],
    *,
    clock: Callable[[], datetime] = utcnow,
) -> ManagedKey:
    """Apply `parse_settings` values to a normal key of the account.

    Removing the limit (`spend_limit` null) removes its period too.
    """
    row = await _normal_key(conn, account_id, key_id)
    changes = dict(values)
    if changes.get("spend_limit", row.spend_limit) is None and "spend_limit_period" not in changes:
        changes["spend_limit_period"] = None
    try:
        check_limit(
            changes.get("spend_limit", row.spend_limit),
            changes.get("spend_limit_period", row.spend_limit_period),
        )
    except AccountError as exc:
        # Values were parsed already: what is left is a period without a limit.
        raise KeySettingError(str(exc), "spend_limit_period") from None
    if changes:
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(changes))
    fresh = (await conn.execute(select(ApiKey).where(ApiKey.id == key_id))).one()
    return await _view(conn, fresh, clock())


async def revoke(conn: AsyncConnection, account_id: str, key_id: str) -> None:
    """Revoke a normal key of the account: it stops working at its next request."""
    await _normal_key(conn, account_id, key_id)
    await revoke_key(conn, key_id)


# The owner, signed in on the website, may also rename and revoke management keys.


async def get_key(
    conn: AsyncConnection, account_id: str, key_id: str, *, clock: Callable[[], datetime] = utcnow
) -> ManagedKey:
    """One unrevoked key of the account; NotFound also when it belongs to another account."""
    return await _view(conn, await _owned_key(conn, account_id, key_id), clock())


async def rename_key(
    conn: AsyncConnection,
    account_id: str,
    key_id: str,
    name: str,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> ManagedKey:
    """Rename any unrevoked key of the account, management keys included."""
    await _owned_key(conn, account_id, key_id)
    await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(name=parse_name(name)))
    return await get_key(conn, account_id, key_id, clock=clock)


async def set_disabled(
    conn: AsyncConnection,
    account_id: str,
    key_id: str,
    disabled: bool,
    *,
    clock: Callable[[], datetime] = utcnow,
) -> ManagedKey:
    """Disable (refused from its next request on) or re-enable any unrevoked key of the
    account, management keys included."""
    await _owned_key(conn, account_id, key_id)
    await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(is_active=not disabled))
    return await get_key(conn, account_id, key_id, clock=clock)


async def revoke_owned(conn: AsyncConnection, account_id: str, key_id: str) -> None:
    """Revoke any unrevoked key of the account, management keys included."""
    await _owned_key(conn, account_id, key_id)
    await revoke_key(conn, key_id)


async def _owned_key(conn: AsyncConnection, account_id: str, key_id: str) -> Any:
    # Locked so a concurrent change of the same key applies its rules to fresh values.
    row = (
        await conn.execute(
            select(ApiKey)
            .where(
                ApiKey.id == key_id,
                ApiKey.account_id == account_id,
                ApiKey.revoked_at.is_(None),
            )
            .with_for_update()
        )
    ).first()
    if row is None:
        raise NotFound(f"No API key with id '{key_id}'", code="api_key_not_found")
    return row


async def _normal_key(conn: AsyncConnection, account_id: str, key_id: str) -> Any:
    row = await _owned_key(conn, account_id, key_id)
    if row.is_management:
        raise Forbidden(
            "Management keys cannot be changed or revoked with a management key; use the "
            "website or the operator CLI (image-router keys)",
            code="management_key_protected",
        )
    return row


async def _view(conn: AsyncConnection, row: Any, now: datetime) -> ManagedKey:
    spend: int | None = None
    start: datetime | None = None
    if row.spend_limit is not None:
        spend, start = await spend_limits.period_spend(conn, row.id, row.spend_limit_period, now)
    return ManagedKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        last_four=row.last_four,
        is_management=bool(row.is_management),
        disabled=not row.is_active,
        spend_limit=row.spend_limit,
        spend_limit_period=row.spend_limit_period,
        expires_at=row.expires_at,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        period_spend=spend,
        period_start=start,
    )
