"""The `:free` models (spec §6.3): who may use them through the API, and how often a day.

Counted from the usage log (every status, like the reference), per account and per IP,
over the current UTC day. The count and the later hold are not atomic, so requests racing
each other may overshoot a cap by the number in flight; the reference behaves the same,
and a cap on free calls does not justify serialising them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, literal_column, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql.selectable import ScalarSelect

from image_router.db.outage import is_outage
from image_router.db.tables import GENERATIONS
from image_router.errors import Forbidden, InternalError, RateLimited
from image_router.kit.clock import utcnow

log = logging.getLogger(__name__)

WEBSITE_ONLY = (
    "Free models are only available on the website (eg {generate_url}). To gain API access, "
    "please deposit any amount (free models cost $0, but one time deposit needed to prevent "
    "abuse). More info about pricing: {pricing_url}"
)
FUNDED_CAP = (
    "Daily limit of {funded} free requests reached. There is no limit on paid models, so you "
    'can continue by removing ":free" from the model name.'
)
UNFUNDED_CAP = (
    "Daily limit of {unfunded} free requests reached. Please deposit any amount to get "
    "access to {funded} daily free generations: {pricing_url}"
)
COUNT_FAILED = "Failed to verify free-tier usage limit"


class DepositRequired(Forbidden):
    error_type = "deposit_required"
    code = "deposit_required"


_g = GENERATIONS
# The same literal as the partial index `ix_generations_free_ip_created_at`, so both
# PostgreSQL and SQLite can use it for the per-IP count.
FREE_ROWS = _g.c.model.like(literal_column("'%:free%'"))


def _count_where(column: str) -> ScalarSelect[int]:
    return (
        select(func.count())
        .select_from(_g)
        .where(
            _g.c[column] == bindparam(column),
            _g.c.created_at >= bindparam("start", type_=_g.c.created_at.type),
            _g.c.created_at < bindparam("end", type_=_g.c.created_at.type),
            FREE_ROWS,
        )
        .scalar_subquery()
    )


# One round trip for both counts; a None account or IP matches no row (`= NULL`).
_COUNTS = select(_count_where("account_id"), _count_where("ip"))


def day_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=1)


@dataclass
class FreeTier:
    engine: AsyncEngine
    funded_daily: int = 50
    unfunded_daily: int = 10
    # This server's pages; the composition root passes them absolute (`resources.own_link`).
    generate_url: str = "/playground"
    pricing_url: str = "/pricing"
    # Replaceable so tests can cross midnight; must return an aware UTC datetime.
    clock: Callable[[], datetime] = field(default=utcnow)

    async def check(
        self,
        requested_model: str,
        *,
        account_id: str | None,
        funded: bool,
        via_web_token: bool,
        ip: str | None,
    ) -> None:
        """Raise when this request for a `:free` model is not allowed.

        `requested_model` is the model as sent (before aliases), as in the reference;
        `account_id` None is the shared guest account, which only the per-IP cap binds.
        """
        if ":free" not in requested_model:
            return
        if not funded and not via_web_token:
            raise Forbidden(
                WEBSITE_ONLY.format(generate_url=self.generate_url, pricing_url=self.pricing_url)
            )
        now = self.clock()
        start, end = day_bounds(now)
        by_account, by_ip = await self._counts(account_id, ip, start, end)
        limit = self.funded_daily if funded else self.unfunded_daily
        if by_account < limit and by_ip < limit:
            return
        if funded:
            # Unlike the reference, say when the cap lifts: the next UTC midnight.
            raise RateLimited(
                FUNDED_CAP.format(funded=self.funded_daily),
                headers={"Retry-After": str(max(1, int((end - now).total_seconds())))},
            )
        raise DepositRequired(
            UNFUNDED_CAP.format(
                unfunded=self.unfunded_daily, funded=self.funded_daily, pricing_url=self.pricing_url
            )
        )

    async def allowance(self, *, account_id: str | None, funded: bool, ip: str | None) -> Allowance:
        """Today's `:free` requests left for this caller, counted exactly as `check` counts
        them (the busier of the account and the address)."""
        now = self.clock()
        start, end = day_bounds(now)
        by_account, by_ip = await self._counts(account_id, ip, start, end)
        limit = self.funded_daily if funded else self.unfunded_daily
        return Allowance(limit=limit, used=min(limit, max(by_account, by_ip)), resets_at=end)

    async def _counts(
        self, account_id: str | None, ip: str | None, start: datetime, end: datetime
    ) -> tuple[int, int]:
        try:
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(
                        _COUNTS, {"account_id": account_id, "ip": ip, "start": start, "end": end}
                    )
                ).one()
        except SQLAlchemyError as exc:
            if is_outage(exc):
                raise  # the app answers 503 database_unavailable (app.py `_database_outage`)
            log.exception("free-tier usage count failed")
            raise InternalError(COUNT_FAILED) from exc
        return int(row[0]), int(row[1])


@dataclass(frozen=True)
class Allowance:
    """`:free` requests a caller may still make today (UTC)."""

    limit: int
    used: int
    resets_at: datetime

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)
