"""The credit held for one generation, and extending it for a dearer fallback route.

A request holds its first route's quote. When that route fails and the next one costs
more, the hold grows by the difference before the attempt, under the same guarantees as
the hold itself: one conditional debit (the balance never goes below zero), the key's
spend limit checked in the same transaction, and the usage row's `held` raised with it, so
whoever closes the row (the settle, a release, the reconciler) gives back exactly what was
taken. An extension the account cannot pay is refused with the reason, and nothing changes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account import spend_limits
from image_router.db.session import unit_of_work
from image_router.kit.money import format_usd
from image_router.ledger import service as ledger
from image_router.usage import service as usage

log = logging.getLogger(__name__)


class _Refused(Exception):
    """Rolls an extension's transaction back; carries the reason it was refused."""


@dataclass
class Hold:
    """`amount` credits held for `generation_id` (what this request has taken so far).

    `limited_key` is the API key whose spend limit applies, None when none does.
    """

    engine: AsyncEngine
    account_id: str
    generation_id: str
    amount: int
    limited_key: str | None = None
    _pending: asyncio.Future[str | None] | None = field(default=None, repr=False)

    async def cover(self, credits: int) -> str | None:
        """Make sure at least `credits` are held: None when they are (extending the hold if
        needed), else why they cannot be (and nothing was changed)."""
        if credits <= self.amount:
            return None
        # Shielded: a client that disconnects must not cut the transaction in half;
        # `finished` waits for it before the hold is given back.
        task = asyncio.ensure_future(self._extend(credits - self.amount))
        self._pending = task
        reason = await asyncio.shield(task)
        self._pending = None
        return reason

    async def finished(self) -> None:
        """Wait for an extension still being written (its request was cancelled), so that
        the row being closed next holds its final amount."""
        task = self._pending
        if task is None:
            return
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "extending the hold of generation %s failed",
                self.generation_id,
                exc_info=task.exception(),
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
