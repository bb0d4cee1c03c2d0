"""The privacy commands as the installed `image-router` program: exit codes and messages of
an audited view of personal data and of the audit log's verification (the rest of the
commands are exercised in process by tests/integration/test_audit_cli.py)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN

pytestmark = pytest.mark.e2e


class Cli:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "PII_KEK", "BLIND_INDEX_KEY")
        }
        self.env.update(DATA_DIR=str(data_dir), LOG_LEVEL="WARNING")

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN), *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert "Traceback" not in done.stderr, done.stderr
        assert (done.returncode == 0) == ok, f"{args}: {done.stdout}{done.stderr}"
        return done

    def sql(self, statement: str) -> None:
        with closing(sqlite3.connect(self.data_dir / "image-router.db")) as db, db:
            db.execute(statement)


@pytest.mark.timeout(300)  # a handful of fresh interpreters, on a busy machine too
def test_a_view_without_a_reason_exits_1_and_a_changed_log_fails_verification(
    tmp_path: Path,
) -> None:
    cli = Cli(tmp_path / "data")
    cli("users", "create", "ada@example.com", "--name", "Ada Lovelace")
    refused = cli("users", "show", "ada@example.com", ok=False)
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: --reason is required")
    assert "Ada Lovelace" not in refused.stdout

    shown = cli("users", "show", "ada@example.com", "--reason", "support ticket 7").stdout
    assert "Ada Lovelace" in shown
    verified = cli("audit", "verify").stdout
    assert verified.startswith("audit log intact: 1 entries")

    cli.sql("UPDATE audit_log SET action = 'export' WHERE id = 1")
    broken = cli("audit", "verify", ok=False)
    assert broken.returncode == 1
    assert "audit log broken at entry 1" in broken.stderr
