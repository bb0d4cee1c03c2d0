"""The credit held for one generation: taken, extended for a dearer fallback route, then
settled (the price kept, the rest given back) or released (all given back).

A request holds its first route's quote. When that route fails and the next one costs
more, the hold grows by the difference before the attempt, under the same guarantees as
the hold itself: one conditional debit (the balance never goes below zero), the key's
spend limit checked in the same transaction, and the usage row's `held` raised with it, so
whoever closes the row (the settle, a release, the reconciler) gives back exactly what was
taken. An extension the account cannot pay is refused with the reason, and nothing changes.

The hold and the close run on every request, so they go through the database driver in
one round trip each (`ledger.direct`), and each is shielded from a client's hang-up as the
group commit's own future rather than as a task; the extension, rarer, and the reconciler
use the same rules through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account import spend_limits
from image_router.db.driver import driver_of
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.kit.shielding import shielded
from image_router.ledger import direct
from image_router.ledger import service as ledger
from image_router.observability import metrics
from image_router.usage import service as usage

log = logging.getLogger(__name__)


class _Refused(Exception):
    """Rolls an extension's transaction back; carries the reason it was refused."""


#: Told how a hold that was being taken when its request was cancelled ended: a future
#: holding what `Hold.take` would have returned, or raising what it would have raised.
TakenAfterCancel = Callable[["asyncio.Future[Hold | None]"], Awaitable[None]]


@dataclass
class Hold:
    """`amount` credits held for `generation_id` (what this request has taken so far).

    `limited_key` is the API key whose spend limit applies, None when none does.
    `through_driver=False` closes it through SQLAlchemy instead of the driver (same rows).
    """

    engine: AsyncEngine
    account_id: str
    generation_id: str
    amount: int
    limited_key: str | None = None
    through_driver: bool = True

    @classmethod
    async def take(
        cls,
        engine: AsyncEngine,
        account_id: str,
        generation_id: str,
        amount: int,
        *,
        limited_key: str | None,
        opening: Callable[[], Awaitable[usage.NewGeneration]],
        likely_covered: bool = False,
        after_cancel: TakenAfterCancel | None = None,
    ) -> Hold | None:
        """Hold `amount` credits and open the generation's usage row, in one transaction.

        None when the balance cannot cover it; raises the key's refusal when its spend
        limit leaves no room (the hold is then rolled back). `opening` builds the row once
        the credit is held, so a refused request seals nothing.

        `likely_covered` (the balance seen at authentication covers `amount`) builds the
        row first instead and sends the hold and the row in one round trip; should the
        hold be refused after all, the row (and its sealed prompt) is thrown away unwritten.

        A cancellation (the client hanging up) does not cut the transaction in half: it
        runs to its end, `after_cancel` receives its outcome (a hold to give back, None,
        or the refusal), and then the cancellation goes on. While the row is built first
        nothing is taken yet, and a cancellation goes on at once.
        """
        hold = cls(engine, account_id, generation_id, amount, limited_key)
        now = utcnow()
        taking: Awaitable[object]
        if likely_covered and driver_of(engine) is not None:
            # Through the driver the hold is the group commit's own future (where it can
            # be): shielding it costs no task, and two fewer trips through the event loop.
            taking = direct.take_hold(
                engine,
                account_id,
                amount,
                generation_id=generation_id,
                row=usage.opening_values(await opening()),
                limited_key=limited_key,
                spend_bounds=partial(spend_limits.bounds, now=now),
            )
        else:
            taking = hold._take_orm(opening)
        then = None
        if after_cancel is not None:
            then = partial(hold._taken_after_cancel, now, after_cancel)
        return hold._taken(await shielded(taking, after_cancel=then), now)

    async def _take_orm(self, opening: Callable[[], Awaitable[usage.NewGeneration]]) -> bool:
        async with unit_of_work(self.engine) as conn:
            if not await ledger.hold(
                conn, self.account_id, self.amount, generation_id=self.generation_id
            ):
                return False
            if self.limited_key is not None:
                # After the hold, in its transaction: raising here rolls the hold back.
                refusal = await spend_limits.check(conn, self.limited_key, self.amount)
                if refusal is not None:
                    raise refusal
            await usage.start(conn, await opening())
        return True

    def _taken(self, answer: object, now: datetime) -> Hold | None:
        """`take`'s outcome from the transaction's: truthy when held, `direct.OverLimit`
        when the key's spend limit left no room."""
        if isinstance(answer, direct.OverLimit):
            raise spend_limits.KeySpendLimitExceeded(
                spend_limits.refusal_message(
                    answer.limit, answer.period, answer.spent, self.amount, now
                )
            )
        return self if answer else None

    async def _taken_after_cancel(
        self, now: datetime, then: TakenAfterCancel, taking: asyncio.Future[object]
    ) -> None:
        outcome: asyncio.Future[Hold | None] = asyncio.get_running_loop().create_future()
        if taking.cancelled():
            outcome.cancel()
        else:
            try:
                outcome.set_result(self._taken(taking.result(), now))
            except Exception as failed:  # the refusal, or the transaction's own failure
                outcome.set_exception(failed)
        await then(outcome)

    async def cover(self, credits: int) -> str | None:
        """Make sure at least `credits` are held: None when they are (extending the hold if
        needed), else why they cannot be (and nothing was changed)."""
        if credits <= self.amount:
            return None
        # Shielded: a client that disconnects must not cut the transaction in half, and the
        # row is closed (released) only after it, holding its final amount.
        return await shielded(self._extend(credits - self.amount), after_cancel=self._failed)

    async def _failed(self, extension: asyncio.Future[str | None]) -> None:
        """Log an extension that failed after its request was cancelled (nobody else will)."""
        if not extension.cancelled() and extension.exception() is not None:
            log.error(
                "extending the hold of generation %s failed",
                self.generation_id,
                exc_info=extension.exception(),
            )

    async def _extend(self, extra: int) -> str | None:
        try:
            async with unit_of_work(self.engine) as conn:
                if not await ledger.hold(
                    conn, self.account_id, extra, generation_id=self.generation_id
                ):
                    return (
                        f"the account's balance cannot cover this route's price "
                        f"(${format_usd(extra)} more than held)"
                    )
                # After the debit, as for the first hold; the row still counts what it held
                # before, so the check sees the whole request.
                if (
                    self.limited_key is not None
                    and await spend_limits.check(conn, self.limited_key, extra) is not None
                ):
                    raise _Refused(
                        f"the API key's spend limit leaves no room for this route's "
                        f"price (${format_usd(extra)} more than held)"
                    )
                if not await usage.extend_held(conn, self.generation_id, extra):
                    raise _Refused("the generation was already closed (its deadline passed)")
        except _Refused as refused:
            return str(refused)
        self.amount += extra
        return None

    async def settle(self, cost: int, finish: usage.Finish) -> int:
        """Close the row as a success, keep `cost` and give the rest of the hold back;
        returns the credits charged.

        Shielded like the hold: a client that disconnects now must not cut the settle in
        half. It runs to its end, and the cancellation goes on after it."""
        # The hold may have grown for a dearer fallback; what the served route did not
        # cost goes back (the row's `held` read as it closes), whichever route that was.
        # Through the driver the close is the group commit's own future: shielding it
        # costs no task, and two fewer trips through the event loop than a coroutine.
        closing = self._closing("success", finish, kept=cost)
        held = await shielded(closing, after_cancel=partial(self._settled_after_cancel, cost))
        return self._charged(held, cost)

    def _charged(self, held: int | None, cost: int) -> int:
        if held is not None:
            return cost
        # The reconciler released this hold already (we outlived the deadline): the
        # client still gets its images, and is not charged twice or at all.
        log.warning("generation %s finished after its hold was released", self.generation_id)
        return 0

    async def _settled_after_cancel(self, cost: int, closing: asyncio.Future[int | None]) -> None:
        # The client is gone but the generation was made: the settle finished and charged.
        charged = self._charged(closing.result(), cost)
        metrics.hold_finished()
        log.info(
            "generation %s: client disconnected during the settle; charged %d credits",
            self.generation_id,
            charged,
        )

    async def release(self, finish: usage.Finish) -> int:
        """Close the row as an error and give the whole hold back; returns the credits
        released (0 when nothing was held)."""
        try:
            held = await self._closing("error", finish, kept=0)
            if held is not None:
                return held
        except Exception:
            # The reconciler will release it after the deadline; say so loudly.
            log.exception("could not release hold of generation %s", self.generation_id)
        return 0

    def _closing(self, status: str, finish: usage.Finish, *, kept: int) -> Awaitable[int | None]:
        """Finish the row, give back what it held beyond `kept`; what it held, or None
        when it was closed already (nothing written)."""
        if self.through_driver and driver_of(self.engine) is not None:
            return direct.close_hold(
                self.engine,
                self.account_id,
                self.generation_id,
                usage.closing_values(status, finish),
                kept=kept,
            )
        return self._close_orm(status, finish, kept)

    async def _close_orm(self, status: str, finish: usage.Finish, kept: int) -> int | None:
        async with unit_of_work(self.engine) as conn:
            held = await usage.finish(conn, self.generation_id, status, finish)
            if held is not None:
                await ledger.release(
                    conn, self.account_id, held - kept, generation_id=self.generation_id
                )
            return held
