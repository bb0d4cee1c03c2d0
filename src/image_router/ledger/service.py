"""The ledger: the only code that writes balances.

Every balance change is one conditional UPDATE of `accounts.balance` plus one appended
`ledger_entries` row in the same transaction, so the balance always equals the sum of the
account's entries. Functions take an open connection: the caller owns the transaction.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import ACCOUNTS, LEDGER_ENTRIES, Account, LedgerEntry
from image_router.kit.clock import utcnow

#: Entry kinds that bring money into an account (what `/v1/credits` calls deposits).
DEPOSIT_KINDS = ("grant", "topup")

# The hot statements are built once, with bound parameters: building a SQLAlchemy
# statement per request cost more CPU than running it.
_accounts = ACCOUNTS
_HOLD = (
    update(_accounts)
    .where(_accounts.c.id == bindparam("account"), _accounts.c.balance >= bindparam("amount"))
    .values(balance=_accounts.c.balance - bindparam("amount"))
)
_CREDIT = (
    update(_accounts)
    .where(_accounts.c.id == bindparam("account"))
    .values(balance=_accounts.c.balance + bindparam("amount"))
)
_APPEND = insert(LEDGER_ENTRIES)


class UnknownAccount(LookupError):
    pass


async def hold(conn: AsyncConnection, account_id: str, amount: int, *, generation_id: str) -> bool:
    """Take `amount` credits if the balance covers it; False (and nothing written) if not.

    The check and the debit are one statement, so concurrent holds can never spend the
    same credit twice and the balance never goes below zero.
    """
    if amount <= 0:
        return True
    result = await conn.execute(_HOLD, {"account": account_id, "amount": amount})
    if result.rowcount != 1:
        return False
    await _append(conn, account_id, -amount, "hold", generation_id=generation_id)
    return True


async def release(
    conn: AsyncConnection, account_id: str, amount: int, *, generation_id: str
) -> None:
    """Give back `amount` held credits (all of them on failure, the unused part on success)."""
    if amount <= 0:
        return
    await _credit(conn, account_id, amount)
    await _append(conn, account_id, amount, "release", generation_id=generation_id)


async def grant(
    conn: AsyncConnection,
    account_id: str,
    amount: int,
    *,
    reason: str,
    kind: str = "grant",
) -> int:
    """Add credits (operator grant or top-up); returns the new balance."""
    if amount <= 0:
        raise ValueError("a grant must be a positive amount of credits")
    await _credit(conn, account_id, amount)
    await _append(conn, account_id, amount, kind, reason=reason)
    return await balance(conn, account_id)


async def balance(conn: AsyncConnection, account_id: str) -> int:
    value = await conn.scalar(select(Account.balance).where(Account.id == account_id))
    if value is None:
        raise UnknownAccount(account_id)
    return int(value)


async def entries_sum(conn: AsyncConnection, account_id: str) -> int:
    total = await conn.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id
        )
    )
    return int(total or 0)


async def deposits(conn: AsyncConnection, account_id: str) -> int:
    total = await conn.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id, LedgerEntry.kind.in_(DEPOSIT_KINDS)
        )
    )
    return int(total or 0)


async def _credit(conn: AsyncConnection, account_id: str, amount: int) -> None:
    result = await conn.execute(_CREDIT, {"account": account_id, "amount": amount})
    if result.rowcount != 1:
        raise UnknownAccount(account_id)


async def _append(
    conn: AsyncConnection,
    account_id: str,
    amount: int,
    kind: str,
    *,
    generation_id: str | None = None,
    reason: str | None = None,
) -> None:
    await conn.execute(
        _APPEND,
        {
            "account_id": account_id,
            "amount": amount,
            "kind": kind,
            "generation_id": generation_id,
            "reason": reason,
            "created_at": utcnow(),
        },
    )
