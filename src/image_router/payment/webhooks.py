"""Stripe webhook events → top-up states and ledger entries, each exactly once (STR-3…6).

Stripe delivers an event at least once, in no guaranteed order, and two events can describe
one change (a session completed, then its asynchronous payment succeeded). So:

- every event is recorded in `stripe_events` in the same transaction as its effects; one
  already processed is answered 200 with no effect (a concurrent redelivery waits on the
  primary key, then sees it processed);
- crediting is guarded by the ledger's unique (kind, ref) pair with ref = the session id,
  so two different events for one session cannot both credit, even at the same instant;
- refunds work from the charge's cumulative `amount_refunded`, so duplicates and reordering
  change nothing (`charges`);
- an event that cannot be applied yet (a refund for a top-up whose payment event has not
  arrived) is rolled back and answered 503, so Stripe delivers it again later.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.db.session import unit_of_work
from image_router.db.tables import Account, StripeEvent, Topup
from image_router.errors import GatewayError, InvalidRequest
from image_router.kit.clock import utcnow
from image_router.ledger import service as ledger
from image_router.payment import charges
from image_router.payment.amounts import cents_to_credits, format_cents
from image_router.payment.charges import Defer, WebhookPolicy, object_id

log = logging.getLogger(__name__)

Handler = Callable[[AsyncConnection, dict[str, Any], WebhookPolicy], Awaitable[str]]


class InvalidEvent(InvalidRequest):
    code = "invalid_event"


class RetryLater(GatewayError):
    status = 503
    error_type = "service_unavailable"
    code = "retry_later"


@dataclass(frozen=True)
class Received:
    event_id: str
    type: str
    outcome: str


async def process_event(
    engine: AsyncEngine, event: Mapping[str, Any], policy: WebhookPolicy
) -> Received:
    """Apply one verified event; returns what was done (also stored as its outcome)."""
    event_id, event_type, obj = _parse(event)
    try:
        async with unit_of_work(engine) as conn:
            if not await _claim(conn, event_id, event_type):
                return Received(event_id, event_type, "duplicate: already processed")
            outcome = await _apply(conn, event, event_type, obj, policy)
            await conn.execute(
                update(StripeEvent)
                .where(StripeEvent.event_id == event_id)
                .values(processed_at=utcnow(), outcome=outcome)
            )
    except Defer as exc:
        log.warning("stripe event %s (%s) deferred: %s", event_id, event_type, exc)
        async with unit_of_work(engine) as conn:
            await _note_deferred(conn, event_id, event_type, f"deferred: {exc}")
        raise RetryLater(f"Event {event_id} cannot be applied yet ({exc}); retry later.") from None
    log.info("stripe event %s (%s): %s", event_id, event_type, outcome)
    return Received(event_id, event_type, outcome)


def _parse(event: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    event_id, event_type, data = event.get("id"), event.get("type"), event.get("data")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        raise InvalidEvent("not a Stripe event: id and type are required")
    if not 0 < len(event_id) <= 255 or not 0 < len(event_type) <= 100:
        raise InvalidEvent("not a Stripe event: id or type of an impossible length")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict):
        raise InvalidEvent(f"Stripe event {event_id} has no data.object")
    return event_id, event_type, obj


async def _claim(conn: AsyncConnection, event_id: str, event_type: str) -> bool:
    """Record the event; False if it was already processed (then nothing is to be done)."""
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(StripeEvent).values(event_id=event_id, type=event_type, received_at=utcnow())
            )
        return True
    except IntegrityError:
        # Seen before: processed, or deferred (then it is applied now). The row lock keeps
        # two redeliveries of a deferred event from applying it side by side.
        processed_at = await conn.scalar(
            select(StripeEvent.processed_at)
            .where(StripeEvent.event_id == event_id)
            .with_for_update()
        )
        return processed_at is None


async def _note_deferred(conn: AsyncConnection, event_id: str, event_type: str, why: str) -> None:
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(StripeEvent).values(
                    event_id=event_id, type=event_type, received_at=utcnow(), outcome=why
                )
            )
    except IntegrityError:
        await conn.execute(
            update(StripeEvent)
            .where(StripeEvent.event_id == event_id, StripeEvent.processed_at.is_(None))
            .values(outcome=why)
        )


async def _apply(
    conn: AsyncConnection,
    event: Mapping[str, Any],
    event_type: str,
    obj: dict[str, Any],
    policy: WebhookPolicy,
) -> str:
    livemode = event.get("livemode")
    if isinstance(livemode, bool) and livemode != policy.livemode:
        log.error(
            "stripe event %s: livemode=%s does not match the secret key", event["id"], livemode
        )
        mode = f"livemode={str(livemode).lower()} does not match the configured key"
        if event_type in _PAYING and obj.get("payment_status") == "paid":
            await _flag_paid_session(conn, obj)
        return f"flagged: {mode}"
    handler = _HANDLERS.get(event_type)
    if handler is None:
        return "ignored: event type not handled"
    return await handler(conn, obj, policy)


# ----------------------------------------------------------------------------- sessions

#: Events that say a session was paid (and so may credit its top-up).
_PAYING = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})


async def _flag_paid_session(conn: AsyncConnection, session: dict[str, Any]) -> None:
    """A paid session refused before crediting leaves its top-up `flagged`, as a wrong
    currency does: the money is at Stripe, so the operator refunds it there. Left `pending`,
    an erasure would try to expire a session that is already complete."""
    topup = await _topup_for_session(conn, session)
    if topup is not None:
        await _move(
            conn, topup.id, "flagged", only_from=("pending", "processing", "failed", "expired")
        )


async def _completed(conn: AsyncConnection, session: dict[str, Any], policy: WebhookPolicy) -> str:
    topup = await _topup_for_session(conn, session)
    if topup is None:
        return f"ignored: no top-up for checkout session {session.get('id')}"
    await _link(conn, topup, session)
    payment_status = session.get("payment_status")
    if payment_status == "paid":
        return await _fulfil(conn, topup, session, policy)
    if payment_status == "unpaid":
        # A delayed payment method: async_payment_succeeded or _failed follows.
        await _move(conn, topup.id, "processing", only_from=("pending",))
        return "awaiting asynchronous payment"
    return f"ignored: payment_status {payment_status}"


async def _async_succeeded(
    conn: AsyncConnection, session: dict[str, Any], policy: WebhookPolicy
) -> str:
    topup = await _topup_for_session(conn, session)
    if topup is None:
        return f"ignored: no top-up for checkout session {session.get('id')}"
    await _link(conn, topup, session)
    if session.get("payment_status") != "paid":
        return f"ignored: payment_status {session.get('payment_status')}"
    return await _fulfil(conn, topup, session, policy)


def _closing(status: str) -> Handler:
    async def handle(conn: AsyncConnection, session: dict[str, Any], _: WebhookPolicy) -> str:
        topup = await _topup_for_session(conn, session)
        if topup is None:
            return f"ignored: no top-up for checkout session {session.get('id')}"
        if await _move(conn, topup.id, status, only_from=("pending", "processing")):
            return f"top-up {status}"
        return f"no change: top-up is {topup.status}"

    return handle


async def _fulfil(
    conn: AsyncConnection, topup: Row[Any], session: dict[str, Any], policy: WebhookPolicy
) -> str:
    """Credit the top-up once. The amount comes from the verified event (STR-3)."""
    currency, amount = session.get("currency"), session.get("amount_total")
    problem = None
    if currency != policy.currency or currency != topup.currency:
        problem = f"currency {currency!r}, expected {topup.currency!r}"
    elif not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        problem = f"amount_total {amount!r} is not a positive number of cents"
    if problem is None and await _account_closed(conn, topup.account_id):
        # Erased (or being erased) between checkout and payment: crediting a tombstone
        # would resurrect a balance nobody can use. The operator refunds it in Stripe.
        problem = "the account was deleted; refund the payment in Stripe"
    if problem is not None:
        log.error("top-up %s paid but not credited: %s", topup.id, problem)
        await _move(
            conn, topup.id, "flagged", only_from=("pending", "processing", "failed", "expired")
        )
        return f"flagged: {problem}; nothing credited"
    assert isinstance(amount, int)
    credits = cents_to_credits(amount)
    credited = await ledger.grant_once(
        conn,
        topup.account_id,
        credits,
        kind="topup",
        ref=session["id"],
        reason=f"Stripe top-up {topup.id} (${format_cents(amount)})",
    )
    if not credited:
        return "no change: top-up already credited"
    if amount != topup.amount_cents:
        log.warning("top-up %s: paid %s cents, asked %s", topup.id, amount, topup.amount_cents)
    now = utcnow()
    await conn.execute(
        update(Topup)
        .where(Topup.id == topup.id)
        .values(status="paid", amount_cents=amount, credits=credits, paid_at=now, updated_at=now)
    )
    return f"credited {credits} credits"


async def _account_closed(conn: AsyncConnection, account_id: str) -> bool:
    status = await conn.scalar(select(Account.status).where(Account.id == account_id))
    return status != "active"


async def _topup_for_session(conn: AsyncConnection, session: dict[str, Any]) -> Row[Any] | None:
    session_id = session.get("id")
    if not isinstance(session_id, str):
        raise InvalidEvent("checkout session without an id")
    row = (
        await conn.execute(select(Topup).where(Topup.stripe_checkout_session_id == session_id))
    ).first()
    if row is not None:
        return row
    # The session id is stored after Stripe answers; should that write have failed, our
    # own ids travel in the session (client_reference_id and metadata).
    metadata = session.get("metadata") or {}
    topup_id = session.get("client_reference_id") or metadata.get("topup_id")
    if not isinstance(topup_id, str):
        return None
    row = (await conn.execute(select(Topup).where(Topup.id == topup_id))).first()
    if row is None or row.stripe_checkout_session_id is not None:
        return None
    if metadata.get("account_id") not in (None, row.account_id):
        return None
    await conn.execute(
        update(Topup).where(Topup.id == topup_id).values(stripe_checkout_session_id=session_id)
    )
    return row


async def _link(conn: AsyncConnection, topup: Row[Any], session: dict[str, Any]) -> None:
    """Remember the payment intent (refunds and disputes name it) and the customer."""
    payment_intent = object_id(session.get("payment_intent"))
    if payment_intent and topup.stripe_payment_intent_id is None:
        await conn.execute(
            update(Topup)
            .where(Topup.id == topup.id, Topup.stripe_payment_intent_id.is_(None))
            .values(stripe_payment_intent_id=payment_intent)
        )
    customer = object_id(session.get("customer"))
    if customer:
        await conn.execute(
            update(Account)
            .where(
                Account.id == topup.account_id,
                Account.stripe_customer_id.is_(None),
                Account.status == "active",  # never re-link an erased account
            )
            .values(stripe_customer_id=customer)
        )


async def _move(
    conn: AsyncConnection, topup_id: str, status: str, *, only_from: tuple[str, ...]
) -> bool:
    result = await conn.execute(
        update(Topup)
        .where(Topup.id == topup_id, Topup.status.in_(only_from))
        .values(status=status, updated_at=utcnow())
    )
    return bool(result.rowcount)


_HANDLERS: dict[str, Handler] = {
    "checkout.session.completed": _completed,
    "checkout.session.async_payment_succeeded": _async_succeeded,
    "checkout.session.async_payment_failed": _closing("failed"),
    "checkout.session.expired": _closing("expired"),
    "charge.refunded": charges.refunded,
    "charge.dispute.created": charges.dispute_created,
    "charge.dispute.closed": charges.dispute_closed,
}
