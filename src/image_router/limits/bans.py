"""Banned addresses and networks (spec §6.2): from configuration and from the database.

Operators manage the database list with `image-router bans`. Each worker re-reads it at
most every `refresh_s` seconds instead of on every generation request: a ban answers abuse
that has been going on for a while, so a few more seconds until every worker applies it
cost nothing, while a query per request would put the bans table on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.db.tables import BannedNetwork
from image_router.kit.clock import utcnow
from image_router.kit.networks import (
    Network,
    NetworkError,
    NetworkSet,
    canonical,
    parse_address,
    parse_network,
)

log = logging.getLogger(__name__)


class BanError(ValueError):
    """Bad input to a ban operation; the message is meant for the operator."""


@dataclass(frozen=True)
class Ban:
    network: str
    reason: str | None
    created_at: datetime


async def add_ban(conn: AsyncConnection, network: str, reason: str | None) -> Ban:
    """Ban an address or network; returns it as stored (canonical spelling)."""
    ban = Ban(canonical(parse_network(network)), (reason or "").strip() or None, utcnow())
    try:
        async with conn.begin_nested():
            await conn.execute(
                insert(BannedNetwork).values(
                    network=ban.network, reason=ban.reason, created_at=ban.created_at
                )
            )
    except IntegrityError:
        raise BanError(f"{ban.network} is already banned") from None
    return ban


async def remove_ban(conn: AsyncConnection, network: str) -> str:
    name = canonical(parse_network(network))
    result = await conn.execute(delete(BannedNetwork).where(BannedNetwork.network == name))
    if result.rowcount != 1:
        raise BanError(f"{name} is not banned (in the database)")
    return name


async def list_bans(conn: AsyncConnection) -> list[Ban]:
    rows = (await conn.execute(select(BannedNetwork).order_by(BannedNetwork.created_at))).all()
    return [Ban(r.network, r.reason, r.created_at) for r in rows]


async def load_networks(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as conn:
        return list((await conn.scalars(select(BannedNetwork.network))).all())


class BanList:
    """Configured networks, plus the database's as of at most `refresh_s` seconds ago."""

    def __init__(
        self,
        configured: Iterable[Network],
        load: Callable[[], Awaitable[Iterable[str]]] | None,
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.configured = NetworkSet(configured)
        self._load = load
        self._refresh_s = refresh_s
        self._clock = clock
        self._stored = NetworkSet()
        self._expires_at = float("-inf")
        self._lock = asyncio.Lock()

    async def is_banned(self, ip: str | None) -> bool:
        address = parse_address(ip)
        if address is None:
            return False
        if self.configured.contains(address):
            return True
        return (await self._current()).contains(address)

    async def _current(self) -> NetworkSet:
        if self._load is None or self._clock() < self._expires_at:
            return self._stored
        async with self._lock:  # one reload per worker, not one per waiting request
            if self._clock() >= self._expires_at:
                self._stored = NetworkSet(_parsed(await self._load()))
                self._expires_at = self._clock() + self._refresh_s
        return self._stored


def _parsed(rows: Iterable[str]) -> list[Network]:
    networks = []
    for row in rows:
        try:
            networks.append(parse_network(row))
        except NetworkError as exc:
            # Rows come from `bans add`, which validates; a hand-edited bad row must not
            # stop every generation, so it is reported and skipped.
            log.warning("ignoring banned_networks row: %s", exc)
    return networks
