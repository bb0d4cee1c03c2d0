"""RET-1: the retention purge deletes each category exactly when its period ends, deletes the
output files with their rows, and skips accounts under a legal hold (DSR-4).

Rows are written at a time T (through the API, or with their timestamps set directly) and
the purge is run with an injected `now` on either side of each boundary.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert

from image_router.db.session import unit_of_work
from image_router.db.tables import (
    Consent,
    Generation,
    PasswordReset,
    StripeEvent,
    Topup,
    WebhookMessage,
    WebSession,
)
from image_router.kit.clock import utcnow
from image_router.ledger import service as ledger
from image_router.privacy import audit, restriction
from image_router.privacy.retention import PurgeReport, RetentionPolicy, purge
from tests.conftest import Gateway

IMAGE = "/v1/openai/images/generations"
PROMPT = "a red fox asleep in fresh snow"
PNG = b"\x89PNG\r\n\x1a\n retention test"
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)


async def run_purge(gw: Gateway, now: datetime, **policy: Any) -> PurgeReport:
    report = await purge(gw.res.engine, gw.res.store, RetentionPolicy(**policy), now=now)
    assert report.failed == []
    return report


async def usage_row(
    gw: Gateway,
    account_id: str,
    created_at: datetime,
    *,
    prompt: str | None = None,
    content_expires_at: datetime | None = None,
    ip: str | None = None,
    status: str = "success",
    outputs: int = 0,
    outputs_expire_at: datetime | None = None,
) -> str:
    """A usage row as the gateway writes it, with its output files in the store."""
    generation_id = str(uuid.uuid4())
    names = [f"{generation_id}-{i}.png" for i in range(outputs)]
    urls = [await gw.res.store.put(name, PNG, "image/png") for name in names]
    async with unit_of_work(gw.res.engine) as conn:
        sealed = await gw.res.vault.seal(account_id, prompt) if prompt else None
        await conn.execute(
            insert(Generation).values(
                id=generation_id,
                account_id=account_id,
                modality="image",
                model="test/test",
                provider="test",
                prompt_enc=sealed,
                content_expires_at=content_expires_at,
                size="1024x1024",
                status=status,
                cost=42,
                ip=ip,
                output_keys=names,
                output_urls=urls,
                outputs_expire_at=outputs_expire_at,
                created_at=created_at,
                deadline_at=created_at + timedelta(minutes=5),
            )
        )
    return generation_id


async def row(gw: Gateway, generation_id: str) -> dict[str, Any] | None:
    return next((r for r in await gw.generations() if r["id"] == generation_id), None)


async def count(gw: Gateway, table: str) -> int:
    [found] = await gw.rows(f"SELECT count(*) AS n FROM {table}")
    return int(found["n"])


async def test_a_prompt_is_kept_for_its_period_then_erased(any_gateway: Gateway) -> None:
    _, key = await any_gateway.account()
    response = await any_gateway.post(IMAGE, key, json={"model": "test/test", "prompt": PROMPT})
    assert response.status_code == 200
    [stored] = await any_gateway.generations()
    written = stored["created_at"]
    assert stored["prompt"] == PROMPT
    assert abs(stored["content_expires_at"] - (written + 30 * DAY)) < SECOND

    for now in (written + 29 * DAY, stored["content_expires_at"] - SECOND):
        assert (await run_purge(any_gateway, now)).prompts == 0
        [kept] = await any_gateway.generations()
        assert kept["prompt"] == PROMPT and kept["content_deleted_at"] is None

    now = written + 30 * DAY + SECOND
    assert (await run_purge(any_gateway, now)).prompts == 1
    [erased] = await any_gateway.generations()
    assert erased["prompt"] is None and erased["prompt_enc"] is None
    assert erased["content_deleted_at"] == now
    # The billing metadata stays.
    assert (erased["model"], erased["cost"], erased["status"]) == (
        stored["model"],
        stored["cost"],
        "success",
    )
    assert (await run_purge(any_gateway, now + DAY)).prompts == 0  # nothing left to do


async def test_expired_outputs_are_deleted_and_their_urls_stop_working(
    any_gateway: Gateway,
) -> None:
    _, key = await any_gateway.account()
    body = (
        await any_gateway.post(IMAGE, key, json={"model": "test/test", "prompt": PROMPT})
    ).json()
    url = body["data"][0]["url"]
    [stored] = await any_gateway.generations()
    [name] = stored["output_keys"]
    path = any_gateway.res.settings.storage.data_dir / "outputs" / name
    assert path.exists()
    expires = stored["outputs_expire_at"]
    assert abs(expires - (stored["created_at"] + 24 * timedelta(hours=1))) < SECOND

    report = await run_purge(any_gateway, expires - SECOND)
    assert (report.outputs, report.output_files) == (0, 0)
    assert (await any_gateway.client.get(url)).status_code == 200

    report = await run_purge(any_gateway, expires + SECOND)
    assert (report.outputs, report.output_files) == (1, 1)
    assert not path.exists()
    assert (await any_gateway.client.get(url)).status_code == 404
    [purged] = await any_gateway.generations()
    assert purged["output_keys"] == [] and purged["output_urls"] == []
    assert purged["outputs_expire_at"] is None
    assert (await run_purge(any_gateway, expires + DAY)).outputs == 0


async def test_a_missing_output_file_does_not_stop_the_purge(any_gateway: Gateway) -> None:
    account, _ = await any_gateway.account()
    t = utcnow()
    gid = await usage_row(any_gateway, account, t, outputs=2, outputs_expire_at=t + DAY)
    stored = await row(any_gateway, gid)
    assert stored is not None
    await any_gateway.res.store.delete(stored["output_keys"][0])  # already gone
    report = await run_purge(any_gateway, t + DAY)
    assert report.outputs == 1
    for name in stored["output_keys"]:
        assert await any_gateway.res.store.get(name) is None


async def test_client_ips_and_ended_sessions_go_after_the_security_log_period(
    any_gateway: Gateway,
) -> None:
    account, _ = await any_gateway.account()
    t = utcnow()
    gid = await usage_row(any_gateway, account, t, ip="203.0.113.7")
    async with unit_of_work(any_gateway.res.engine) as conn:
        for sid, expires, revoked in (
            ("expired", t, None),
            ("revoked", t + 100 * DAY, t),
            ("active", t + 100 * DAY, None),
        ):
            await conn.execute(
                insert(WebSession).values(
                    id=sid,
                    account_id=account,
                    csrf_token="c",
                    created_at=t - DAY,
                    expires_at=expires,
                    last_seen_at=t - DAY,
                    reauthenticated_at=t - DAY,
                    ip="203.0.113.7",
                    revoked_at=revoked,
                )
            )
        await conn.execute(
            insert(PasswordReset).values(
                token_hash="reset", account_id=account, created_at=t, expires_at=t + DAY
            )
        )

    report = await run_purge(any_gateway, t + 30 * DAY)
    assert (report.client_ips, report.web_sessions, report.password_resets) == (0, 0, 1)
    assert (await row(any_gateway, gid) or {})["ip"] == "203.0.113.7"

    report = await run_purge(any_gateway, t + 30 * DAY + SECOND)
    assert (report.client_ips, report.web_sessions) == (1, 2)
    kept = await row(any_gateway, gid)
    assert kept is not None and kept["ip"] is None and kept["cost"] == 42
    sessions = await any_gateway.rows("SELECT id FROM web_sessions")
    assert [s["id"] for s in sessions] == ["active"]


async def test_a_password_reset_goes_when_it_expires(any_gateway: Gateway) -> None:
    account, _ = await any_gateway.account()
    t = utcnow()
    async with unit_of_work(any_gateway.res.engine) as conn:
        await conn.execute(
            insert(PasswordReset).values(
                token_hash="reset", account_id=account, created_at=t, expires_at=t + DAY
            )
        )
    assert (await run_purge(any_gateway, t + DAY - SECOND)).password_resets == 0
    assert (await run_purge(any_gateway, t + DAY)).password_resets == 1
    assert await count(any_gateway, "password_resets") == 0


async def test_usage_rows_go_after_the_usage_metadata_period(any_gateway: Gateway) -> None:
    account, _ = await any_gateway.account()
    t = utcnow()
    done = await usage_row(any_gateway, account, t)
    failed = await usage_row(any_gateway, account, t, status="error")
    # Still holding credits: the hold reconciler settles it, never the purge.
    running = await usage_row(any_gateway, account, t, status="processing")
    # Its files go first (in the same pass), then the row.
    with_files = await usage_row(any_gateway, account, t, outputs=1, outputs_expire_at=t + DAY)
    [name] = (await row(any_gateway, with_files) or {})["output_keys"]

    report = await run_purge(any_gateway, t + 730 * DAY)
    assert (report.usage_rows, report.outputs) == (0, 1)
    assert (await run_purge(any_gateway, t + 730 * DAY + SECOND)).usage_rows == 3
    remaining = [r["id"] for r in await any_gateway.generations()]
    assert remaining == [running]
    assert done not in remaining and failed not in remaining
    assert await any_gateway.res.store.get(name) is None


async def test_webhook_ids_go_after_their_period(any_gateway: Gateway) -> None:
    t = utcnow()
    async with unit_of_work(any_gateway.res.engine) as conn:
        await conn.execute(
            insert(StripeEvent).values(
                event_id="evt_1", type="checkout.session.completed", received_at=t
            )
        )
        await conn.execute(
            insert(WebhookMessage).values(
                source="clerk", message_id="msg_1", type="user.updated", received_at=t
            )
        )
    report = await run_purge(any_gateway, t + 90 * DAY)
    assert (report.stripe_events, report.webhook_messages) == (0, 0)
    report = await run_purge(any_gateway, t + 90 * DAY + SECOND)
    assert (report.stripe_events, report.webhook_messages) == (1, 1)
    assert await count(any_gateway, "stripe_events") == 0
    assert await count(any_gateway, "webhook_messages") == 0


async def test_the_audit_log_loses_only_its_old_prefix_and_still_verifies(
    any_gateway: Gateway,
) -> None:
    t = utcnow()
    async with unit_of_work(any_gateway.res.engine) as conn:
        for offset in (0, 1, 2, 800 * 86400):
            await audit.record(
                conn,
                actor_type="operator",
                actor_id="ops",
                subject_account_id=None,
                action="user.show",
                fields=("email",),
                reason="support ticket",
                now=t + timedelta(seconds=offset),
            )
    report = await run_purge(any_gateway, t + 730 * DAY + 1.5 * SECOND)
    assert report.audit_entries == 2
    async with unit_of_work(any_gateway.res.engine) as conn:
        result = await audit.verify(conn)
        remaining = await audit.entries(conn)
    assert result.ok and result.pruned
    assert [e.created_at for e in remaining[:2]] == [t + 2 * SECOND, t + 800 * DAY]
    assert remaining[-1].action == audit.PURGED


async def test_consents_go_three_years_after_the_account_ends(any_gateway: Gateway) -> None:
    ended, _ = await any_gateway.account()
    active, _ = await any_gateway.account()
    t = utcnow()
    await any_gateway.execute(
        "UPDATE accounts SET status = 'deleted', deleted_at = :t WHERE id = :id", t=t, id=ended
    )
    async with unit_of_work(any_gateway.res.engine) as conn:
        for account, visitor, at in (
            (ended, None, t - DAY),
            (ended, None, t),
            (active, None, t - 5000 * DAY),
            (None, "visitor-old", t),
            (None, "visitor-new", t + 400 * DAY),
        ):
            await conn.execute(
                insert(Consent).values(
                    account_id=account,
                    consent_id=visitor,
                    purpose="analytics_cookies" if visitor else "terms",
                    granted=True,
                    document_version="1",
                    source="banner" if visitor else "signup",
                    created_at=at,
                )
            )
    assert (await run_purge(any_gateway, t + 1095 * DAY)).consents == 0
    assert (await run_purge(any_gateway, t + 1095 * DAY + SECOND)).consents == 3
    left = await any_gateway.rows("SELECT account_id, consent_id FROM consents")
    assert sorted((r["account_id"] or "", r["consent_id"] or "") for r in left) == sorted(
        [(active, ""), ("", "visitor-new")]
    )


async def _closed_books(gw: Gateway, account: str, at: datetime, closed_at: datetime) -> None:
    """An erased account: a top-up, its grant, and the closing entry that zeroes it."""
    async with unit_of_work(gw.res.engine) as conn:
        await ledger.grant(conn, account, 50_000, reason="top-up", kind="topup", ref=account)
        await conn.execute(
            insert(Topup).values(
                id=str(uuid.uuid4()),
                account_id=account,
                amount_cents=500,
                currency="usd",
                credits=50_000,
                status="paid",
                created_at=at,
                updated_at=at,
                paid_at=at,
            )
        )
        assert await ledger.forfeit_once(conn, account, reason="account erased") == 50_000
    await gw.execute(
        "UPDATE ledger_entries SET created_at = :at WHERE account_id = :id", at=at, id=account
    )
    await gw.execute(
        "UPDATE ledger_entries SET created_at = :c WHERE account_id = :id AND kind = 'forfeit'",
        c=closed_at,
        id=account,
    )
    await gw.execute(
        "UPDATE accounts SET status = 'deleted', deleted_at = :c WHERE id = :id",
        c=closed_at,
        id=account,
    )


async def test_accounting_rows_of_deleted_accounts_go_together_after_the_period(
    any_gateway: Gateway,
) -> None:
    t = utcnow().replace(month=6, day=1)
    old, _ = await any_gateway.account()
    await _closed_books(any_gateway, old, t, t + DAY)
    recent, _ = await any_gateway.account()  # its newest entry is not past the period
    await _closed_books(any_gateway, recent, t, t + 5 * 365 * DAY)
    alive, _ = await any_gateway.account("3")
    await any_gateway.execute(
        "UPDATE ledger_entries SET created_at = :t WHERE account_id = :id", t=t, id=alive
    )

    ten_years = (t + DAY).replace(year=t.year + 10)
    report = await run_purge(any_gateway, ten_years)
    assert (report.ledger_entries, report.topups) == (0, 0)
    report = await run_purge(any_gateway, ten_years + SECOND)
    assert (report.ledger_entries, report.topups) == (2, 1)
    for account, entries in ((old, 0), (recent, 2), (alive, 1)):
        [found] = await any_gateway.rows(
            "SELECT count(*) AS n FROM ledger_entries WHERE account_id = :id", id=account
        )
        assert found["n"] == entries
        assert await any_gateway.ledger_sum(account) == await any_gateway.balance(account)
    assert [r["account_id"] for r in await any_gateway.rows("SELECT account_id FROM topups")] == [
        recent
    ]


async def test_accounts_under_a_legal_hold_are_skipped_in_every_category(
    any_gateway: Gateway,
) -> None:
    held, _ = await any_gateway.account()
    free, _ = await any_gateway.account()
    t = utcnow().replace(month=6, day=1)
    names: dict[str, str] = {}
    async with unit_of_work(any_gateway.res.engine) as conn:
        await audit.record(
            conn,
            actor_type="operator",
            actor_id="ops",
            subject_account_id=free,
            action="user.show",
            fields=("email",),
            reason="support",
            now=t,
        )
    async with unit_of_work(any_gateway.res.engine) as conn:
        await restriction.restrict(
            conn,
            any_gateway.res.vault,
            held,
            reason="contests the accuracy of the usage records",
            actor_type="operator",
            actor_id="ops",
            channel="email",
            now=t + SECOND,
        )

    for account in (held, free):
        gid = await usage_row(
            any_gateway,
            account,
            t,
            prompt=PROMPT,
            content_expires_at=t + 30 * DAY,
            ip="198.51.100.1",
            outputs=1,
            outputs_expire_at=t + DAY,
        )
        names[account] = (await row(any_gateway, gid) or {})["output_keys"][0]
        async with unit_of_work(any_gateway.res.engine) as conn:
            await conn.execute(
                insert(WebSession).values(
                    id=f"session-{account}",
                    account_id=account,
                    csrf_token="c",
                    created_at=t,
                    expires_at=t + DAY,
                    last_seen_at=t,
                    reauthenticated_at=t,
                )
            )
            await conn.execute(
                insert(PasswordReset).values(
                    token_hash=f"reset-{account}",
                    account_id=account,
                    created_at=t,
                    expires_at=t + DAY,
                )
            )
            await conn.execute(
                insert(Consent).values(
                    account_id=account, purpose="terms", granted=True, source="signup", created_at=t
                )
            )
        await _closed_books(any_gateway, account, t, t + DAY)
    report = await run_purge(any_gateway, (t + 2 * DAY).replace(year=t.year + 11))
    counts = report.counts()
    # The free account's entry predates the hold's and goes; the hold's stays.
    assert counts.pop("audit_entries") == 1
    assert counts == {
        "prompts": 1,
        "outputs": 1,
        "output_files": 1,
        "client_ips": 1,
        "web_sessions": 1,
        "password_resets": 1,
        "usage_rows": 1,
        "idempotency_keys": 0,
        # The webhook and job categories under a hold: test_privacy_account_tables.py.
        "webhook_deliveries": 0,
        "webhook_endpoints": 0,
        "webhook_secrets": 0,
        "job_answers": 0,
        "generation_jobs": 0,
        "stripe_events": 0,
        "webhook_messages": 0,
        "consents": 1,
        "export_archives": 0,
        "ledger_entries": 2,
        "topups": 1,
    }

    [kept] = [r for r in await any_gateway.generations() if r["account_id"] == held]
    assert kept["prompt"] == PROMPT and kept["ip"] == "198.51.100.1"
    assert await any_gateway.res.store.get(names[held]) is not None
    assert await any_gateway.res.store.get(names[free]) is None
    for table in ("web_sessions", "password_resets", "consents", "ledger_entries", "topups"):
        owners = await any_gateway.rows(f"SELECT DISTINCT account_id FROM {table}")
        assert [o["account_id"] for o in owners] == [held], table
    async with unit_of_work(any_gateway.res.engine) as conn:
        assert (await audit.verify(conn)).ok
        subjects = {e.subject_account_id for e in await audit.entries(conn)}
    assert held in subjects and free not in subjects
