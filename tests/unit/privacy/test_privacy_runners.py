"""The privacy runners and the job registry are built in the composition root: each runner
gets its own collaborators and settings values, and the server's job runner holds every
kind of job the code queues (nothing depends on which modules happened to be imported)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from image_router.privacy import erasure, export, jobs, policy_mail
from image_router.privacy.export_runner import ExportPolicy
from image_router.resources import Resources, build_resources, policy_facts
from image_router.webhooks import notices as webhook_notices
from tests.conftest import gateway_settings

SETTINGS = {
    "hold_grace_s": 17.0,
    "export_ttl_hours": 5,
    "export_sync_max_mb": 1.5,
    "site_url": "https://site.example/",
    "retention_audit_days": 11,
    "purge_batch_size": 7,
    "webhook_log_days": 9,
}


@pytest.fixture
async def res(db_url: str, tmp_path: Path) -> AsyncIterator[Resources]:
    built = build_resources(gateway_settings(db_url, tmp_path, **SETTINGS))
    yield built
    await built.close()


async def test_the_server_runs_every_kind_of_job_the_code_queues(res: Resources) -> None:
    assert res.jobs.engine is res.engine
    assert set(res.jobs.handlers) == {
        erasure.JOB_KIND,
        export.JOB_KIND,
        policy_mail.JOB_KIND,
        webhook_notices.JOB_KIND,
    }
    assert res.jobs.handlers[webhook_notices.JOB_KIND] == res.webhooks.notice.run
    assert res.jobs.handlers[erasure.JOB_KIND] == res.erasure.run
    assert res.jobs.handlers[export.JOB_KIND] == res.export.run
    notices = res.jobs.handlers[policy_mail.JOB_KIND].__self__  # type: ignore[attr-defined]
    assert isinstance(notices, policy_mail.NoticeRunner)
    assert (notices.engine, notices.vault) == (res.engine, res.vault)


async def test_each_runner_gets_its_collaborators_and_settings_values(res: Resources) -> None:
    assert (res.erasure.engine, res.erasure.store, res.erasure.vault) == (
        res.engine,
        res.store,
        res.vault,
    )
    assert res.erasure.hold_grace == timedelta(seconds=17)
    # Payments and Clerk are off here: erasure knows neither Stripe nor a Clerk backend.
    assert (res.erasure.stripe, res.erasure.clerk) == (None, None)
    assert res.export.policy == ExportPolicy(
        ttl=timedelta(hours=5),
        sync_max_bytes=1536 * 1024,
        link_base="https://site.example",
    )
    assert res.export.facts == policy_facts(res.settings)
    assert (res.retention.policy.audit_days, res.retention.policy.batch_size) == (11, 7)
    # The webhook delivery log's period is the webhooks group's WEBHOOK_LOG_DAYS.
    assert res.retention.policy.webhook_log_days == 9
    # The retention purge deletes expired export archives through the export runner.
    assert res.retention.exports == res.export.purge_expired


async def test_a_job_kind_is_one_to_twenty_characters(res: Resources) -> None:
    async def nothing(job: jobs.JobRow) -> None:
        return None

    for kind in ("", "k" * 21):
        with pytest.raises(ValueError, match="1 to 20 characters"):
            jobs.JobRunner(res.engine, {kind: nothing})
    assert set(jobs.JobRunner(res.engine, {"k" * 20: nothing}).handlers) == {"k" * 20}
