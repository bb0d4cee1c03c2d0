"""`image-router retention purge`: run the retention purge now (RET-1, privacy-payments.md §3.4).

The server already purges every PURGE_INTERVAL_S; this is for operators (a cron job, a
check before an audit) and for tests with an injected clock (`--now`). It prints one count
per category, never contents. `--dry-run` counts what would go and changes nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer

from image_router.cli.common import fail, settings
from image_router.db.migrate import upgrade
from image_router.privacy import retention
from image_router.resources import build_resources

retention_app = typer.Typer(
    no_args_is_help=True, help="Retention: delete what is kept past its period."
)


@retention_app.command("purge")
def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what would be purged.")
    ] = False,
    now: Annotated[
        str | None,
        typer.Option(help="Purge as of this ISO 8601 time (UTC unless it has an offset)."),
    ] = None,
) -> None:
    """Purge every category of the retention schedule and print the counts."""
    moment = _moment(now)
    config = settings()
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> retention.PurgeReport:
        if config.storage.auto_migrate:
            await upgrade(config.storage.resolved_database_url())
        res = build_resources(config)
        try:
            return await res.retention.purge(now=moment, dry_run=dry_run)
        finally:
            await res.close()

    report = asyncio.run(main())
    as_of = report.now.isoformat(timespec="seconds")
    typer.echo(
        f"dry run as of {as_of}: would purge (nothing was changed)"
        if dry_run
        else f"purged as of {as_of}:"
    )
    for name, count in report.counts().items():
        typer.echo(f"  {name}: {count}")
    if report.failed:
        raise fail(f"purging {', '.join(report.failed)} failed (see the log); run it again")


def _moment(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise fail(f"--now: not an ISO 8601 date or time: {value!r}") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
