"""The ledger: the only code that writes balances.

Every balance change is one conditional UPDATE of `accounts.balance` plus one appended
`ledger_entries` row in the same transaction, so the balance always equals the sum of the
account's entries. Functions take an open connection: the caller owns the transaction.
"""

from __future__ import annotations

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import Account, LedgerEntry
from image_router.kit.clock import utcnow

#: Entry kinds that bring money into an account (what `/v1/credits` calls deposits).
DEPOSIT_KINDS = ("grant", "topup")


class UnknownAccount(LookupError):
    pass


async def hold(conn: AsyncConnection, account_id: str, amount: int, *, generation_id: str) -> bool:
    """Take `amount` credits if the balance covers it; False (and nothing written) if not.

    The check and the debit are one statement, so concurrent holds can never spend the
    same credit twice and the balance never goes below zero.
    """
    if amount <= 0:
        return True
    result = await conn.execute(
        update(Account)
        .where(Account.id == account_id, Account.balance >= amount)
        .values(balance=Account.balance - amount)
    )
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
    result = await conn.execute(
        update(Account).where(Account.id == account_id).values(balance=Account.balance + amount)
    )
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
        insert(LedgerEntry).values(
            account_id=account_id,
            amount=amount,
            kind=kind,
            generation_id=generation_id,
            reason=reason,
            created_at=utcnow(),
        )
    )
