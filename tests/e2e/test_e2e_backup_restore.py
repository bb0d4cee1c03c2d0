"""deploy/backup: the main database and the key store backed up apart, wiped, restored.

Real PostgreSQL, a real server creating the data (accounts with sealed e-mails, names and
prompts), the real scripts (pg_dump custom format; the key store on PostgreSQL or in its
SQLite file). The point of keeping the two apart (docs/deployment.md "Backups"): restoring
a main-database backup taken before an erasure must not bring the erased person's data
back, and restoring an older key store must not bring their data key back.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from image_router.config import Settings
from image_router.resources import build_vault
from tests.conftest import PG_ADMIN, _pg_url, _recreate_pg
from tests.e2e.conftest import BIN, running_server

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.postgres,
    pytest.mark.skipif(
        not all(shutil.which(tool) for tool in ("pg_dump", "pg_restore", "psql")),
        reason="the PostgreSQL client tools (pg_dump, pg_restore, psql) are not installed",
    ),
    pytest.mark.timeout(600),  # some twenty CLI processes, each importing the app
]

BACKUP = Path(__file__).resolve().parents[2] / "deploy" / "backup"
PREFIX = os.environ.get("TEST_PG_DB_PREFIX", "ir_test")
ALICE, BOB = "alice@example.com", "bob@example.com"
ALICE_NAME, BOB_NAME = "Alice Sentinel", "Bob Sentinel"
PROMPTS = {ALICE: "sentinel prompt of alice", BOB: "sentinel prompt of bob"}


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


class Deployment:
    """One host's environment: the main database, the key store, the scripts."""

    def __init__(self, tmp: Path, keys_kind: str) -> None:
        self.main_db = f"{PREFIX}_backup_main"
        self.keys_db = f"{PREFIX}_backup_keys"
        self.data_dir = tmp / "data"
        self.keys_kind = keys_kind
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
            "DATA_DIR": str(self.data_dir),
            "DATABASE_URL": _pg_url(self.main_db),
            "PII_KEK": _key(),
            "BLIND_INDEX_KEY": _key(),
            "LOG_LEVEL": "WARNING",
            "IMAGE_ROUTER": str(BIN),
            "PYTHON": sys.executable,
        }
        if keys_kind == "postgresql":
            self.env["DATA_KEYS_URL"] = _pg_url(self.keys_db)
        else:
            self.env.pop("DATA_KEYS_URL", None)

    @property
    def keys_file(self) -> Path:
        return self.data_dir / "keys" / "data-keys.db"

    def run(self, *argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=120)
        if ok and done.returncode != 0:
            raise AssertionError(f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return done

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(str(BIN), *args, ok=ok)

    def script(self, name: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run(str(BACKUP / name), *args, ok=ok)

    def backup(self, name: str, dest: Path) -> Path:
        out = self.script(name, str(dest)).stdout.strip().splitlines()[-1]
        path = Path(out)
        assert path.parent == dest and path.stat().st_size > 0, out
        return path

    def wipe_main(self) -> None:
        asyncio.run(_recreate_pg(self.main_db))

    def wipe_keys(self) -> None:
        if self.keys_kind == "postgresql":
            asyncio.run(_recreate_pg(self.keys_db))
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.keys_file}{suffix}").unlink(missing_ok=True)

    def settings(self) -> Settings:
        return Settings(
            data_dir=self.data_dir,
            database_url=self.env["DATABASE_URL"],
            data_keys_url=self.env.get("DATA_KEYS_URL"),
            pii_kek=self.env["PII_KEK"],
            blind_index_key=self.env["BLIND_INDEX_KEY"],
        )

    def opened(self, account_id: str) -> dict[str, str | None]:
        """What the gateway's vault opens of the account's sealed name and prompts."""
        url = self.env["DATABASE_URL"]
        (row,) = asyncio.run(_fetch(url, "SELECT name_enc FROM accounts WHERE id = $1", account_id))
        prompts = asyncio.run(
            _fetch(url, "SELECT prompt_enc FROM generations WHERE account_id = $1", account_id)
        )
        assert row["name_enc"] is not None and prompts and prompts[0]["prompt_enc"] is not None

        async def open_all() -> dict[str, str | None]:
            vault = build_vault(self.settings())
            try:
                return {
                    "name": await vault.open(account_id, row["name_enc"]),
                    "prompt": await vault.open(account_id, prompts[0]["prompt_enc"]),
                }
            finally:
                await vault.close()

        return asyncio.run(open_all())

    def status(self, account_id: str) -> str:
        rows = asyncio.run(
            _fetch(
                self.env["DATABASE_URL"], "SELECT status FROM accounts WHERE id = $1", account_id
            )
        )
        return str(rows[0]["status"])


def _deployment(tmp_path: Path, keys_kind: str) -> Iterator[Deployment]:
    host = Deployment(tmp_path, keys_kind)
    asyncio.run(_recreate_pg(host.main_db))
    asyncio.run(_recreate_pg(host.keys_db))
    yield host
    asyncio.run(_drop(host.main_db))
    asyncio.run(_drop(host.keys_db))


@pytest.fixture(params=["postgresql", "sqlite"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """A host whose key store is a PostgreSQL database, or the default SQLite file."""
    yield from _deployment(tmp_path, request.param)


@pytest.fixture
def pg_deployment(tmp_path: Path) -> Iterator[Deployment]:
    yield from _deployment(tmp_path, "postgresql")


def _populate(host: Deployment) -> dict[str, str]:
    """Two accounts with credit, a name and a generation each, made by a real server."""
    ids = {}
    for email, name, usd in ((ALICE, ALICE_NAME, "10"), (BOB, BOB_NAME, "5")):
        host.cli("users", "create", email, "--name", name)
        host.cli("credits", "grant", email, usd, "--reason", "backup test")
        ids[email] = host.cli("users", "show", email, "--reason", "test").stdout.split()[1]
    keys = {e: host.cli("keys", "create", e).stdout.strip().splitlines()[-1] for e in ids}
    overrides = {k: v for k, v in host.env.items() if k in ("DATABASE_URL", "DATA_KEYS_URL")}
    overrides |= {"PII_KEK": host.env["PII_KEK"], "BLIND_INDEX_KEY": host.env["BLIND_INDEX_KEY"]}
    with running_server(host.data_dir, **overrides) as server:
        for email, key in keys.items():
            answer = httpx.post(
                f"{server.url}/v1/openai/images/generations",
                headers={"Authorization": f"Bearer {key}"},
                json={"model": "test/test", "prompt": PROMPTS[email], "size": "64x64"},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
    return ids


def test_an_older_main_backup_does_not_bring_erased_data_back(
    deployment: Deployment, tmp_path: Path
) -> None:
    host = deployment
    db_dir, keys_dir = tmp_path / "backups-db", tmp_path / "backups-keys"
    ids = _populate(host)
    alice, bob = ids[ALICE], ids[BOB]
    assert host.opened(bob) == {"name": BOB_NAME, "prompt": PROMPTS[BOB]}

    main_before = host.backup("backup-db.sh", db_dir)
    keys_before = host.backup("backup-keys.sh", keys_dir)
    host.cli("users", "delete", BOB, "--reason", "ticket 42", "--now")
    keys_after = host.backup("backup-keys.sh", keys_dir)

    # Both databases lost; the key store comes back from its newest backup (after the
    # erasure), the main database from one taken BEFORE the erasure.
    host.wipe_main()
    host.wipe_keys()
    host.script("restore-keys.sh", str(keys_after), "--no-reconcile")
    restored = host.script("restore-db.sh", str(main_before), ok=False)

    # Alice is back whole: her balance (equal to her ledger), her name and her prompt.
    credits = host.cli("credits", "show", ALICE).stdout
    assert "balance $10" in credits, credits
    assert host.opened(alice) == {"name": ALICE_NAME, "prompt": PROMPTS[ALICE]}
    # Bob's row is back from the old backup, but nothing of his opens: his data key was
    # destroyed by the erasure, and the key store was backed up and restored apart.
    assert host.status(bob) == "active"
    assert host.opened(bob) == {"name": None, "prompt": None}
    shown = host.cli("users", "show", bob, "--reason", "restore check").stdout
    assert "(erased)" in shown and BOB_NAME not in shown
    # The restore says so and stops, naming him.
    assert restored.returncode == 1, restored.stdout + restored.stderr
    assert f"no data key: account {bob}" in restored.stdout
    assert alice not in restored.stdout
    assert "erased after the main database's backup was taken" in restored.stderr

    # The operator erases him again: his API key, sessions and balance go too.
    again = host.cli("vault", "reconcile", "--erase")
    assert "erased again 1 account(s)" in again.stdout
    assert host.status(bob) == "deleted"
    assert host.status(alice) == "active"
    assert host.cli("vault", "reconcile").stdout.splitlines()[-1] == (
        "every live account's personal data has its data key"
    )

    # Now the key store is lost and comes back from a backup taken BEFORE the erasure:
    # it holds Bob's key again, and the restore destroys it before anything opens.
    host.wipe_keys()
    done = host.script("restore-keys.sh", str(keys_before))
    assert f"destroyed 1 data key(s) of erased accounts: {bob}" in done.stdout

    async def bob_key() -> bytes | None:
        vault = build_vault(host.settings())
        try:
            return await vault.key_for(bob, cached=False)
        finally:
            await vault.close()

    assert asyncio.run(bob_key()) is None
    assert host.opened(alice) == {"name": ALICE_NAME, "prompt": PROMPTS[ALICE]}
    assert "balance $10" in host.cli("credits", "show", ALICE).stdout


def test_backups_are_kept_apart_and_restores_refuse_to_mix(
    pg_deployment: Deployment, tmp_path: Path
) -> None:
    host = pg_deployment
    host.cli("users", "create", ALICE)
    shared = tmp_path / "one-place"
    main = host.backup("backup-db.sh", shared)
    refused = host.script("backup-keys.sh", str(shared), ok=False)
    assert refused.returncode == 1
    assert "holds backups of the main database" in refused.stderr
    # Key-store backups must age out before the erasure deadline.
    longer = host.script("backup-keys.sh", str(tmp_path / "keys"), "--keep-days", "31", ok=False)
    assert longer.returncode == 1 and "30-day erasure deadline" in longer.stderr
    # A restore never lands on a database that still holds tables...
    over = host.script("restore-db.sh", str(main), ok=False)
    assert over.returncode == 1 and "is not empty" in over.stderr
    # ...nor takes one database's backup for the other's.
    wrong = host.script("restore-keys.sh", str(main), ok=False)
    assert wrong.returncode == 1 and "is not a backup of the keys database" in wrong.stderr
