"""`image-router retention purge [--dry-run] [--now ISO]` on the gateway's own database and
storage directory: counts per category, never contents; a dry run changes nothing."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import Gateway
from tests.integration.test_retention import IMAGE, PROMPT

BIN = Path(sys.executable).parent / "image-router"


async def cli(gw: Gateway, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    settings = gw.res.settings
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        DATABASE_URL=settings.storage.resolved_database_url(),
        DATA_DIR=str(settings.storage.data_dir),  # the same key files and outputs directory
        PUBLIC_URL="http://gateway.test",
        AUTO_MIGRATE="false",
        LOG_LEVEL="WARNING",
    )
    return await asyncio.to_thread(
        subprocess.run,
        [str(BIN), "retention", "purge", *args],
        env=env,
        cwd=cwd,  # no stray .env
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_dry_run_prints_counts_and_changes_nothing_then_purge_does(
    any_gateway: Gateway, tmp_path: Path
) -> None:
    _, key = await any_gateway.account()
    body = (
        await any_gateway.post(IMAGE, key, json={"model": "test/test", "prompt": PROMPT})
    ).json()
    url = body["data"][0]["url"]
    [stored] = await any_gateway.generations()
    later = stored["created_at"] + (stored["content_expires_at"] - stored["created_at"]) * 2
    when = later.isoformat()

    dry = await cli(any_gateway, tmp_path, "--dry-run", "--now", when)
    assert dry.returncode == 0, dry.stderr
    assert "nothing was changed" in dry.stdout
    for line in ("prompts: 1", "outputs: 1", "output_files: 1", "usage_rows: 0"):
        assert line in dry.stdout
    assert PROMPT not in dry.stdout + dry.stderr
    [unchanged] = await any_gateway.generations()
    assert unchanged["prompt"] == PROMPT
    assert (await any_gateway.client.get(url)).status_code == 200

    done = await cli(any_gateway, tmp_path, "--now", when)
    assert done.returncode == 0, done.stderr
    assert "prompts: 1" in done.stdout and "output_files: 1" in done.stdout
    assert PROMPT not in done.stdout + done.stderr
    [purged] = await any_gateway.generations()
    assert purged["prompt"] is None and purged["output_urls"] == []
    assert (await any_gateway.client.get(url)).status_code == 404


async def test_a_malformed_time_is_refused(gateway: Gateway, tmp_path: Path) -> None:
    done = await cli(gateway, tmp_path, "--now", "next tuesday")
    assert done.returncode == 1
    assert "--now" in done.stderr and "Traceback" not in done.stderr
