"""The audit log of access to personal data (privacy-payments.md SEC-4): append, verify, list.

Every operator read of personal data, every decrypt outside the owner's own request, and
every export, erasure, restriction change or manual credit adjustment appends one entry.
An entry names *which* fields were touched, never their values: `record` accepts only
identifier-like field names, so a value cannot slip in by mistake.

The entries form a hash chain: `hash` = SHA-256 over the previous entry's hash and all of
this entry's fields (`_digest`; the first entry follows `GENESIS`). Changing, removing or
reordering an entry breaks the chain there, and `verify` names the entry. An unkeyed chain
cannot stop someone who rewrites every later entry as well: `verify` reports the newest hash
so that an operator can note it elsewhere (a ticket, a log shipper) and compare it later.

Appends are serialised across processes, so no two entries ever claim the same predecessor:
on PostgreSQL by a transaction-level advisory lock taken before the newest hash is read; on
SQLite by the database's single writer lock, which a no-op write takes before the read. The
lock is held until the caller's transaction ends, so append as late as possible in it.

Retention (`purge_before`) deletes only a prefix, oldest first, never the newest entry, and
then appends an `audit_log_purged` entry naming the new anchor: the `prev_hash` of the oldest
remaining entry. `verify` accepts a chain that starts at that anchor and at no other.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, false, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.db.tables import AuditEntry
from image_router.kit.clock import utcnow

GENESIS = "0" * 64
PURGED = "audit_log_purged"
ACTOR_TYPES = ("user", "operator", "system", "webhook")
_PG_LOCK = 7_412_020  # advisory lock key of the chain (7_412_019 is the migrations')
_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,39}$")
_BATCH = 1000
_ANCHOR_NOTE = "chain anchor "


@dataclass(frozen=True)
class AuditRecord:
    id: int
    actor_type: str
    actor_id: str | None
    subject_account_id: str | None
    action: str
    fields: tuple[str, ...]
    reason: str | None
    request_id: str | None
    created_at: datetime
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None
    head: str | None = None  # the newest entry's hash, to note down outside the database
    pruned: bool = False  # retention removed the oldest entries; the chain starts at an anchor


async def record(
    conn: AsyncConnection,
    *,
    actor_type: str,
    actor_id: str | None,
    subject_account_id: str | None,
    action: str,
    fields: Sequence[str] | None = None,
    reason: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> AuditRecord:
    """Append one entry in the caller's transaction and return it.

    `fields` are the names of the personal data touched (e.g. `("email", "name")`).
    `reason` is the operator's justification; it must not quote personal data either.
    """
    _check(actor_type, actor_id, subject_account_id, action, fields or (), request_id)
    values: dict[str, Any] = {
        "actor_type": actor_type,
        "actor_id": actor_id,
        "subject_account_id": subject_account_id,
        "action": action,
        "fields": ",".join(fields) if fields else None,
        "reason": (reason or "").strip() or None,
        "request_id": request_id,
        "created_at": (now or utcnow()).astimezone(UTC),
    }
    await _lock_chain(conn)
    newest = await conn.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))
    values["prev_hash"] = newest or GENESIS
    values["hash"] = _digest(values)
    result = await conn.execute(insert(AuditEntry).values(**values))
    key = result.inserted_primary_key
    assert key is not None
    return _view(int(key[0]), values)


async def verify(conn: AsyncConnection) -> VerifyResult:
    """Recompute the chain in id order; the first entry that does not fit is named."""
    checked, last_id, expected, pruned = 0, 0, "", False
    while rows := (
        await conn.execute(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(_BATCH)
        )
    ).all():
        for row in rows:
            entry = row._mapping
            if checked == 0:
                pruned = entry["prev_hash"] != GENESIS
                if pruned and not await _anchor_explained(conn, entry["prev_hash"]):
                    return _broken(
                        entry["id"],
                        checked,
                        f"entry {entry['id']} is the oldest, but no retention purge removed "
                        "the entries before it",
                    )
            elif entry["prev_hash"] != expected:
                return _broken(
                    entry["id"],
                    checked,
                    f"entry {entry['id']} does not follow entry {last_id}: an entry between "
                    f"them was removed, or entry {entry['id']} was changed",
                )
            if _digest(entry) != entry["hash"]:
                return _broken(
                    entry["id"],
                    checked,
                    f"entry {entry['id']} does not match its hash: it was changed after "
                    "it was written",
                )
            expected, last_id, checked = entry["hash"], entry["id"], checked + 1
    return VerifyResult(ok=True, checked=checked, head=expected or None, pruned=pruned)


async def purge_before(
    conn: AsyncConnection,
    cutoff: datetime,
    *,
    batch: int | None = None,
    now: datetime | None = None,
) -> int:
    """Delete the oldest entries created before `cutoff` (at most `batch`); return how many.

    Only a prefix is ever deleted, so the rest still verifies: every entry before the first
    one created at or after `cutoff`, and never the newest. The retention job calls this
    (RETENTION_AUDIT_DAYS); the purge itself is logged as an `audit_log_purged` entry.
    """
    await _lock_chain(conn)
    newest = await conn.scalar(select(func.max(AuditEntry.id)))
    if newest is None:
        return 0
    keep_from = await conn.scalar(
        select(func.min(AuditEntry.id)).where(AuditEntry.created_at >= cutoff)
    )
    keep_from = newest if keep_from is None else min(keep_from, newest)
    if batch is not None:
        cap = await conn.scalar(
            select(AuditEntry.id).order_by(AuditEntry.id).offset(batch).limit(1)
        )
        keep_from = keep_from if cap is None else min(keep_from, cap)
    removed = (await conn.execute(delete(AuditEntry).where(AuditEntry.id < keep_from))).rowcount
    if removed:
        anchor = await conn.scalar(select(AuditEntry.prev_hash).where(AuditEntry.id == keep_from))
        await record(
            conn,
            actor_type="system",
            actor_id="retention",
            subject_account_id=None,
            action=PURGED,
            reason=f"removed {removed} entries created before {_timestamp(cutoff)}; "
            f"{_ANCHOR_NOTE}{anchor}",
            now=now,
        )
    return int(removed)


async def entries(
    conn: AsyncConnection,
    *,
    subject: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    action: str | None = None,
    limit: int | None = None,
) -> list[AuditRecord]:
    """Entries oldest first, filtered by subject account, time (`since` ≤ t < `until`), action."""
    query = select(AuditEntry).order_by(AuditEntry.id)
    if subject is not None:
        query = query.where(AuditEntry.subject_account_id == subject)
    if since is not None:
        query = query.where(AuditEntry.created_at >= since)
    if until is not None:
        query = query.where(AuditEntry.created_at < until)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if limit is not None:
        query = query.limit(limit)
    return [_view(r.id, r._mapping) for r in (await conn.execute(query)).all()]


async def _lock_chain(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
    else:
        # SQLite: any write statement takes the database's writer lock until the transaction
        # ends, and a writer always sees the newest commit. This one changes no row.
        await conn.execute(update(AuditEntry).where(false()).values(id=AuditEntry.id))


async def _anchor_explained(conn: AsyncConnection, anchor: str) -> bool:
    """Does the newest purge entry name `anchor` as where the chain now starts?"""
    note = await conn.scalar(
        select(AuditEntry.reason)
        .where(AuditEntry.action == PURGED)
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    return note is not None and note.endswith(_ANCHOR_NOTE + anchor)


def _digest(entry: Any) -> str:
    """SHA-256 over a canonical JSON array of the chain link and every stored field."""
    payload = [
        "v1",
        entry["prev_hash"],
        entry["actor_type"],
        entry["actor_id"],
        entry["subject_account_id"],
        entry["action"],
        entry["fields"],
        entry["reason"],
        entry["request_id"],
        _timestamp(entry["created_at"]),
    ]
    encoded = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _timestamp(moment: datetime) -> str:
    # Microseconds: what both SQLite (as text) and PostgreSQL store, so it reads back equal.
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def _check(
    actor_type: str,
    actor_id: str | None,
    subject: str | None,
    action: str,
    fields: Sequence[str],
    request_id: str | None,
) -> None:
    if actor_type not in ACTOR_TYPES:
        raise ValueError(f"actor_type must be one of {', '.join(ACTOR_TYPES)}")
    if not _NAME.match(action):
        raise ValueError("an audit action is a lower-case identifier of at most 40 characters")
    if isinstance(fields, str) or not all(_NAME.match(name) for name in fields):
        # Deliberately not echoing the offending value: it may be the personal data itself.
        raise ValueError("audit fields are lower-case field names; the log never holds values")
    for name, value, size in (("actor_id", actor_id, 64), ("subject", subject, 36)):
        if value is not None and len(value) > size:
            raise ValueError(f"an audit {name} is at most {size} characters")
    if request_id is not None and len(request_id) > 64:
        raise ValueError("an audit request_id is at most 64 characters")


def _broken(entry_id: int, checked: int, problem: str) -> VerifyResult:
    return VerifyResult(ok=False, checked=checked, first_bad_id=entry_id, problem=problem)


def _view(entry_id: int, entry: Any) -> AuditRecord:
    return AuditRecord(
        id=entry_id,
        actor_type=entry["actor_type"],
        actor_id=entry["actor_id"],
        subject_account_id=entry["subject_account_id"],
        action=entry["action"],
        fields=tuple(entry["fields"].split(",")) if entry["fields"] else (),
        reason=entry["reason"],
        request_id=entry["request_id"],
        created_at=entry["created_at"],
        prev_hash=entry["prev_hash"],
        hash=entry["hash"],
    )
