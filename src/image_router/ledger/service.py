"""The ledger: the only code that writes balances.

Every balance change is one conditional UPDATE of `accounts.balance` plus one appended
`ledger_entries` row in the same transaction, so the balance always equals the sum of the
account's entries. Functions take an open connection: the caller owns the transaction.

Entries that answer an outside event (a Stripe session, refund or dispute) carry its id as
`ref`; the unique (kind, ref) constraint, not a prior read, makes applying one twice
impossible, even from two transactions racing. The `*_once` functions return False or None
(and write nothing) when the event was already applied.

Money that leaves through a refund or a lost dispute is taken from the balance only as far
as it goes: `accounts.balance` never goes below zero, so credits already spent cannot be
taken back; the entry records what was actually taken and its `reason` what was not.
"""

from __future__ import annotations

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import ACCOUNTS, LEDGER_ENTRIES, Account, LedgerEntry
from image_router.kit.clock import utcnow

#: Entry kinds that move money into or out of an account, as opposed to spending it: what
#: `/v1/credits` calls deposits is their sum (grants and top-ups, net of refunds, of
#: credits frozen or lost by payment disputes or forfeited at erasure, and of operator
#: deductions), so `credit_usage = deposits - balance` stays the amount spent on
#: generations.
DEPOSIT_KINDS = (
    "grant",
    "topup",
    "refund",
    "dispute_hold",
    "dispute_won",
    "dispute_lost",
    "forfeit",
    "deduction",
)

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
    ref: str | None = None,
) -> int:
    """Add credits (operator grant or top-up); returns the new balance.

    With a `ref`, a second grant of the same (kind, ref) raises `IntegrityError`; use
    `grant_once` to be told instead.
    """
    if amount <= 0:
        raise ValueError("a grant must be a positive amount of credits")
    await _credit(conn, account_id, amount)
    await _append(conn, account_id, amount, kind, reason=reason, ref=ref)
    return await balance(conn, account_id)


async def deduct(conn: AsyncConnection, account_id: str, amount: int, *, reason: str) -> int | None:
    """Take `amount` credits off the balance (an operator's correction); returns the new
    balance, or None (nothing written) when the balance does not cover it.

    Conditional like a hold: the check and the debit are one statement, so a deduction
    racing a generation can never take the balance below zero.
    """
    if amount <= 0:
        raise ValueError("a deduction must be a positive amount of credits")
    result = await conn.execute(_HOLD, {"account": account_id, "amount": amount})
    if result.rowcount != 1:
        await balance(conn, account_id)  # UnknownAccount rather than "not enough"
        return None
    await _append(conn, account_id, -amount, "deduction", reason=reason)
    return await balance(conn, account_id)


async def grant_once(
    conn: AsyncConnection, account_id: str, amount: int, *, kind: str, ref: str, reason: str
) -> bool:
    """Grant `amount` for the outside event `ref`; False (nothing written) if already done.

    Safe to call concurrently: the second transaction's entry collides with the first's on
    the unique (kind, ref) constraint (PostgreSQL makes it wait for the first to commit).
    """
    try:
        async with conn.begin_nested():
            await grant(conn, account_id, amount, reason=reason, kind=kind, ref=ref)
    except IntegrityError:
        return False
    return True


async def take_once(
    conn: AsyncConnection, account_id: str, amount: int, *, kind: str, ref: str, reason: str
) -> int | None:
    """Take up to `amount` credits for the outside event `ref` (a refund, a lost dispute).

    Returns what was taken, which is less than `amount` when the balance is lower: the
    balance never goes below zero. None (nothing written) if `ref` was already applied.
    """
    return await _take(conn, account_id, amount, kind=kind, ref=ref, reason=reason)


async def freeze_once(
    conn: AsyncConnection, account_id: str, amount: int, *, ref: str, reason: str
) -> int | None:
    """Move up to `amount` credits from the balance into `billing_hold` (a dispute opened).

    Returns what was frozen (at most the balance); None if this dispute was already frozen.
    """
    return await _take(
        conn, account_id, amount, kind="dispute_hold", ref=ref, reason=reason, freeze=True
    )


async def settle_frozen_once(
    conn: AsyncConnection,
    account_id: str,
    frozen: int,
    *,
    won: bool,
    shortfall: int,
    ref: str,
    reason: str,
) -> int | None:
    """Close a dispute whose `frozen` credits sit in `billing_hold`.

    Won: the frozen credits go back to the balance. Lost: they are gone for good, and up to
    `shortfall` more (the disputed amount that could not be frozen) is taken from the
    balance. Returns the balance change; None if this dispute was already closed.

    Won and lost are different kinds, so the unique (kind, ref) pair alone cannot stop a
    second, different closing: callers apply the events of one dispute one at a time (the
    payment code locks the top-up's row), and this checks for either closing first.
    """
    if await applied(conn, kinds=("dispute_won", "dispute_lost"), ref=ref):
        return None
    try:
        async with conn.begin_nested():
            if won:
                change = frozen
            else:
                current = await _locked_balance(conn, account_id)
                change = -min(shortfall, current)
            await _append(
                conn,
                account_id,
                change,
                "dispute_won" if won else "dispute_lost",
                reason=reason,
                ref=ref,
            )
            await conn.execute(
                update(_accounts)
                .where(_accounts.c.id == account_id)
                .values(
                    balance=_accounts.c.balance + change,
                    billing_hold=_accounts.c.billing_hold - frozen,
                )
            )
    except IntegrityError:
        return None
    return change


async def forfeit_once(conn: AsyncConnection, account_id: str, *, reason: str) -> int | None:
    """Close an erased account's books: its whole remaining balance is forfeited.

    One entry of kind `forfeit` (ref = the account id, so at most one ever) takes the
    balance to zero; the ledger still sums to the balance. Returns the credits forfeited
    (possibly 0); None if the account was already closed. Credits frozen by an open dispute
    (`billing_hold`) are not touched: the dispute's outcome still settles them.
    """
    try:
        async with conn.begin_nested():
            current = await _locked_balance(conn, account_id)
            await _append(conn, account_id, -current, "forfeit", reason=reason, ref=account_id)
            await conn.execute(
                update(_accounts)
                .where(_accounts.c.id == account_id)
                .values(balance=_accounts.c.balance - current)
            )
    except IntegrityError:
        return None
    return current


async def frozen_by(conn: AsyncConnection, *, ref: str) -> int:
    """Credits frozen by the dispute `ref` (0 if it froze nothing or was never opened)."""
    value = await conn.scalar(
        select(LedgerEntry.amount).where(LedgerEntry.kind == "dispute_hold", LedgerEntry.ref == ref)
    )
    return -int(value or 0)


async def applied(conn: AsyncConnection, *, kinds: tuple[str, ...], ref: str) -> bool:
    """Whether an entry of one of `kinds` answers the outside event `ref`."""
    found = await conn.scalar(
        select(LedgerEntry.id).where(LedgerEntry.kind.in_(kinds), LedgerEntry.ref == ref).limit(1)
    )
    return found is not None


async def balance(conn: AsyncConnection, account_id: str) -> int:
    value = await conn.scalar(select(Account.balance).where(Account.id == account_id))
    if value is None:
        raise UnknownAccount(account_id)
    return int(value)


async def books(conn: AsyncConnection, account_id: str) -> tuple[int, int]:
    """(balance, sum of entries) read in ONE statement, hence from one snapshot.

    Two separate reads may straddle a concurrent commit (SQLite runs plain SELECTs outside
    a transaction; PostgreSQL's READ COMMITTED gives every statement its own snapshot), and
    would then disagree although the books balance at every commit.
    """
    entries = (
        select(func.coalesce(func.sum(LedgerEntry.amount), 0))
        .where(LedgerEntry.account_id == account_id)
        .scalar_subquery()
    )
    row = (
        await conn.execute(select(Account.balance, entries).where(Account.id == account_id))
    ).first()
    if row is None:
        raise UnknownAccount(account_id)
    return int(row[0]), int(row[1])


async def entries_sum(conn: AsyncConnection, account_id: str) -> int:
    total = await conn.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id
        )
    )
    return int(total or 0)


async def deposits(conn: AsyncConnection, account_id: str) -> int:
    """Money paid in and kept: the sum of the `DEPOSIT_KINDS` entries."""
    total = await conn.scalar(
        select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
            LedgerEntry.account_id == account_id, LedgerEntry.kind.in_(DEPOSIT_KINDS)
        )
    )
    return int(total or 0)


async def _take(
    conn: AsyncConnection,
    account_id: str,
    amount: int,
    *,
    kind: str,
    ref: str,
    reason: str,
    freeze: bool = False,
) -> int | None:
    if amount < 0:
        raise ValueError("cannot take a negative amount of credits")
    try:
        async with conn.begin_nested():
            current = await _locked_balance(conn, account_id)
            taken = min(amount, current)
            if taken < amount:
                reason = f"{reason}; {amount - taken} credits not recoverable (already spent)"
            await _append(conn, account_id, -taken, kind, reason=reason, ref=ref)
            values = {"balance": _accounts.c.balance - taken}
            if freeze:
                values["billing_hold"] = _accounts.c.billing_hold + taken
            await conn.execute(update(_accounts).where(_accounts.c.id == account_id).values(values))
    except IntegrityError:
        return None
    return taken


async def _locked_balance(conn: AsyncConnection, account_id: str) -> int:
    # The row lock (PostgreSQL; SQLite has one writer anyway) keeps a concurrent hold from
    # spending what is about to be taken, so the computed amount stays within the balance.
    value = await conn.scalar(
        select(Account.balance).where(Account.id == account_id).with_for_update()
    )
    if value is None:
        raise UnknownAccount(account_id)
    return int(value)


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
    ref: str | None = None,
) -> None:
    await conn.execute(
        _APPEND,
        {
            "account_id": account_id,
            "amount": amount,
            "kind": kind,
            "generation_id": generation_id,
            "reason": reason,
            "ref": ref,
            "created_at": utcnow(),
        },
    )
