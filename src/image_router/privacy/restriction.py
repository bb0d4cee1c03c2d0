"""Restriction of processing (GDPR Art. 18; privacy-payments.md DSR-4).

While an account is restricted its data may only be stored: generation refuses it (403
`account_restricted`, checked where generation reads `processing_restricted`), it is left out
of routing statistics and marketing, and the retention purge skips it, since erasure may be
exactly what the person objects to.

The account holder can ask for a restriction (`request_restriction`, behind
`POST /v1/account/restriction`); an operator can impose one (`restrict`). Only an operator
lifts it (`lift`), and only after telling the person (Art. 18(3)): the time of that notice is
kept in `restriction_lift_notified_at`. Every change appends an audit entry and is recorded
as a data-subject request of type `restriction`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account.personal_data import Vault
from image_router.db.tables import Account
from image_router.kit.clock import utcnow
from image_router.privacy import audit
from image_router.privacy import requests as dsr

_FIELDS = ("processing_restricted",)
HOLDER_REASON = "requested by the account holder (Art. 18)"


class RestrictionError(ValueError):
    """A restriction change that is not allowed; the message is meant for the person."""


@dataclass(frozen=True)
class RestrictionState:
    account_id: str
    restricted: bool
    reason: str | None
    restricted_at: datetime | None
    lift_notified_at: datetime | None
    changed: bool = False  # did this call change it (False: it was already so)


async def state(conn: AsyncConnection, vault: Vault, account_id: str) -> RestrictionState:
    """The account's current restriction."""
    row = (
        await conn.execute(
            select(
                Account.status,
                Account.processing_restricted,
                Account.restricted_reason_enc,
                Account.restricted_at,
                Account.restriction_lift_notified_at,
            ).where(Account.id == account_id)
        )
    ).first()
    if row is None:
        raise RestrictionError(f"no account with id {account_id}")
    if row.status == "deleted":
        raise RestrictionError(f"account {account_id} is deleted; nothing is processed")
    return RestrictionState(
        account_id=account_id,
        restricted=bool(row.processing_restricted),
        reason=await vault.open(account_id, row.restricted_reason_enc),
        restricted_at=row.restricted_at,
        lift_notified_at=row.restriction_lift_notified_at,
    )


async def request_restriction(
    conn: AsyncConnection,
    vault: Vault,
    account_id: str,
    *,
    reason: str | None = None,
    channel: str = "api",
    request_id: str | None = None,
    now: datetime | None = None,
) -> RestrictionState:
    """The account holder restricts processing of their own account, at once.

    `reason` is the person's own words: it is kept on the account (they may contest the
    accuracy of their data, or have objected), never in the audit log, which gets a fixed
    text. Asking again while restricted changes nothing (`changed` is False).
    """
    return await restrict(
        conn,
        vault,
        account_id,
        reason=reason or HOLDER_REASON,
        actor_type="user",
        actor_id=account_id,
        channel=channel,
        request_id=request_id,
        audit_reason=HOLDER_REASON,
        now=now,
    )


async def restrict(
    conn: AsyncConnection,
    vault: Vault,
    account_id: str,
    *,
    reason: str,
    actor_type: str,
    actor_id: str | None,
    channel: str,
    request_id: str | None = None,
    dsr_id: str | None = None,
    audit_reason: str | None = None,
    now: datetime | None = None,
) -> RestrictionState:
    """Restrict processing of an account; a no-op (`changed` False) if it already is.

    The request is recorded as fulfilled, or, given `dsr_id`, that recorded request (of
    type restriction, for this account) is closed.
    """
    reason = reason.strip()
    if not reason:
        raise RestrictionError("a restriction needs a reason")
    current = await state(conn, vault, account_id)
    now = (now or utcnow()).astimezone(UTC)
    changed = await conn.execute(
        update(Account)
        .where(Account.id == account_id, Account.processing_restricted.is_(False))
        .values(
            processing_restricted=True,
            restricted_reason_enc=await vault.seal(account_id, reason),
            restricted_at=now,
            restriction_lift_notified_at=None,
        )
    )
    if changed.rowcount != 1:
        return current
    if dsr_id is not None:
        await _close_restriction_request(conn, dsr_id, account_id, actor_id, now)
    else:
        await dsr.record_fulfilled(
            conn,
            account_id=account_id,
            type="restriction",
            channel=channel,
            handled_by=actor_id if actor_type == "operator" else None,
            now=now,
        )
    await audit.record(
        conn,
        actor_type=actor_type,
        actor_id=actor_id,
        subject_account_id=account_id,
        action="restriction_set",
        fields=_FIELDS,
        reason=audit_reason or reason,
        request_id=request_id,
        now=now,
    )
    return RestrictionState(account_id, True, reason, now, None, changed=True)


async def lift(
    conn: AsyncConnection,
    vault: Vault,
    account_id: str,
    *,
    reason: str,
    notified: bool,
    operator: str,
    now: datetime | None = None,
) -> RestrictionState:
    """An operator lifts the restriction, having told the person beforehand (Art. 18(3)).

    `notified` confirms that notice was given; its time is recorded. The account holder
    cannot lift a restriction through the API.
    """
    reason = reason.strip()
    if not reason:
        raise RestrictionError("lifting a restriction needs a reason")
    if not notified:
        raise RestrictionError(
            "tell the person before lifting the restriction (GDPR Art. 18(3)), "
            "then confirm it with --notified"
        )
    current = await state(conn, vault, account_id)
    now = (now or utcnow()).astimezone(UTC)
    lifted = await conn.execute(
        update(Account)
        .where(Account.id == account_id, Account.processing_restricted.is_(True))
        .values(
            processing_restricted=False,
            restricted_reason_enc=None,
            restricted_at=None,
            restriction_lift_notified_at=now,
        )
    )
    if lifted.rowcount != 1:
        raise RestrictionError("processing of this account is not restricted")
    await audit.record(
        conn,
        actor_type="operator",
        actor_id=operator,
        subject_account_id=account_id,
        action="restriction_lifted",
        fields=_FIELDS,
        reason=reason,
        now=now,
    )
    return replace(
        current,
        restricted=False,
        reason=None,
        restricted_at=None,
        lift_notified_at=now,
        changed=True,
    )


async def _close_restriction_request(
    conn: AsyncConnection, dsr_id: str, account_id: str, operator: str | None, now: datetime
) -> None:
    request = await dsr.get_request(conn, dsr_id)
    if request.type != "restriction" or request.account_id != account_id:
        raise RestrictionError(f"request {dsr_id} is not a restriction request of this account")
    await dsr.close_request(conn, dsr_id, handled_by=operator, now=now)
