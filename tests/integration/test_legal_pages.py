"""The policy pages, their versions and security.txt (LEG-1, RET-2, SEC-6).

What a visitor reads must match what this deployment does: the retention table comes from
the settings, an operator's own documents replace the shipped ones, and a broken document
stops the start instead of being served.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from image_router.app import create_app
from image_router.legal.documents import SHIPPED_DIR, LegalDocumentError, load_documents
from tests.conftest import Gateway, gateway_settings


def _text(html: str) -> str:
    """The page as a reader sees it: tags removed, whitespace collapsed."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _row(page: str, setting: str) -> str:
    """The retention-table row that names `setting`."""
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.DOTALL):
        if setting in row:
            return _text(row)
    raise AssertionError(f"no retention row for {setting}")


@pytest.mark.parametrize("path", ["/privacy", "/terms", "/cookies"])
async def test_each_document_shows_its_date_and_version(gateway: Gateway, path: str) -> None:
    page = await gateway.client.get(path)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    text = _text(page.text)
    shipped = load_documents(SHIPPED_DIR).get(path.strip("/"))
    assert shipped is not None
    assert f"Last Updated: {shipped.last_updated}" in text
    assert f"Version {shipped.version}" in text
    # The footer links every document from every page.
    for link in ('href="/privacy"', 'href="/terms"', 'href="/cookies"'):
        assert link in page.text


async def test_the_privacy_policy_describes_this_deployment(gateway: Gateway) -> None:
    text = _text((await gateway.client.get("/privacy")).text)
    assert "privacy@localhost" in text  # PRIVACY_CONTACT_EMAIL's default
    assert "X-Store-Prompt: false" in text
    assert "/account/privacy" in (await gateway.client.get("/privacy")).text
    assert "DELETE /v1/account" in text
    # The test deployment has an OpenAI key, no Clerk and no Stripe.
    assert "configured here: OpenAI" in text
    assert "Stripe" not in text and "Clerk" not in text
    assert "AES-256-GCM" in text


async def test_the_retention_table_shows_the_default_periods(gateway: Gateway) -> None:
    page = (await gateway.client.get("/privacy")).text
    assert "30 days" in _row(page, "RETENTION_PROMPTS_DAYS")
    assert "24 hours" in _row(page, "RETENTION_OUTPUTS_HOURS")
    assert "10 years" in _row(page, "RETENTION_ACCOUNTING_YEARS")
    assert "24 hours" in _row(page, "EXPORT_TTL_HOURS")
    assert "24 hours" in _row(page, "RETENTION_IDEMPOTENCY_HOURS")
    assert "30 days" in _row(page, "WEBHOOK_LOG_DAYS")
    # Jobs and webhook endpoints are named where their periods are.
    assert "stored answers of long-running jobs" in _row(page, "RETENTION_OUTPUTS_HOURS")
    assert "records of long-running jobs" in _row(page, "RETENTION_USAGE_META_DAYS")
    assert "until you delete them or close your account" in _row(page, "webhook endpoints")


@pytest.mark.parametrize(
    "gateway_overrides",
    [
        {
            "retention_prompts_days": 7,
            "retention_outputs_hours": 2,
            "retention_usage_meta_days": 400,
            "retention_security_log_days": 14,
            "retention_accounting_years": 6,
            "retention_webhook_ids_days": 45,
            "retention_audit_days": 365,
            "retention_consent_proof_days": 1000,
            "export_ttl_hours": 12,
            "retention_idempotency_hours": 6,
            "webhook_log_days": 9,
            "privacy_contact_email": "dpo@operator.example",
            "payments_provider": "stripe",
            "stripe_secret_key": "sk_test_x",
            "stripe_webhook_secret": "whsec_x",
        }
    ],
)
async def test_the_policy_follows_the_settings(gateway: Gateway) -> None:
    page = (await gateway.client.get("/privacy")).text
    expected = {
        "RETENTION_PROMPTS_DAYS": "7 days",
        "RETENTION_OUTPUTS_HOURS": "2 hours",
        "RETENTION_USAGE_META_DAYS": "400 days",
        "RETENTION_SECURITY_LOG_DAYS": "14 days",
        "RETENTION_ACCOUNTING_YEARS": "6 years",
        "RETENTION_WEBHOOK_IDS_DAYS": "45 days",
        "RETENTION_AUDIT_DAYS": "365 days",
        "RETENTION_CONSENT_PROOF_DAYS": "1000 days",
        "EXPORT_TTL_HOURS": "12 hours",
        "RETENTION_IDEMPOTENCY_HOURS": "6 hours",
        "WEBHOOK_LOG_DAYS": "9 days",
    }
    for setting, period in expected.items():
        assert period in _row(page, setting), setting
    assert "30 days" not in _row(page, "RETENTION_PROMPTS_DAYS")
    text = _text(page)
    assert "dpo@operator.example" in text and "privacy@localhost" not in text
    assert "Stripe (payments)" in text


@pytest.mark.parametrize("gateway_overrides", [{"retention_prompts_days": 0}])
async def test_prompt_retention_zero_reads_not_stored(gateway: Gateway) -> None:
    page = (await gateway.client.get("/privacy")).text
    assert _row(page, "RETENTION_PROMPTS_DAYS").startswith("Prompts and request parameters")
    assert "not stored" in _row(page, "RETENTION_PROMPTS_DAYS")


async def test_legal_versions_are_listed(gateway: Gateway) -> None:
    response = await gateway.client.get("/v1/legal")
    assert response.status_code == 200
    body = response.json()
    assert body["contact_email"] == "privacy@localhost"
    by_name = {doc["document"]: doc for doc in body["documents"]}
    assert set(by_name) == {"privacy", "terms", "cookies"}
    terms = by_name["terms"]
    assert terms["version"] == "1"
    assert terms["last_updated"] == "2026-11-27" == terms["effective_at"]
    assert terms["material"] is False
    assert terms["url"] == "http://gateway.test/terms"
    assert re.fullmatch(r"[0-9a-f]{64}", terms["sha256"])


def _write_documents(folder: Path, **changes: str) -> Path:
    """Copies of the shipped documents in `folder`, with whole files replaced by `changes`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("privacy", "terms", "cookies"):
        text = changes.get(name) or (SHIPPED_DIR / f"{name}.md").read_text(encoding="utf-8")
        (folder / f"{name}.md").write_text(text, encoding="utf-8")
    return folder


OPERATOR_TERMS = """---
title: Conditions of Use
version: "2026.2"
last_updated: 2026-12-01
effective: 2026-12-15
material: true
---
These are ACME's conditions. Write to {{ contact_email }}.
"""


@pytest.fixture
def gateway_overrides(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Indirect parameters; `operator_terms` becomes a LEGAL_DIR with OPERATOR_TERMS."""
    values = dict(getattr(request, "param", {}))
    if values.pop("operator_terms", False):
        values["legal_dir"] = _write_documents(tmp_path / "legal", terms=OPERATOR_TERMS)
    return values


@pytest.mark.parametrize("gateway_overrides", [{"operator_terms": True}], indirect=True)
async def test_an_operator_directory_replaces_the_shipped_documents(gateway: Gateway) -> None:
    text = _text((await gateway.client.get("/terms")).text)
    assert "Conditions of Use" in text
    assert "These are ACME's conditions. Write to privacy@localhost." in text
    assert "Last Updated: 2026-12-01" in text and "Version 2026.2" in text
    assert "In effect from 2026-12-15" in text
    assert "Terms of Service" not in text
    listed = {d["document"]: d for d in (await gateway.client.get("/v1/legal")).json()["documents"]}
    assert listed["terms"]["version"] == "2026.2"
    assert listed["terms"]["effective_at"] == "2026-12-15"
    assert listed["terms"]["material"] is True
    # The shipped privacy policy was copied unchanged: still served.
    privacy = load_documents(SHIPPED_DIR).privacy
    privacy_text = _text((await gateway.client.get("/privacy")).text)
    assert f"Last Updated: {privacy.last_updated}" in privacy_text


@pytest.mark.parametrize(
    ("terms", "complaint"),
    [
        ("# Terms without front matter\n", "has no front matter"),
        ('---\nversion: "2"\nlast_updated: 2026-12-01\n---\nx\n', "lacks material"),
        ('---\nversion: "2"\nlast_updated: 01/12/2026\nmaterial: true\n---\n', "YYYY-MM-DD"),
        ('---\nversion: "2"\nlast_updated: 2026-12-01\nmaterial: yes please\n---\n', "true or"),
        ("---\nversion: 1.10\nlast_updated: 2026-12-01\nmaterial: false\n---\n", "quote"),
        ('---\nversion: "2"\nlast_updated: 2026-12-01\nmaterail: true\n---\n', "materail"),
        ('---\nversion: "2"\nlast_updated: 2026-12-01\nmaterial: false\n---\n{{ x', "line 6"),
        ('---\nversion: "2"\nlast_updated: 2026-12-01\nmaterial: false\n---\n{{ nope }}', "nope"),
    ],
)
def test_a_malformed_document_stops_the_app(
    tmp_path: Path, db_url: str, terms: str, complaint: str
) -> None:
    folder = _write_documents(tmp_path / "legal", terms=terms)
    settings = gateway_settings(db_url, tmp_path / "data", legal_dir=folder)
    with pytest.raises(LegalDocumentError, match="terms") as caught:
        create_app(settings)
    assert complaint in str(caught.value)


def test_a_legal_dir_without_all_documents_stops_the_app(tmp_path: Path, db_url: str) -> None:
    folder = tmp_path / "legal"
    folder.mkdir()
    (folder / "privacy.md").write_text((SHIPPED_DIR / "privacy.md").read_text("utf-8"), "utf-8")
    settings = gateway_settings(db_url, tmp_path / "data", legal_dir=folder)
    with pytest.raises(LegalDocumentError, match=r"terms\.md is missing"):
        create_app(settings)


def _fields(body: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in body.splitlines():
        name, _, value = line.partition(": ")
        assert name and value, f"not a field line: {line!r}"
        assert name not in fields, f"{name} twice"
        fields[name] = value
    return fields


async def test_security_txt_has_contact_and_a_future_expiry(gateway: Gateway) -> None:
    before = datetime.now(UTC)
    response = await gateway.client.get("/.well-known/security.txt")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    fields = _fields(response.text)
    assert fields["Contact"] == "mailto:privacy@localhost"
    expires = datetime.fromisoformat(fields["Expires"].replace("Z", "+00:00"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", fields["Expires"])
    assert before < expires < before + timedelta(days=365)
    assert fields["Preferred-Languages"] == "en"
    assert fields["Canonical"] == "http://gateway.test/.well-known/security.txt"
    assert "Policy" not in fields


@pytest.mark.parametrize(
    "gateway_overrides",
    [
        {
            "security_contact": "https://operator.example/report",
            "security_policy_url": "https://operator.example/disclosure",
            "site_url": "https://www.operator.example/",
        }
    ],
)
async def test_security_txt_uses_the_configured_contact_and_policy(gateway: Gateway) -> None:
    fields = _fields((await gateway.client.get("/.well-known/security.txt")).text)
    assert fields["Contact"] == "https://operator.example/report"
    assert fields["Policy"] == "https://operator.example/disclosure"
    assert fields["Canonical"] == "https://www.operator.example/.well-known/security.txt"
