"""Top-ups: start a Stripe Checkout for credits (STR-1), and the deposits history (STR-2).

A top-up row is written before Stripe is called and the Checkout Session is created with no
transaction open, so a slow Stripe never holds a database connection. Nothing here credits
anything: only a verified webhook event does (`webhooks`), whatever the browser is shown.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.db.session import unit_of_work
from image_router.db.tables import Account, Topup
from image_router.errors import GatewayError, NotFound
from image_router.kit.clock import utcnow
from image_router.kit.ids import new_id
from image_router.payment.amounts import cents_to_credits, parse_amount_usd
from image_router.payment.stripe_api import CheckoutRequest, StripeGateway, StripeUnavailable

log = logging.getLogger(__name__)

DISABLED_MESSAGE = (
    "Payments are not enabled on this gateway (PAYMENTS_PROVIDER=none): credits are granted "
    "by the operator (image-router credits grant EMAIL USD --reason TEXT)."
)


class PaymentsDisabled(NotFound):
    code = "payments_disabled"


class PaymentProviderError(GatewayError):
    status = 502
    error_type = "upstream_error"
    code = "payment_provider_error"


@dataclass(frozen=True)
class TopupPolicy:
    currency: str
    min_cents: int
    max_cents: int
    site_url: str
    product_name: str = "Image Router credits"


@dataclass(frozen=True)
class Payments:
    """What the payment use cases need, built once by the composition root."""

    gateway: StripeGateway
    policy: TopupPolicy


@dataclass(frozen=True)
class TopupView:
    id: str
    status: str
    amount_cents: int
    currency: str
    credits: int
    refunded_cents: int
    disputed_cents: int
    created_at: datetime
    paid_at: datetime | None


@dataclass(frozen=True)
class Checkout:
    topup: TopupView
    url: str


async def start_checkout(
    engine: AsyncEngine, payments: Payments, account_id: str, amount_usd: object
) -> Checkout:
    """Record a pending top-up and open a Stripe Checkout Session for it."""
    policy = payments.policy
    cents = parse_amount_usd(amount_usd, min_cents=policy.min_cents, max_cents=policy.max_cents)
    topup_id, now = new_id(), utcnow()
    async with unit_of_work(engine) as conn:
        await conn.execute(
            insert(Topup).values(
                id=topup_id,
                account_id=account_id,
                amount_cents=cents,
                currency=policy.currency,
                credits=cents_to_credits(cents),
                refunded_cents=0,
                disputed_cents=0,
                status="pending",
                created_at=now,
                updated_at=now,
            )
        )
        customer_id = await conn.scalar(
            select(Account.stripe_customer_id).where(Account.id == account_id)
        )
    request = CheckoutRequest(
        topup_id=topup_id,
        account_id=account_id,
        amount_cents=cents,
        currency=policy.currency,
        product_name=policy.product_name,
        # The website's billing page shows "processing" until the webhook has credited
        # the top-up, polling GET /v1/billing/topups/{id}.
        success_url=f"{policy.site_url}/billing?topup={topup_id}&session_id={{CHECKOUT_SESSION_ID}}",
        cancel_url=f"{policy.site_url}/billing?topup={topup_id}&cancelled=true",
        customer_id=customer_id,
    )
    try:
        session = await payments.gateway.create_checkout_session(request)
    except StripeUnavailable as exc:
        log.error("checkout for top-up %s failed: %s", topup_id, exc)
        async with unit_of_work(engine) as conn:
            await _set_status(conn, topup_id, "failed")
        raise PaymentProviderError(
            "The payment provider could not start a checkout; nothing was charged. "
            "Please try again later."
        ) from exc
    async with unit_of_work(engine) as conn:
        await conn.execute(
            update(Topup)
            .where(Topup.id == topup_id)
            .values(stripe_checkout_session_id=session.id, updated_at=utcnow())
        )
        if session.customer_replaced:
            # The completed session will name the new customer (see `webhooks`).
            await conn.execute(
                update(Account)
                .where(Account.id == account_id, Account.stripe_customer_id == customer_id)
                .values(stripe_customer_id=None)
            )
        view = await get_topup(conn, account_id, topup_id)
    assert view is not None  # written above, in this account
    return Checkout(view, session.url)


async def list_topups(conn: AsyncConnection, account_id: str, *, limit: int) -> list[TopupView]:
    """The account's top-ups, newest first."""
    rows = (
        await conn.execute(
            select(Topup)
            .where(Topup.account_id == account_id)
            .order_by(Topup.created_at.desc(), Topup.id)
            .limit(limit)
        )
    ).all()
    return [_view(r) for r in rows]


async def get_topup(conn: AsyncConnection, account_id: str, topup_id: str) -> TopupView | None:
    """One top-up of the account (None also when it belongs to another account)."""
    row = (
        await conn.execute(
            select(Topup).where(Topup.id == topup_id, Topup.account_id == account_id)
        )
    ).first()
    return None if row is None else _view(row)


async def _set_status(conn: AsyncConnection, topup_id: str, status: str) -> None:
    await conn.execute(
        update(Topup).where(Topup.id == topup_id).values(status=status, updated_at=utcnow())
    )


def _view(row: Row[Any]) -> TopupView:
    return TopupView(
        id=row.id,
        status=row.status,
        amount_cents=int(row.amount_cents),
        currency=row.currency,
        credits=int(row.credits),
        refunded_cents=int(row.refunded_cents),
        disputed_cents=int(row.disputed_cents),
        created_at=row.created_at,
        paid_at=row.paid_at,
    )
