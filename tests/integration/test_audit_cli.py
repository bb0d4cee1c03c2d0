"""The privacy commands as an operator runs them (in process, on SQLite): audited views of
personal data, the audit log's verification, restriction of processing, data-subject
requests, breach listings."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from image_router.cli import app as cli_app
from image_router.cli import common
from image_router.db.session import make_engine, unit_of_work


class Cli:
    """Runs `image-router` commands in this process against one database and data dir."""

    def __init__(self, db_url: str, data_dir: Path) -> None:
        self.db_url = db_url
        self.env: dict[str, str | None] = {
            "DATA_DIR": str(data_dir),
            "DATABASE_URL": db_url,
            "AUTO_MIGRATE": "false",
            "PII_KEK": None,
            "BLIND_INDEX_KEY": None,
        }

    def __call__(self, *args: str, ok: bool = True) -> SimpleNamespace:
        common.settings.cache_clear()
        common.vault.cache_clear()
        try:
            result = CliRunner().invoke(cli_app, list(args), env=self.env)
        finally:
            common.settings.cache_clear()
            common.vault.cache_clear()
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        assert (result.exit_code == 0) == ok, f"{args}: {result.output}"
        return SimpleNamespace(stdout=result.stdout, stderr=result.stderr)

    def sql(self, statement: str) -> None:
        async def run() -> None:
            engine = make_engine(self.db_url)
            async with unit_of_work(engine) as conn:
                await conn.execute(text(statement))
            await engine.dispose()

        asyncio.run(run())


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> Cli:
    return Cli(db_url, tmp_path / "data")


def test_personal_data_is_shown_only_with_a_reason_and_every_view_is_chained(
    cli: Cli,
) -> None:
    cli("users", "create", "ada@example.com", "--name", "Ada Lovelace")
    refused = cli("users", "show", "ada@example.com", ok=False)
    assert "--reason is required" in refused.stderr
    assert "Ada Lovelace" not in refused.stdout
    assert "audit log intact: 0 entries" in cli("audit", "verify").stdout

    shown = cli("users", "show", "Ada@Example.com", "--reason", "support ticket 7").stdout
    assert "ada@example.com" in shown and "Ada Lovelace" in shown
    listing = cli("audit", "list", "--subject", "ada@example.com").stdout
    [entry] = listing.splitlines()[:-1]
    assert "operator_view" in entry and "email,name" in entry and "support ticket 7" in entry
    assert "ada@example.com" not in listing and "Lovelace" not in listing
    assert "audit log intact: 1 entries" in cli("audit", "verify").stdout

    cli("users", "show", "ada@example.com", "--reason", "second look")
    cli.sql("UPDATE audit_log SET reason = 'nothing happened' WHERE id = 1")
    broken = cli("audit", "verify", ok=False)
    assert "audit log broken at entry 1" in broken.stderr


def test_restriction_and_a_request_received_by_email(cli: Cli) -> None:
    cli("users", "create", "bob@example.com")
    added = cli(
        "dsr",
        "add",
        "bob@example.com",
        "--type",
        "restriction",
        "--channel",
        "email",
        "--note",
        "mail of 1 Jan",
        "--received",
        "2020-01-31T09:00",
    ).stdout
    assert "due 2020-02-29T09:00:00+00:00" in added
    request_id = added.split()[3].rstrip(";")
    overdue = cli("dsr", "list", "--overdue").stdout
    assert request_id in overdue and "OVERDUE" in overdue

    assert (
        "restricted processing of bob@example.com"
        in cli(
            "users",
            "restrict",
            "bob@example.com",
            "--reason",
            "objection pending",
            "--request",
            request_id,
        ).stdout
    )
    assert cli("dsr", "list", "--overdue").stdout.strip() == "0 requests"
    assert (
        "restricted:         yes"
        in cli("users", "show", "bob@example.com", "--reason", "check restriction").stdout
    )

    refused = cli("users", "unrestrict", "bob@example.com", "--reason", "resolved", ok=False)
    assert "--notified" in refused.stderr
    cli("users", "unrestrict", "bob@example.com", "--reason", "resolved", "--notified")
    again = cli("users", "unrestrict", "bob@example.com", "--reason", "x", "--notified", ok=False)
    assert "not restricted" in again.stderr
    actions = [line.split("\t")[3] for line in cli("audit", "list").stdout.splitlines()[:-1]]
    assert actions == ["restriction_set", "operator_view", "restriction_lifted"]

    closed = cli("dsr", "close", request_id, ok=False)
    assert "already completed" in closed.stderr
    assert (
        "unknown request type"
        in cli("dsr", "add", "bob@example.com", "--type", "delete-me", ok=False).stderr
    )


def test_a_breach_window_lists_the_accounts_active_in_it(cli: Cli) -> None:
    created = cli("users", "create", "cy@example.com").stdout
    account_id = created.split("(")[1].rstrip(")\n")
    window = ("--since", "2020-01-01", "--until", "2100-01-01")
    listing = cli("audit", "affected", *window).stdout
    assert f"{account_id}\tactive\tsignups 1" in listing
    assert "cy@example.com" not in listing
    assert (
        "0 accounts affected"
        in cli("audit", "affected", "--since", "2020-01-01", "--until", "2020-02-01").stdout
    )
    assert "--reason" in cli("audit", "affected", *window, "--emails", ok=False).stderr

    named = cli("audit", "affected", *window, "--emails", "--reason", "incident 3").stdout
    assert "cy@example.com" in named
    logged = cli("audit", "list", "--action", "breach_listing").stdout
    assert account_id in logged and "incident 3" in logged
