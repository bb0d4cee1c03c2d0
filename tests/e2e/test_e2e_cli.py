"""The operator CLI against a real database: accounts by e-mail, keys, credits, errors."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, Server

pytestmark = pytest.mark.e2e


def test_account_key_and_credit_life_cycle(server: Server) -> None:
    email = "Operator.Test@Example.com"
    assert (
        "created account operator.test@example.com" in server.cli("users", "create", email).stdout
    )
    masked = server.cli("users", "list").stdout
    assert "o***@example.com" in masked and "operator.test@" not in masked
    full = server.cli("users", "list", "--reason", "support ticket 7").stdout
    assert "operator.test@example.com" in full
    assert "operator_list" in server.cli("audit", "list", "--action", "operator_list").stdout
    granted = server.cli("credits", "grant", email, "12.5", "--reason", "welcome").stdout
    assert "balance $12.5000" in granted
    created = server.cli("keys", "create", email, "--name", "ci").stdout.strip().splitlines()
    key = created[-1]
    assert len(key) == 64
    listing = server.cli("keys", "list", email).stdout
    assert "ci" in listing and key[:8] in listing and key not in listing
    key_id = listing.split("\t")[0]
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.post(f"{server.url}/v1/auth/test", headers=headers).status_code == 200
    assert "revoked" in server.cli("keys", "revoke", key_id).stdout
    assert httpx.post(f"{server.url}/v1/auth/test", headers=headers).status_code == 401
    assert "balance $12.5000" in server.cli("credits", "show", email).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("credits", "grant", "nobody@example.com", "5", "--reason", "x"), "no account"),
        (("credits", "grant", "admin@localhost", "five", "--reason", "x"), "not a USD amount"),
        (("credits", "grant", "admin@localhost", "0", "--reason", "x"), "positive"),
        (("credits", "grant", "admin@localhost", "3", "--reason", " "), "--reason"),
        (("keys", "create", "nobody@example.com"), "no account"),
        (("keys", "revoke", "no-such-key"), "no key with id"),
        (("users", "create", "not-an-email"), "not an e-mail address"),
        (("users", "create", "admin@localhost"), "already exists"),
        (("credits", "show", "nobody@example.com"), "no account"),
    ],
)
def test_bad_input_exits_non_zero_with_a_message(
    server: Server, args: tuple[str, ...], message: str
) -> None:
    done = server.cli(*args, check=False)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_catalog_check_lists_every_route(server: Server) -> None:
    out = server.cli("catalog", "check").stdout
    assert "test/test [image] enabled" in out
    assert "no key configured (RUNWARE_API_KEY)" in out or "unknown provider" in out
    assert out.strip().splitlines()[-1].endswith("models enabled")


@pytest.mark.parametrize("migrate", ["true", "false"])
def test_a_database_that_is_away_is_one_line_and_exit_1(
    server: Server, tmp_path: Path, migrate: str
) -> None:
    # PostgreSQL restarting or cut off: an operator gets one line, not a traceback (the
    # migration's own connection fails first when AUTO_MIGRATE is on).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **server.env,
        "DATABASE_URL": f"postgresql+asyncpg://postgres@127.0.0.1:{port}/gone",
        "AUTO_MIGRATE": migrate,
        "DATA_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [str(BIN), "credits", "grant", "nobody@example.com", "1", "--reason", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the database")
