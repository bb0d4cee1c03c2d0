"""`Limits`: every check of spec §6 in the order the reference applies them.

general limiter (every route, by IP) → banned networks → generation limiter (by IP) →
authentication → account limiter (by account, scaled by balance) → validation → free tier.

The latest decision is kept in the request's ASGI state; `RateLimitHeaders` writes its
`RateLimit-*` headers on the response, so a generation answers with the account limiter's.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from image_router.errors import Forbidden, RateLimited
from image_router.limits.bans import BanList
from image_router.limits.client_ip import ClientIpPolicy
from image_router.limits.free_tier import FreeTier
from image_router.limits.rates import AccountScale, Decision, Rate, WindowCounter

GENERAL = "Too many requests, please try again later."
GENERATION_IP = "Too many image generation requests, please try again later."
ACCOUNT = "API key rate limit exceeded, please try again later."
ACCESS_DENIED = "Access denied"

DECISION_KEY = "image_router.rate_limit"


@dataclass(frozen=True)
class RatePolicy:
    general: Rate
    generation_ip: Rate
    image: AccountScale
    video: AccountScale


class Limits:
    def __init__(
        self,
        *,
        rates: RatePolicy | None,
        counter: WindowCounter,
        bans: BanList,
        free_tier: FreeTier,
        client_ip: ClientIpPolicy,
    ) -> None:
        """`rates` None turns the three rate limiters off (bans and the free tier stay)."""
        self.rates = rates
        self.counter = counter
        self.bans = bans
        self.free_tier = free_tier
        self.client_ip_policy = client_ip

    def client_ip(self, scope: MutableMapping[str, Any]) -> str | None:
        return self.client_ip_policy.of_scope(scope)

    async def general(self, scope: MutableMapping[str, Any]) -> Decision | None:
        """Count a request on any route; the caller answers 429 when it is not allowed."""
        if self.rates is None:
            return None
        decision = await self.counter.hit(
            "general", self.client_ip(scope) or "-", self.rates.general
        )
        _remember(scope, decision)
        return decision

    async def guard_generation_ip(self, scope: MutableMapping[str, Any]) -> None:
        """Before authentication: banned networks (403), then the per-IP generation rate."""
        ip = self.client_ip(scope)
        if await self.bans.is_banned(ip):
            raise Forbidden(ACCESS_DENIED)
        if self.rates is not None:
            decision = await self.counter.hit("generation-ip", ip or "-", self.rates.generation_ip)
            _enforce(scope, decision, GENERATION_IP)

    async def guard_account(
        self,
        scope: MutableMapping[str, Any],
        modality: Literal["image", "video"],
        account_id: str,
        balance: int,
    ) -> None:
        """After authentication: the account's rate, read from its balance at that moment.
        Images and edits share one counter; videos have their own."""
        if self.rates is None:
            return
        scale = self.rates.image if modality == "image" else self.rates.video
        decision = await self.counter.hit(f"account-{modality}", account_id, scale.rate(balance))
        _enforce(scope, decision, ACCOUNT)

    async def close(self) -> None:
        await self.counter.close()


def _remember(scope: MutableMapping[str, Any], decision: Decision | None) -> None:
    if decision is not None:
        scope.setdefault("state", {})[DECISION_KEY] = decision


def _enforce(scope: MutableMapping[str, Any], decision: Decision | None, message: str) -> None:
    _remember(scope, decision)
    if decision is not None and not decision.allowed:
        raise RateLimited(message, headers=decision.headers())


def latest_decision(scope: MutableMapping[str, Any]) -> Decision | None:
    state = scope.get("state")
    decision: Decision | None = state.get(DECISION_KEY) if state is not None else None
    return decision
