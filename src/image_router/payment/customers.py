"""Forgetting an account at Stripe when it is erased (privacy-payments.md STR-8).

First every Checkout Session still open for one of the account's top-ups is expired, so
nobody can pay into an account that no longer exists; then the Stripe Customer is deleted,
which removes the saved cards and billing details Stripe holds for the person. Both steps
are safe to repeat: a session that is no longer open and a customer already gone count as
done, so an erasure job that crashed half-way simply runs this again.

The local `topups` rows stay (accounting); they hold only ids and amounts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.db.session import unit_of_work
from image_router.db.tables import Account, Topup
from image_router.kit.clock import utcnow
from image_router.payment.stripe_api import StripeGateway

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StripeForgotten:
    expired_sessions: tuple[str, ...]  # sessions this call closed
    customer_id: str | None  # the account's customer, if it had one
    customer_deleted: bool  # False: there was none, or it was already gone


async def forget_customer(
    engine: AsyncEngine, gateway: StripeGateway, account_id: str
) -> StripeForgotten:
    """Expire the account's open Checkout Sessions, then delete its Stripe Customer.

    Raises `StripeUnavailable` when Stripe cannot be reached; nothing is lost then, and the
    caller retries later. Runs without a transaction open while Stripe is called.
    """
    async with unit_of_work(engine) as conn:
        customer_id = await conn.scalar(
            select(Account.stripe_customer_id).where(Account.id == account_id)
        )
        open_sessions = (
            await conn.scalars(
                select(Topup.stripe_checkout_session_id).where(
                    Topup.account_id == account_id,
                    Topup.status == "pending",
                    Topup.stripe_checkout_session_id.is_not(None),
                )
            )
        ).all()
    expired: list[str] = []
    for session_id in open_sessions:
        assert session_id is not None  # filtered above
        if await gateway.expire_checkout_session(session_id):
            expired.append(session_id)
    if expired:
        # Stripe's `checkout.session.expired` webhook says the same, later. Sessions that
        # were no longer open are left to their own webhook (paid, or expired by Stripe).
        async with unit_of_work(engine) as conn:
            await conn.execute(
                update(Topup)
                .where(
                    Topup.account_id == account_id,
                    Topup.status == "pending",
                    Topup.stripe_checkout_session_id.in_(expired),
                )
                .values(status="expired", updated_at=utcnow())
            )
    deleted = bool(customer_id) and await gateway.delete_customer(str(customer_id))
    if customer_id and not deleted:
        log.info("stripe customer %s of account %s was already deleted", customer_id, account_id)
    return StripeForgotten(tuple(expired), customer_id, deleted)
