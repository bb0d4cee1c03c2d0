"""Refunds and disputes of a paid top-up (`charge.*` events).

Each handler first locks the top-up's row, so every event about one payment is applied one
after another even when Stripe delivers them at the same moment; the ledger refs make a
repeated application a no-op besides.

- Refunds: `charge.amount_refunded` is cumulative, so the debit is the part not debited yet
  (the top-up's `refunded_cents` remembers it). Duplicates and reordering change nothing.
- Disputes: opening one freezes the disputed credits (`accounts.billing_hold`, out of the
  spendable balance); won gives them back, lost makes the loss final.

Credits already spent cannot be taken back: a debit stops at a zero balance and the entry's
reason says how much could not be recovered (see the ledger).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import Topup
from image_router.kit.clock import utcnow
from image_router.ledger import service as ledger
from image_router.payment.amounts import cents_to_credits, format_cents

log = logging.getLogger(__name__)

_DISPUTE_STATUSES = ("disputed", "dispute_lost")


@dataclass(frozen=True)
class WebhookPolicy:
    #: Whether the configured secret key is a live one; events of the other mode are flagged.
    livemode: bool
    currency: str


class Defer(Exception):
    """The event cannot be applied yet; Stripe should deliver it again later."""


def object_id(value: object) -> str | None:
    """The id of a Stripe reference, whether sent as an id or as an expanded object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def refund_status(amount_cents: int, refunded_cents: int) -> str:
    if refunded_cents <= 0:
        return "paid"
    return "refunded" if refunded_cents >= amount_cents else "partially_refunded"


async def refunded(conn: AsyncConnection, charge: dict[str, Any], policy: WebhookPolicy) -> str:
    topup = await _paid_topup(conn, charge)
    if isinstance(topup, str):
        return topup
    total = charge.get("amount_refunded")
    if not _cents(total):
        return f"ignored: amount_refunded {total!r} is not a number of cents"
    if charge.get("currency") != topup.currency:
        log.error("refund of top-up %s in %r ignored", topup.id, charge.get("currency"))
        return f"flagged: refund currency {charge.get('currency')!r}, expected {topup.currency!r}"
    total = min(total, topup.amount_cents)
    delta = total - topup.refunded_cents
    if delta <= 0:
        return f"no change: {format_cents(topup.refunded_cents)} already refunded"
    wanted = cents_to_credits(delta)
    taken = await ledger.take_once(
        conn,
        topup.account_id,
        wanted,
        kind="refund",
        # One entry per cumulative step: the same step can never be debited twice.
        ref=f"{topup.id}:{total}",
        reason=f"Stripe refund of top-up {topup.id}: ${format_cents(delta)}",
    )
    if taken is None:
        return "no change: refund already applied"
    status = topup.status if topup.status in _DISPUTE_STATUSES else None
    await conn.execute(
        update(Topup)
        .where(Topup.id == topup.id)
        .values(
            refunded_cents=total,
            status=status or refund_status(topup.amount_cents, total),
            updated_at=utcnow(),
        )
    )
    outcome = f"refunded {format_cents(delta)}: took {taken} credits"
    if taken < wanted:
        log.warning("refund of top-up %s: %s credits already spent", topup.id, wanted - taken)
        outcome += f", {wanted - taken} not recoverable (already spent)"
    return outcome


async def dispute_created(
    conn: AsyncConnection, dispute: dict[str, Any], policy: WebhookPolicy
) -> str:
    found = await _disputed_topup(conn, dispute)
    if isinstance(found, str):
        return found
    topup, dispute_id, amount = found
    if await ledger.applied(conn, kinds=("dispute_won", "dispute_lost"), ref=dispute_id):
        # Its closing event came first; opening it now would freeze credits for good.
        return "no change: dispute already closed"
    wanted = cents_to_credits(amount)
    frozen = await ledger.freeze_once(
        conn,
        topup.account_id,
        wanted,
        ref=dispute_id,
        reason=f"Stripe dispute {dispute_id} of top-up {topup.id}: ${format_cents(amount)}",
    )
    if frozen is None:
        return "no change: dispute already open"
    await conn.execute(
        update(Topup)
        .where(Topup.id == topup.id)
        .values(disputed_cents=amount, status="disputed", updated_at=utcnow())
    )
    outcome = f"froze {frozen} credits"
    if frozen < wanted:
        outcome += f", {wanted - frozen} already spent"
    return outcome


async def dispute_closed(
    conn: AsyncConnection, dispute: dict[str, Any], policy: WebhookPolicy
) -> str:
    found = await _disputed_topup(conn, dispute)
    if isinstance(found, str):
        return found
    topup, dispute_id, amount = found
    outcome = dispute.get("status")
    if outcome not in ("won", "warning_closed", "lost"):
        return f"ignored: dispute status {outcome!r}"
    won = outcome != "lost"
    frozen = await ledger.frozen_by(conn, ref=dispute_id)
    change = await ledger.settle_frozen_once(
        conn,
        topup.account_id,
        frozen,
        won=won,
        # Lost: what could not be frozen (already spent, or never frozen because this
        # event came first) is taken now, as far as the balance goes.
        shortfall=0 if won else max(0, cents_to_credits(amount) - frozen),
        ref=dispute_id,
        reason=f"Stripe dispute {dispute_id} of top-up {topup.id} {outcome}",
    )
    if change is None:
        return "no change: dispute already closed"
    status = refund_status(topup.amount_cents, topup.refunded_cents) if won else "dispute_lost"
    await conn.execute(
        update(Topup)
        .where(Topup.id == topup.id)
        .values(disputed_cents=amount, status=status, updated_at=utcnow())
    )
    if won:
        return f"dispute {outcome}: released {frozen} credits"
    return f"dispute lost: {frozen} frozen credits kept, {-change} more taken"


async def _paid_topup(conn: AsyncConnection, obj: dict[str, Any]) -> Row[Any] | str:
    """The locked, credited top-up a charge or dispute is about, or why there is none."""
    payment_intent = object_id(obj.get("payment_intent"))
    row = None
    if payment_intent:
        row = (
            await conn.execute(
                select(Topup)
                .where(Topup.stripe_payment_intent_id == payment_intent)
                .with_for_update()
            )
        ).first()
    if row is None:
        # Stripe copies the payment intent's metadata (our ids) onto its charge.
        metadata = obj.get("metadata") or {}
        topup_id = metadata.get("topup_id") if isinstance(metadata, dict) else None
        if isinstance(topup_id, str):
            row = (
                await conn.execute(select(Topup).where(Topup.id == topup_id).with_for_update())
            ).first()
            if row is not None and metadata.get("account_id") not in (None, row.account_id):
                row = None
    if row is None:
        log.warning("stripe %s %s: no top-up for it", obj.get("object"), obj.get("id"))
        return f"ignored: no top-up for payment intent {payment_intent}"
    if row.paid_at is None:
        if row.status == "flagged":
            return f"ignored: top-up {row.id} was never credited (flagged)"
        raise Defer(f"top-up {row.id} has not been credited yet")
    return row


async def _disputed_topup(
    conn: AsyncConnection, dispute: dict[str, Any]
) -> tuple[Row[Any], str, int] | str:
    """The locked top-up a dispute is about, the dispute's id and its amount in cents, or
    why the event cannot be applied."""
    topup = await _paid_topup(conn, dispute)
    if isinstance(topup, str):
        return topup
    dispute_id, amount = dispute.get("id"), dispute.get("amount")
    if not isinstance(dispute_id, str) or not dispute_id:
        return "ignored: dispute without an id"
    if not _cents(amount):
        return f"ignored: dispute amount {amount!r} is not a number of cents"
    assert isinstance(amount, int)
    return topup, dispute_id, amount


def _cents(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
