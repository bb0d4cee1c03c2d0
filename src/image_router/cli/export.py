"""`image-router users export`: an operator exports an account's data (DSR-1, DSR-8).

For a request that arrived by e-mail or post: record it (`dsr add`), export with
`--request` to close it, and send the file to the person by a channel you trust. The export
decrypts personal data, so `--reason` is required and an audit entry ("export", actor the
operator's login name) is appended before the file is written.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Annotated

import typer

from image_router.account.service import AccountError
from image_router.cli.common import fail, settings
from image_router.cli.privacy_admin import Reason, _required_reason, account_id_of, operator
from image_router.db.migrate import upgrade
from image_router.db.session import unit_of_work
from image_router.kit.clock import utcnow
from image_router.privacy import export
from image_router.privacy import requests as dsr
from image_router.resources import build_resources


def users_export(
    who: Annotated[str, typer.Argument(help="Account e-mail or id.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the ZIP file.")],
    reason: Reason = None,
    request: Annotated[
        str | None, typer.Option(help="The recorded request (dsr add) this fulfils.")
    ] = None,
) -> None:
    """Write an account's data export (the same ZIP the person can download) to --out."""
    why = _required_reason(reason, "an export discloses the person's data")
    if out.exists():
        raise fail(f"{out} exists; choose another file name")
    if not out.parent.is_dir():
        raise fail(f"{out.parent} is not a directory")
    try:
        built = asyncio.run(_export(who, out, why, request))
    except (AccountError, dsr.RequestError, export.AccountMissing) as exc:
        raise fail(str(exc)) from None
    typer.echo(f"wrote {out} ({built.size} bytes, sha256 {built.sha256})")


async def _export(who: str, out: Path, why: str, request: str | None) -> export.ExportFile:
    config = settings()
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)
    if config.storage.auto_migrate:
        await upgrade(config.storage.resolved_database_url())
    res = build_resources(config)
    try:
        async with unit_of_work(res.engine) as conn:
            account_id = await account_id_of(conn, who)
        now = utcnow()
        async with res.export.build(account_id, now) as built:
            actor = export.ExportActor("operator", operator(), reason=why)
            async with unit_of_work(res.engine) as conn:
                if request is not None:
                    if (await dsr.get_request(conn, request)).account_id != account_id:
                        raise dsr.RequestError(f"request {request} is not about {who}")
                    await dsr.close_request(conn, request, handled_by=operator(), now=now)
                await export.record_export(conn, account_id, actor)
            await asyncio.to_thread(shutil.copyfile, built.path, out)
        return built
    finally:
        await res.close()
