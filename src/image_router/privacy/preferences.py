"""A person's privacy choices and the proof of each change (privacy-payments.md DSR-5).

Three switches live on the account row:

- `store_prompts`: may prompts be kept (sealed) in the usage log? Read on every request,
  so switching it off applies to the very next generation;
- `allow_routing_improvement`: may the account's requests feed the shared route-health
  statistics? A legitimate interest; switching it off is an objection (Art. 21);
- `marketing_emails`: consent to product e-mails, off until given.

Every change appends a `consents` row (purpose, granted, the privacy policy version, where
it was made, when): the account row holds the current state, the rows the history that
Art. 7(1) asks us to be able to show. Setting a switch to the value it already has is not a
change and leaves no row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import Account, Consent
from image_router.kit.clock import utcnow

# Preference (API field and account column) → the consent purpose recorded for it.
PURPOSES: dict[str, str] = {
    "store_prompts": "store_prompts",
    "allow_routing_improvement": "routing_improvement",
    "marketing_emails": "marketing_emails",
}
SOURCES = ("api", "settings", "admin")


class PreferenceError(ValueError):
    """A preference change that cannot be made; the message is meant for the person."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Preferences:
    store_prompts: bool
    allow_routing_improvement: bool
    marketing_emails: bool

    def as_dict(self) -> dict[str, bool]:
        return {name: bool(getattr(self, name)) for name in PURPOSES}


async def get_preferences(conn: AsyncConnection, account_id: str) -> Preferences:
    row = (
        await conn.execute(
            select(
                Account.store_prompts, Account.allow_routing_improvement, Account.marketing_emails
            ).where(Account.id == account_id)
        )
    ).first()
    if row is None:
        raise PreferenceError(f"no account with id {account_id}")
    return Preferences(
        store_prompts=bool(row.store_prompts),
        allow_routing_improvement=bool(row.allow_routing_improvement),
        marketing_emails=bool(row.marketing_emails),
    )


def check_changes(changes: Mapping[str, object]) -> dict[str, bool]:
    """The changes as booleans, or PreferenceError naming the first bad field."""
    checked: dict[str, bool] = {}
    for name, value in changes.items():
        if name not in PURPOSES:
            raise PreferenceError(
                f"unknown preference '{name}' (known: {', '.join(PURPOSES)})", param=name
            )
        if not isinstance(value, bool):
            raise PreferenceError(f"'{name}' must be true or false", param=name)
        checked[name] = value
    return checked


async def update_preferences(
    conn: AsyncConnection,
    account_id: str,
    changes: Mapping[str, object],
    *,
    source: str,
    document_version: str | None,
    now: datetime | None = None,
) -> Preferences:
    """Apply `changes` ({preference: bool}) and record a consent row for each real change.

    `document_version` is the privacy policy version the person was shown (None when the
    deployment has no documents loaded). Returns the preferences now in force.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}")
    wanted = check_changes(changes)
    current = await get_preferences(conn, account_id)
    changed = {name: value for name, value in wanted.items() if getattr(current, name) != value}
    if not changed:
        return current
    moment = (now or utcnow()).astimezone(UTC)
    await conn.execute(update(Account).where(Account.id == account_id).values(**changed))
    await conn.execute(
        insert(Consent),
        [
            {
                "account_id": account_id,
                "purpose": PURPOSES[name],
                "granted": value,
                "document_version": document_version,
                "source": source,
                "created_at": moment,
            }
            for name, value in changed.items()
        ],
    )
    return Preferences(**(current.as_dict() | changed))
