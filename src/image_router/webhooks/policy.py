"""The settings the webhooks run by (filled by `resources.build_webhooks`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

#: The longest wait between two attempts, whatever the doubling says.
MAX_RETRY_DELAY = timedelta(hours=4)


@dataclass(frozen=True)
class WebhookPolicy:
    timeout_s: float = 10.0  # one attempt, connect to last byte of the answer's head
    retry_first: timedelta = timedelta(seconds=30)  # after the first failure; then doubling
    retry_window: timedelta = timedelta(hours=24)  # from the event (or its resend)
    disable_after: timedelta = timedelta(days=3)  # of continuous failure
    max_endpoints: int = 10
    log_for: timedelta = timedelta(days=30)  # finished deliveries are purged after this
    site_url: str = ""  # where the e-mails send the person (…/account/webhooks)

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery is left to its worker before another may take it."""
        return timedelta(seconds=self.timeout_s + 60)

    def next_attempt(self, attempts: int, now: datetime, retry_until: datetime) -> datetime | None:
        """When to try again after the `attempts`-th failed attempt: the wait doubles from
        `retry_first` (at most MAX_RETRY_DELAY); the last try is at the window's end; None
        once the window has passed (the delivery has failed for good)."""
        delay = min(self.retry_first * (1 << min(max(0, attempts - 1), 30)), MAX_RETRY_DELAY)
        if now >= retry_until:
            return None
        return min(now + delay, retry_until)
