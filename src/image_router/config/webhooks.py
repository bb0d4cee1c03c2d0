"""Outgoing webhooks: how often and how long deliveries are tried, when an endpoint is
given up on (README "Webhooks"; docs/webhooks.md)."""

from __future__ import annotations

from pydantic import Field

from image_router.config.group import Group


class WebhookSettings(Group):
    webhook_worker: bool = Field(
        default=True,
        description="this process delivers webhooks (every worker claims its own; off: only "
        "records them, for processes that must not call out)",
    )
    webhook_interval_s: float = Field(
        default=2.0, gt=0, description="seconds between each worker's look for due deliveries"
    )
    webhook_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="how long a receiver has to answer one delivery, seconds (longer: a failure, "
        "retried)",
    )
    webhook_retry_first_s: float = Field(
        default=30.0,
        gt=0,
        description="the wait after a delivery's first failure, seconds; it doubles after each "
        "(at most 4 h)",
    )
    webhook_retry_hours: float = Field(
        default=24.0,
        gt=0,
        description="how long a failing delivery is retried, hours, from its event (or its resend)",
    )
    webhook_disable_after_days: float = Field(
        default=3.0,
        gt=0,
        description="an endpoint whose deliveries failed continuously this many days is disabled "
        "and its account told by e-mail and on the webhooks page",
    )
    webhook_max_endpoints: int = Field(
        default=10, ge=1, description="endpoints an account may register"
    )
    webhook_log_days: int = Field(
        default=30,
        ge=1,
        description="how long the delivery log (each delivery and its payload) is kept, days",
    )
