"""Policy changes: the privacy notice banner (LEG-2) and terms acceptance (LEG-3).

An operator publishes a new version by replacing a document in LEGAL_DIR; the tests write
such a directory. A privacy change is a notice that never blocks anything; a material
terms change must be accepted, and the API refuses generation once the grace period ends.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from image_router.account.mailer import ConsoleMailer
from image_router.db.session import unit_of_work
from image_router.legal.documents import SHIPPED_DIR, LegalDocuments, load_documents
from image_router.privacy import policy, policy_mail
from image_router.web.legal_site import queue_privacy_notice
from tests.conftest import Gateway
from tests.integration.web_helpers import csrf_of, sign_up

EMAIL = "grace@example.com"


def _document(name: str, version: str, *, material: bool, effective: str = "2026-12-15") -> str:
    title = {"privacy": "Privacy Policy", "terms": "Terms of Service"}[name]
    return (
        f'---\ntitle: {title}\nversion: "{version}"\nlast_updated: 2026-12-01\n'
        f"effective: {effective}\nmaterial: {'true' if material else 'false'}\n---\n"
        f"The {name} text, version {version}.\n"
    )


def _legal_dir(folder: Path, **documents: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("privacy", "terms", "cookies"):
        text = documents.get(name) or (SHIPPED_DIR / f"{name}.md").read_text("utf-8")
        (folder / f"{name}.md").write_text(text, "utf-8")
    return folder


@pytest.fixture
def gateway_overrides(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """`param` maps document names to (version, material[, effective]) in a LEGAL_DIR."""
    published: dict[str, Any] = dict(getattr(request, "param", {}))
    settings: dict[str, Any] = published.pop("settings", {})
    docs = {
        name: _document(name, spec[0], material=spec[1], effective=(spec[2:] or ["2026-12-15"])[0])
        for name, spec in published.items()
    }
    return settings | ({"legal_dir": _legal_dir(tmp_path / "legal", **docs)} if docs else {})


async def _signed_up(gateway: Gateway) -> str:
    response = await sign_up(gateway.client, EMAIL)
    assert response.status_code == 303, response.text
    [row] = await gateway.rows(
        "SELECT id FROM accounts WHERE email_bidx = :b", b=gateway.res.vault.email_index(EMAIL)
    )
    return str(row["id"])


def _banner(html: str, banner_id: str) -> str | None:
    found = re.search(rf'<section[^>]*id="{banner_id}".*?</section>', html, re.DOTALL)
    return found.group(0) if found else None


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", "", html).split())


# ------------------------------------------------------------------ privacy notices


@pytest.mark.parametrize("gateway_overrides", [{"privacy": ("2", True)}], indirect=True)
async def test_a_material_privacy_change_shows_a_banner_until_dismissed(
    gateway: Gateway,
) -> None:
    account_id = await _signed_up(gateway)
    await gateway.execute(
        "UPDATE accounts SET privacy_version_notified = '1' WHERE id = :id", id=account_id
    )
    page = (await gateway.client.get("/account")).text
    banner = _banner(page, "privacy-banner")
    assert banner is not None, page
    assert "Privacy Policy (version 2, 2026-12-01)" in _text(banner)
    assert 'href="/privacy"' in banner

    dismissed = await gateway.client.post(
        "/account/policy-notice",
        data={"csrf_token": csrf_of(page), "version": "2", "next": "/account"},
    )
    assert dismissed.status_code == 303
    assert dismissed.headers["location"] == "/account"
    assert _banner((await gateway.client.get("/account")).text, "privacy-banner") is None
    assert _banner((await gateway.client.get("/")).text, "privacy-banner") is None

    [account] = await gateway.rows(
        "SELECT privacy_version_notified FROM accounts WHERE id = :id", id=account_id
    )
    assert account["privacy_version_notified"] == "2"
    proofs = await gateway.rows(
        "SELECT purpose, granted, document_version, source FROM consents "
        "WHERE account_id = :id AND purpose = 'privacy_notice'",
        id=account_id,
    )
    assert proofs[-1] == {
        "purpose": "privacy_notice",
        "granted": True,
        "document_version": "2",
        "source": "banner",
    }


@pytest.mark.parametrize("gateway_overrides", [{"privacy": ("2", True)}], indirect=True)
async def test_a_privacy_notice_never_blocks_the_api(gateway: Gateway) -> None:
    account_id, key = await gateway.account("1")
    await gateway.execute(
        "UPDATE accounts SET privacy_version_notified = '1' WHERE id = :id", id=account_id
    )
    response = await gateway.post(
        "/v1/openai/images/generations",
        key,
        json={"prompt": "a cat", "model": "openai/dall-e-2", "size": "1024x1024"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("gateway_overrides", [{"privacy": ("2", False)}], indirect=True)
async def test_a_minor_privacy_change_shows_no_banner(gateway: Gateway) -> None:
    account_id = await _signed_up(gateway)
    await gateway.execute(
        "UPDATE accounts SET privacy_version_notified = '1' WHERE id = :id", id=account_id
    )
    assert _banner((await gateway.client.get("/account")).text, "privacy-banner") is None


@pytest.mark.parametrize("gateway_overrides", [{"privacy": ("2", True)}], indirect=True)
async def test_visitors_who_are_not_signed_in_see_no_policy_banner(gateway: Gateway) -> None:
    page = (await gateway.client.get("/")).text
    assert _banner(page, "privacy-banner") is None and _banner(page, "terms-banner") is None


# ------------------------------------------------------------------ terms


@pytest.mark.parametrize("gateway_overrides", [{"terms": ("2", True, "2099-12-15")}], indirect=True)
async def test_material_terms_ask_for_acceptance_until_accepted(gateway: Gateway) -> None:
    account_id = await _signed_up(gateway)
    await gateway.execute(
        "UPDATE accounts SET terms_version_accepted = '1' WHERE id = :id", id=account_id
    )
    page = (await gateway.client.get("/account")).text
    banner = _banner(page, "terms-banner")
    assert banner is not None, page
    text = _text(banner)
    # Effective 2099-12-15 + LEGAL_GRACE_DAYS (30): far enough for the wall clock.
    assert "version 2" in text and "until 2100-01-14" in text

    accepted = await gateway.client.post(
        "/account/legal-acceptance",
        data={"csrf_token": csrf_of(page), "document": "terms", "version": "2", "next": "/"},
    )
    assert accepted.status_code == 303
    assert _banner((await gateway.client.get("/account")).text, "terms-banner") is None
    [account] = await gateway.rows(
        "SELECT terms_version_accepted, terms_accepted_at FROM accounts WHERE id = :id",
        id=account_id,
    )
    assert account["terms_version_accepted"] == "2"
    assert account["terms_accepted_at"] is not None
    [proof] = await gateway.rows(
        "SELECT granted, document_version, source FROM consents WHERE account_id = :id "
        "AND purpose = 'terms' AND document_version = '2' AND source <> 'signup'",
        id=account_id,
    )
    assert proof == {"granted": True, "document_version": "2", "source": "banner"}


@pytest.mark.parametrize("gateway_overrides", [{"terms": ("2", True, "2026-01-01")}], indirect=True)
async def test_overdue_terms_say_that_the_api_is_refused(gateway: Gateway) -> None:
    account_id = await _signed_up(gateway)
    await gateway.execute(
        "UPDATE accounts SET terms_version_accepted = '1' WHERE id = :id", id=account_id
    )
    banner = _banner((await gateway.client.get("/terms")).text, "terms-banner")
    assert banner is not None
    assert "The API refuses generation requests until you accept them." in _text(banner)


@pytest.mark.parametrize("gateway_overrides", [{"terms": ("2", True)}], indirect=True)
async def test_terms_acceptance_through_the_api(any_gateway: Gateway) -> None:
    gateway = any_gateway
    account_id = await _signed_up(gateway)
    client = gateway.client
    csrf = csrf_of((await client.get("/account")).text)
    url = "/v1/account/legal-acceptance"

    stale = await client.post(
        url, json={"document": "terms", "version": "1"}, headers={"X-CSRF-Token": csrf}
    )
    assert stale.status_code == 400
    assert stale.json()["error"]["code"] == "stale_document_version"
    forged = await client.post(url, json={"document": "terms", "version": "2"})
    assert forged.status_code == 403  # no X-CSRF-Token, no same-site Origin

    ok = await client.post(
        url, json={"document": "terms", "version": "2"}, headers={"X-CSRF-Token": csrf}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["document"] == "terms" and ok.json()["version"] == "2"
    [account] = await gateway.rows(
        "SELECT terms_version_accepted FROM accounts WHERE id = :id", id=account_id
    )
    assert account["terms_version_accepted"] == "2"
    [proof] = await gateway.rows(
        "SELECT source FROM consents WHERE account_id = :id AND purpose = 'terms' "
        "AND document_version = '2' AND source <> 'signup'",
        id=account_id,
    )
    assert proof["source"] == "api"


async def test_terms_cannot_be_accepted_with_an_api_key_or_anonymously(gateway: Gateway) -> None:
    _, key = await gateway.account()
    body = {"document": "terms", "version": "1"}
    with_key = await gateway.post("/v1/account/legal-acceptance", key, json=body)
    assert with_key.status_code == 403
    assert with_key.json()["error"]["code"] == "session_required"
    anonymous = await gateway.client.post("/v1/account/legal-acceptance", json=body)
    assert anonymous.status_code == 401


# ------------------------------------------------------------------ the API block


def _documents(tmp_path: Path, terms_version: str, *, material: bool) -> LegalDocuments:
    terms = _document("terms", terms_version, material=material)
    return load_documents(_legal_dir(tmp_path / "published", terms=terms))


async def test_terms_block_starts_exactly_when_the_grace_period_ends(
    any_gateway: Gateway, tmp_path: Path
) -> None:
    gateway = any_gateway
    documents = _documents(tmp_path, "2", material=True)
    account_id, _ = await gateway.account()
    deadline = datetime(2026, 12, 15, tzinfo=UTC) + timedelta(days=30)

    async def block(at: datetime, grace_days: int = 30) -> str | None:
        async with unit_of_work(gateway.res.engine) as conn:
            return await policy.terms_block(conn, account_id, documents, at, grace_days)

    assert await block(deadline - timedelta(seconds=1)) is None
    message = await block(deadline)
    assert message is not None and "version 2" in message and "2026-12-15" in message
    assert await block(deadline - timedelta(days=20), grace_days=10) is not None

    async with unit_of_work(gateway.res.engine) as conn:
        await policy.accept_document(
            conn, account_id, documents, "terms", "2", source="api", now=deadline
        )
    assert await block(deadline + timedelta(days=400)) is None


async def test_minor_terms_changes_never_block(gateway: Gateway, tmp_path: Path) -> None:
    documents = _documents(tmp_path, "2", material=False)
    account_id, _ = await gateway.account()
    async with unit_of_work(gateway.res.engine) as conn:
        far = datetime(2030, 1, 1, tzinfo=UTC)
        assert await policy.terms_block(conn, account_id, documents, far, 0) is None


async def test_the_shared_guest_account_is_never_blocked(gateway: Gateway, tmp_path: Path) -> None:
    documents = _documents(tmp_path, "2", material=True)
    account_id, _ = await gateway.account()
    await gateway.execute("UPDATE accounts SET role = 'guest' WHERE id = :id", id=account_id)
    async with unit_of_work(gateway.res.engine) as conn:
        far = datetime(2030, 1, 1, tzinfo=UTC)
        assert await policy.terms_block(conn, account_id, documents, far, 0) is None


async def test_sign_up_consent_records_the_current_versions(
    gateway: Gateway, tmp_path: Path
) -> None:
    documents = _documents(tmp_path, "2", material=True)
    account_id, _ = await gateway.account()
    now = datetime(2027, 3, 1, tzinfo=UTC)
    async with unit_of_work(gateway.res.engine) as conn:
        await policy.record_signup_consent(conn, account_id, documents, source="signup", now=now)
        assert await policy.terms_block(conn, account_id, documents, now, 0) is None
        notices = await policy.account_notices(conn, account_id, documents, 30)
    assert notices == policy.AccountNotices()
    rows = await gateway.rows(
        "SELECT purpose, document_version FROM consents WHERE account_id = :id ORDER BY id",
        id=account_id,
    )
    assert rows == [
        {"purpose": "terms", "document_version": "2"},
        {"purpose": "privacy_notice", "document_version": documents.privacy.version},
    ]


@pytest.mark.parametrize("gateway_overrides", [{"terms": ("2", True, "2020-01-01")}], indirect=True)
async def test_the_api_refuses_generation_until_outdated_terms_are_accepted(
    gateway: Gateway,
) -> None:
    """Past the grace period (LEGAL_GRACE_DAYS after 2020-01-01), an API key of an account
    that accepted only an older version gets 403; accepting the new version lifts it."""
    account_id, key = await gateway.account()
    body = {"model": "test/test", "prompt": "a pier", "size": "64x64"}
    refused = await gateway.post("/v1/openai/images/generations", key, json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "terms_acceptance_required"
    assert await gateway.rows("SELECT id FROM generations") == []  # nothing held or logged

    assert gateway.res.settings.legal.legal_dir is not None
    documents = load_documents(gateway.res.settings.legal.legal_dir)
    async with unit_of_work(gateway.res.engine) as conn:
        await policy.accept_document(
            conn, account_id, documents, "terms", "2", source="api", now=datetime.now(UTC)
        )
    accepted = await gateway.post("/v1/openai/images/generations", key, json=body)
    assert accepted.status_code == 200, accepted.text


@pytest.mark.parametrize("gateway_overrides", [{"privacy": ("2", True)}], indirect=True)
async def test_a_material_privacy_change_is_also_emailed_once_to_whoever_has_not_seen_it(
    gateway: Gateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """LEG-2: the start-up queued one "privacy_notice" job for version 2, which the server's
    job loop ran; the mailing writes to accounts that have not seen the version (not to one
    that signed up under it), records each, and never twice."""
    for _ in range(100):  # the loop's first pass runs at start-up
        done = "SELECT id FROM jobs WHERE kind = 'privacy_notice' AND status = 'done'"
        if await gateway.rows(done):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the privacy notice job did not run")
    site = gateway.client._transport.app.state.legal  # type: ignore[attr-defined]
    assert await queue_privacy_notice(gateway.res, site) is False  # another worker, a restart

    await _signed_up(gateway)  # sign-up records that EMAIL was shown version 2
    other_id, _ = await gateway.account(email="told-by-mail@example.com")
    capsys.readouterr()
    payload = {"version": "2", "effective": "2026-12-15", "url": "http://site.test/privacy"}
    mailed = await policy_mail.mail_notice(
        gateway.res.engine, gateway.res.vault, ConsoleMailer(), payload, datetime.now(UTC)
    )

    assert mailed == 1
    mail = capsys.readouterr().err
    assert "To: told-by-mail@example.com" in mail and "version 2" in mail
    assert f"To: {EMAIL}" not in mail and "http://site.test/privacy" in mail
    proof = await gateway.rows(
        "SELECT document_version FROM consents WHERE account_id = :a AND source = 'email'",
        a=other_id,
    )
    assert proof == [{"document_version": "2"}]
    again = await policy_mail.mail_notice(
        gateway.res.engine, gateway.res.vault, ConsoleMailer(), payload, datetime.now(UTC)
    )
    assert again == 0  # a retried job skips whoever was told
