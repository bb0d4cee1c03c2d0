"""LEG-2: a material privacy-policy change is announced by e-mail as well as by the banner.

When a server starts with a privacy document whose material version is new, it queues one
"privacy_notice" job for that version (its id is derived from the version, so every worker
and every restart queues the same job, once). The job writes to each active account that
has not seen the version and then appends a `consents` row (`privacy_notice`, source
`email`) for the person: a retried job skips whoever was already told.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from image_router.account.mailer import Mailer
from image_router.account.personal_data import Vault
from image_router.db.session import unit_of_work
from image_router.db.tables import Account, Consent
from image_router.legal.documents import LegalDocuments, is_older
from image_router.privacy import jobs
from image_router.privacy.policy import PURPOSE_PRIVACY_NOTICE

JOB_KIND = "privacy_notice"
SOURCE = "email"
_BATCH = 200


async def queue_notice(
    conn: AsyncConnection, documents: LegalDocuments, policy_url: str, now: datetime
) -> bool:
    """Queue the e-mail of the current material privacy version, unless it was queued."""
    privacy = documents.privacy
    version = privacy.material_version
    if version is None:
        return False
    job_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"image-router:privacy-notice:{version}"))
    payload = {"version": version, "effective": privacy.effective.isoformat(), "url": policy_url}
    try:
        async with conn.begin_nested():
            await jobs.enqueue(
                conn, JOB_KIND, account_id=None, payload=payload, now=now, job_id=job_id
            )
    except IntegrityError:
        return False  # another worker, or an earlier start, queued it already
    return True


@dataclass(frozen=True)
class NoticeRunner:
    """The "privacy_notice" job (`run`), with what it needs (built in resources.py)."""

    engine: AsyncEngine
    vault: Vault
    mailer: Mailer

    async def run(self, job: jobs.JobRow) -> None:
        await mail_notice(self.engine, self.vault, self.mailer, job.payload, job.now)


async def mail_notice(
    engine: AsyncEngine, vault: Vault, mailer: Mailer, payload: dict[str, Any], now: datetime
) -> int:
    """E-mail every active account not yet told of the version; returns how many were."""
    version = str(payload["version"])
    sent, after = 0, ""
    while True:
        async with unit_of_work(engine) as conn:
            rows = (
                await conn.execute(
                    select(Account.id, Account.email_enc, Account.privacy_version_notified)
                    .where(
                        Account.id > after,
                        Account.status == "active",
                        Account.role != "guest",
                        Account.email_enc.is_not(None),
                    )
                    .order_by(Account.id)
                    .limit(_BATCH)
                )
            ).all()
        if not rows:
            return sent
        for row in rows:
            after = row.id
            if is_older(row.privacy_version_notified, version):
                sent += await _tell(engine, vault, mailer, payload, row, now)


async def _tell(
    engine: AsyncEngine,
    vault: Vault,
    mailer: Mailer,
    payload: dict[str, Any],
    row: Any,
    now: datetime,
) -> int:
    version = str(payload["version"])
    async with unit_of_work(engine) as conn:
        told = await conn.scalar(
            select(Consent.id).where(
                Consent.account_id == row.id,
                Consent.purpose == PURPOSE_PRIVACY_NOTICE,
                Consent.source == SOURCE,
                Consent.document_version == version,
            )
        )
    email = await vault.open(row.id, row.email_enc)
    if told is not None or not email:
        return 0
    # Sent outside any transaction (SQLite's writer lock must not wait on a mail server),
    # then recorded: a crash in between may repeat one mail on retry, never skip one.
    await mailer.send(
        email,
        "We have updated our privacy policy",
        f"Our privacy policy changed (version {version}, in effect from "
        f"{payload['effective']}). You can read it here:\n\n{payload['url']}\n\n"
        "You do not need to do anything. You are receiving this e-mail because you "
        "have an account with us.\n",
    )
    async with unit_of_work(engine) as conn:
        await conn.execute(
            insert(Consent).values(
                account_id=row.id,
                purpose=PURPOSE_PRIVACY_NOTICE,
                granted=True,
                document_version=version,
                source=SOURCE,
                created_at=now,
            )
        )
    return 1
