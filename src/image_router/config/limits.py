"""Rate limits, the free tier, bans and how the client's address is found (spec §6)."""

from __future__ import annotations

from decimal import Decimal

import limits
from pydantic import Field, field_validator

from image_router.config.group import Group
from image_router.kit.networks import canonical, parse_network


def check_rate(value: str) -> str:
    """A rate in the `limits` notation: "20/second", "6000/minute", "100 per 10 seconds"."""
    limits.parse(value)
    return value


class LimitsSettings(Group):
    rate_limits_enabled: bool = Field(
        default=True,
        description="the three rate limiters below (bans and the free tier stay on); turn "
        "off for load tests",
    )
    rate_limit_general: str = Field(
        default="20/second",
        description="per client IP, every route (`N/second`, `N/minute`, `N per 10 seconds`)",
    )
    rate_limit_generation_ip: str = Field(
        default="6000/minute", description="per client IP, the three generation routes together"
    )
    # Per account per second: one more request for every STEP_USD of balance, within MIN..MAX.
    rate_limit_account_image_step_usd: Decimal = Field(
        default=Decimal("0.25"),
        description="images + edits per second per account: one more for every this many "
        "USD of balance",
    )
    rate_limit_account_image_min: int = Field(
        default=6, description="images + edits per second per account at a zero balance"
    )
    rate_limit_account_image_max: int = Field(
        default=100, description="images + edits per second per account, at most"
    )
    rate_limit_account_video_step_usd: Decimal = Field(
        default=Decimal("6"),
        description="videos per second per account: one more for every this many USD of balance",
    )
    rate_limit_account_video_min: int = Field(
        default=1, description="videos per second per account at a zero balance"
    )
    rate_limit_account_video_max: int = Field(
        default=20, description="videos per second per account, at most"
    )
    free_daily_limit_funded: int = Field(
        default=50, description="`:free` requests per UTC day per account with credit"
    )
    free_daily_limit_unfunded: int = Field(
        default=10, description="`:free` requests per UTC day per client IP, unfunded accounts"
    )
    generate_url: str | None = Field(
        default=None,
        description="the website page named when an unfunded API key asks for a `:free` "
        "model; unset: this server's `/playground` (`PUBLIC_URL`)",
    )
    trusted_proxy_count: int = Field(
        default=0,
        ge=0,
        description="reverse proxies in front: `0` uses the socket peer; `N` the Nth address "
        "from the right of `X-Forwarded-For`",
    )
    client_ip_header: str | None = Field(
        default=None,
        description="e.g. `CF-Connecting-IP`: read first, only when `TRUSTED_PROXY_COUNT` > 0",
    )
    banned_networks: list[str] = Field(
        default_factory=list,
        description="addresses or CIDR networks refused on the generation routes, "
        "comma-separated (also `image-router bans`)",
    )
    bans_refresh_s: float = Field(
        default=5.0, description="seconds between each worker's re-reading of stored bans"
    )

    @field_validator("rate_limit_general", "rate_limit_generation_ip")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        return check_rate(value)

    @field_validator("banned_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [canonical(parse_network(str(part))) for part in value]
        return value
