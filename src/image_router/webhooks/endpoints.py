"""An account's webhook endpoints, its request secret and its delivery log.

An endpoint's secret is sealed under the account's data key (as personal data is): a copy of
the database alone cannot sign webhooks, and an erasure shreds it. It is shown once, in the
answer that created the endpoint. The request secret signs the deliveries of a request's own
`webhook_url`; it is made on first use and can be read again by the account (like
Replicate's default webhook secret), since a request names its URL after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.account.personal_data import Vault
from image_router.db.session import unit_of_work
from image_router.db.tables import Account, WebhookDelivery, WebhookEndpoint, WebhookSecret
from image_router.errors import Conflict, InvalidRequest, NotFound
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id
from image_router.webhooks.signing import new_secret

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
NO_SUCH_ENDPOINT = "There is no such webhook endpoint in your account."
NO_SUCH_DELIVERY = "There is no such webhook delivery in your account."
MAX_DESCRIPTION = 200
MAX_URL = 2000


@dataclass(frozen=True)
class EndpointView:
    id: str
    url: str
    description: str | None
    created_at: datetime
    failing_since: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True)
class DeliveryView:
    id: str
    endpoint_id: str | None  # None: a request's own webhook_url
    url: str
    event_type: str
    generation_id: str
    status: str
    attempts: int
    response_status: int | None
    last_error: str | None
    created_at: datetime
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None


_ENDPOINT_COLUMNS = (
    WebhookEndpoint.id,
    WebhookEndpoint.url,
    WebhookEndpoint.description,
    WebhookEndpoint.created_at,
    WebhookEndpoint.failing_since,
    WebhookEndpoint.disabled_at,
    WebhookEndpoint.disabled_reason,
)
_DELIVERY_COLUMNS = (
    WebhookDelivery.id,
    WebhookDelivery.endpoint_id,
    WebhookDelivery.url,
    WebhookDelivery.event_type,
    WebhookDelivery.generation_id,
    WebhookDelivery.status,
    WebhookDelivery.attempts,
    WebhookDelivery.response_status,
    WebhookDelivery.last_error,
    WebhookDelivery.created_at,
    WebhookDelivery.last_attempt_at,
    WebhookDelivery.next_attempt_at,
    WebhookDelivery.delivered_at,
)


def parse_description(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value.strip()) > MAX_DESCRIPTION:
        raise InvalidRequest(
            f"description must be text of at most {MAX_DESCRIPTION} characters",
            param="description",
        )
    return value.strip() or None


async def create_endpoint(
    conn: AsyncConnection,
    vault: Vault,
    account_id: str,
    url: str,
    description: str | None,
    *,
    max_endpoints: int,
) -> tuple[EndpointView, str]:
    """A new endpoint and its secret (returned this once). The URL must have been checked
    (`UrlGuard.check`) by the caller."""
    count = await conn.scalar(
        select(func.count())
        .select_from(WebhookEndpoint)
        .where(WebhookEndpoint.account_id == account_id)
    )
    if (count or 0) >= max_endpoints:
        raise InvalidRequest(
            f"An account may have at most {max_endpoints} webhook endpoints; delete one first",
            code="too_many_webhook_endpoints",
        )
    secret = new_secret()
    view = EndpointView(
        id=new_id(),
        url=url,
        description=description,
        created_at=utcnow(),
        failing_since=None,
        disabled_at=None,
        disabled_reason=None,
    )
    await conn.execute(
        insert(WebhookEndpoint).values(
            id=view.id,
            account_id=account_id,
            url=url,
            description=description,
            secret_enc=await vault.seal(account_id, secret),
            created_at=view.created_at,
        )
    )
    return view, secret


async def list_endpoints(conn: AsyncConnection, account_id: str) -> list[EndpointView]:
    rows = await conn.execute(
        select(*_ENDPOINT_COLUMNS)
        .where(WebhookEndpoint.account_id == account_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return [EndpointView(**row._mapping) for row in rows]


async def delete_endpoint(conn: AsyncConnection, account_id: str, endpoint_id: str) -> None:
    """Delete the endpoint and its deliveries (nothing more is sent to it)."""
    # Explicitly, not only by the foreign key's cascade, which SQLite applies only on
    # connections that turned foreign keys on.
    await conn.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id))
    deleted = await conn.execute(
        delete(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account_id == account_id
        )
    )
    if deleted.rowcount != 1:
        raise NotFound(NO_SUCH_ENDPOINT, code="webhook_endpoint_not_found")


async def enable_endpoint(conn: AsyncConnection, account_id: str, endpoint_id: str) -> None:
    """Turn a disabled endpoint back on: events are sent to it again from now on."""
    changed = await conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.account_id == account_id)
        .values(disabled_at=None, disabled_reason=None, failing_since=None)
    )
    if changed.rowcount != 1:
        raise NotFound(NO_SUCH_ENDPOINT, code="webhook_endpoint_not_found")


async def request_secret(engine: AsyncEngine, vault: Vault, account_id: str) -> str:
    """The account's secret for per-request `webhook_url` deliveries, made on first use."""
    async with unit_of_work(engine) as conn:
        sealed = await conn.scalar(
            select(WebhookSecret.secret_enc).where(WebhookSecret.account_id == account_id)
        )
    if sealed is None:
        # An erased account's secret went with its data key; a new one would be sealed under
        # a new key, made for an account that no longer exists, and a delivery claimed just
        # before the erasure would still go out (docs/privacy.md).
        async with unit_of_work(engine) as conn:
            status = await conn.scalar(select(Account.status).where(Account.id == account_id))
        if status is None or status == "deleted":
            raise NotFound("This account was erased", code="account_erased")
        secret = new_secret()
        try:
            async with unit_of_work(engine) as conn:
                await conn.execute(
                    insert(WebhookSecret).values(
                        account_id=account_id,
                        secret_enc=await vault.seal(account_id, secret),
                        created_at=utcnow(),
                    )
                )
            return secret
        except IntegrityError:  # made meanwhile by another request: use that one
            async with unit_of_work(engine) as conn:
                sealed = await conn.scalar(
                    select(WebhookSecret.secret_enc).where(WebhookSecret.account_id == account_id)
                )
    opened = await vault.open(account_id, sealed)
    if opened is None:
        raise NotFound("This account's data key is gone", code="account_erased")
    return opened


async def list_deliveries(
    conn: AsyncConnection, account_id: str, *, limit: int = 50, endpoint_id: str | None = None
) -> list[DeliveryView]:
    """The account's deliveries, newest first."""
    query = select(*_DELIVERY_COLUMNS).where(WebhookDelivery.account_id == account_id)
    if endpoint_id is not None:
        query = query.where(WebhookDelivery.endpoint_id == endpoint_id)
    rows = await conn.execute(
        query.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id).limit(limit)
    )
    return [DeliveryView(**row._mapping) for row in rows]


async def resend(
    conn: AsyncConnection,
    account_id: str,
    delivery_id: str,
    *,
    retry_window: timedelta,
    now: datetime | None = None,
) -> None:
    """Send a delivery again (same message id and body, so a receiver that saw it already
    can tell), now, with a fresh retry window."""
    now = now or utcnow()
    row = (
        await conn.execute(
            select(WebhookDelivery.endpoint_id, WebhookDelivery.status).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.account_id == account_id
            )
        )
    ).one_or_none()
    if row is None:
        raise NotFound(NO_SUCH_DELIVERY, code="webhook_delivery_not_found")
    if row.endpoint_id is not None:
        disabled = await conn.scalar(
            select(WebhookEndpoint.disabled_at).where(WebhookEndpoint.id == row.endpoint_id)
        )
        if disabled is not None:
            raise Conflict(
                "The endpoint is disabled: enable it first, then resend",
                code="webhook_endpoint_disabled",
            )
    await conn.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .values(
            status=PENDING,
            next_attempt_at=now,
            retry_until=now + retry_window,
            locked_until=None,
        )
    )
