"""Operator credit adjustments: a grant or a deduction, with its reason in the ledger entry
and in the audit log (`credit_grant`, `credit_deduct`).

Balances are written by the ledger only. One grant above the cap (ADMIN_GRANT_MAX_USD)
needs an explicit override, so a mistyped amount does not mint a fortune; a deduction never
takes a balance below zero (one conditional statement, like a hold).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import Account
from image_router.errors import OperatorError
from image_router.kit.money import format_usd
from image_router.ledger import service as ledger
from image_router.privacy import audit

REASON_MAX = 500
OVERRIDE_NOTE = " (above the grant cap; override confirmed)"


@dataclass(frozen=True)
class Operator:
    """Who acts: the login name running the CLI, or the admin account signed in to `/admin`."""

    actor_id: str
    request_id: str | None = None


class OverCap(OperatorError):
    """A grant above the cap without the override."""

    def __init__(self, amount: int, cap: int) -> None:
        super().__init__(
            f"${format_usd(amount)} is more than one grant may be without confirming "
            f"(ADMIN_GRANT_MAX_USD ${format_usd(cap)})"
        )
        self.amount = amount
        self.cap = cap


class NotEnoughCredit(OperatorError):
    """A deduction larger than the balance (nothing was taken)."""


def checked_reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise OperatorError("a reason is required (it is kept in the ledger and the audit log)")
    if len(reason) > REASON_MAX:
        raise OperatorError(f"the reason must be at most {REASON_MAX} characters")
    return reason


async def _require_open_account(conn: AsyncConnection, account_id: str) -> None:
    status = await conn.scalar(select(Account.status).where(Account.id == account_id))
    if status is None:
        raise OperatorError(f"no account with id {account_id}")
    if status == "deleted":
        raise OperatorError("this account has been erased; its books are closed")


async def grant(
    conn: AsyncConnection,
    account_id: str,
    amount: int,
    *,
    reason: str,
    by: Operator,
    cap: int,
    force: bool = False,
) -> int:
    """Add `amount` credits; returns the new balance. Above `cap` only with `force`."""
    reason = checked_reason(reason)
    if amount <= 0:
        raise OperatorError("the amount must be positive")
    if amount > cap and not force:
        raise OverCap(amount, cap)
    await _require_open_account(conn, account_id)
    balance = await ledger.grant(conn, account_id, amount, reason=reason)
    await audit.record(
        conn,
        actor_type="operator",
        actor_id=by.actor_id,
        subject_account_id=account_id,
        action="credit_grant",
        reason=reason + (OVERRIDE_NOTE if amount > cap else ""),
        request_id=by.request_id,
    )
    return balance


async def deduct(
    conn: AsyncConnection, account_id: str, amount: int, *, reason: str, by: Operator
) -> int:
    """Take `amount` credits off the balance; returns the new balance. Refused (nothing
    written) when the balance does not cover it."""
    reason = checked_reason(reason)
    if amount <= 0:
        raise OperatorError("the amount must be positive")
    await _require_open_account(conn, account_id)
    balance = await ledger.deduct(conn, account_id, amount, reason=reason)
    if balance is None:
        current = await ledger.balance(conn, account_id)
        raise NotEnoughCredit(
            f"cannot deduct ${format_usd(amount)}: the balance is ${format_usd(current)} "
            "(a deduction never takes a balance below zero)"
        )
    await audit.record(
        conn,
        actor_type="operator",
        actor_id=by.actor_id,
        subject_account_id=account_id,
        action="credit_deduct",
        reason=reason,
        request_id=by.request_id,
    )
    return balance
