"""The `ir_consent` cookie: the visitor's analytics choice, kept in their browser (LEG-C2).

Value: `c1.<consent id>.<a|r>.<unix seconds>.<banner version>`. The consent id is random
and anonymous; it links the browser to its `consents` rows, which are the actual proof.
The cookie is not signed: changing it only changes what its owner sees, and a cookie that
does not parse counts as no choice, so the banner asks again and no analytics load.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

CONSENT_COOKIE = "ir_consent"
# CNIL and the EDPB's guidance: a consent cookie lives at most 13 months.
CONSENT_MAX_AGE = timedelta(days=390)
_VALUE = re.compile(
    r"^c1\.(?P<id>[A-Za-z0-9_-]{16,64})\.(?P<choice>[ar])\.(?P<at>\d{1,12})"
    r"\.(?P<version>[A-Za-z0-9._-]{1,40})$"
)


@dataclass(frozen=True)
class ConsentCookie:
    consent_id: str
    analytics: bool
    at: datetime
    banner_version: str

    def value(self) -> str:
        choice = "a" if self.analytics else "r"
        stamp = int(self.at.timestamp())
        return f"c1.{self.consent_id}.{choice}.{stamp}.{self.banner_version}"

    def is_current(self, banner_version: str, now: datetime, reask_days: int) -> bool:
        """Does this choice still hold: same banner, and younger than CONSENT_REASK_DAYS?"""
        return (
            self.banner_version == banner_version
            and self.at <= now
            and now - self.at < timedelta(days=reask_days)
        )


def new_consent_id() -> str:
    return secrets.token_urlsafe(16)


def parse_consent_cookie(raw: str | None) -> ConsentCookie | None:
    """The choice stored in the cookie, or None when there is none or it is unreadable."""
    if not raw:
        return None
    match = _VALUE.match(raw.strip().strip('"'))
    if match is None:
        return None
    try:
        at = datetime.fromtimestamp(int(match["at"]), UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return ConsentCookie(match["id"], match["choice"] == "a", at, match["version"])
