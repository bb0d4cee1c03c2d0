"""The e-mail that tells an account one of its webhook endpoints was disabled.

Queued as a `webhook_disabled` job (privacy/jobs.py) in the transaction that disabled the
endpoint, so it is sent even when the mail server is down for a while (the job retries),
and sent once the endpoint's state is committed. The webhooks page says the same in a
banner for as long as the endpoint stays disabled.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.mailer import Mailer
from image_router.account.personal_data import Vault
from image_router.db.session import unit_of_work
from image_router.db.tables import Account, WebhookEndpoint
from image_router.privacy import jobs

JOB_KIND = "webhook_disabled"
SUBJECT = "A webhook endpoint of your account was disabled"


@dataclass(frozen=True)
class DisabledNotice:
    engine: AsyncEngine
    vault: Vault
    mailer: Mailer
    site_url: str  # without a trailing slash

    async def run(self, job: jobs.JobRow) -> None:
        endpoint_id = str(job.payload.get("endpoint_id", ""))
        async with unit_of_work(self.engine) as conn:
            row = (
                await conn.execute(
                    select(
                        Account.id,
                        Account.email_enc,
                        WebhookEndpoint.url,
                        WebhookEndpoint.disabled_at,
                    )
                    .join(WebhookEndpoint, WebhookEndpoint.account_id == Account.id)
                    .where(WebhookEndpoint.id == endpoint_id, Account.status == "active")
                )
            ).one_or_none()
        if row is None or row.disabled_at is None:
            return  # deleted or enabled again meanwhile: nothing to tell
        email = await self.vault.open(row.id, row.email_enc)
        if not email:
            return
        await self.mailer.send(
            email,
            SUBJECT,
            f"Your webhook endpoint\n\n  {row.url}\n\nwas disabled on "
            f"{row.disabled_at:%Y-%m-%d %H:%M} UTC: {job.payload.get('reason', '')}.\n\n"
            "No more events are sent to it. Once it answers again, enable it on your "
            f"webhooks page:\n\n{self.site_url}/account/webhooks\n\n"
            "You are receiving this e-mail because you registered this endpoint.\n",
        )
