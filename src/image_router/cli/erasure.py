"""`image-router users delete`: erase an account on the person's behalf (DSR-2, DSR-8).

For requests that arrive by e-mail or post. The same code path as `DELETE /v1/account`:
keys and sessions stop at once, the request is recorded with its due date, and the erasure
job does the rest, in a running server's background worker, or here and now with --now.
The operator and --reason go to the audit entry (so the reason must hold no personal data).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.cli.common import fail, run_db, settings, vault
from image_router.cli.privacy_admin import account_id_of, operator
from image_router.db.tables import Account
from image_router.privacy import erasure
from image_router.resources import build_resources


def add_user_commands(users_app: typer.Typer) -> None:
    users_app.command("delete")(users_delete)


def users_delete(
    who: Annotated[str, typer.Argument(metavar="EMAIL", help="The account's e-mail (or id).")],
    reason: Annotated[
        str | None, typer.Option(help="Why, e.g. the ticket number (no personal data).")
    ] = None,
    now: Annotated[
        bool, typer.Option("--now", help="Run the erasure here and now, not in the server.")
    ] = False,
) -> None:
    """Erase an account: its personal data, prompts, outputs and keys. Cannot be undone.

    The remaining balance is forfeited; ledger, top-ups and usage metadata are kept.
    """
    if reason is None or not reason.strip():
        raise fail("--reason is required: erasure is recorded in the audit log")
    why = reason.strip()

    async def queue(conn: AsyncConnection) -> tuple[str, str | None, datetime]:
        account_id = await account_id_of(conn, who)
        status = await conn.scalar(select(Account.status).where(Account.id == account_id))
        due = await erasure.queue_erasure(
            conn,
            vault(),
            account_id,
            channel="cli",
            delete_clerk_user=True,
            requested_by=operator(),
            reason=why,
        )
        return account_id, status, due

    account_id, status, due = run_db(queue)
    if status == erasure.DELETED:
        typer.echo(f"account {account_id} is already erased")
        return
    if status == erasure.PENDING and not now:
        typer.echo(f"erasure of account {account_id} was already queued (due {due.date()})")
        return
    if not now:
        typer.echo(
            f"erasure of account {account_id} queued (due {due.date().isoformat()}); "
            "a running server carries it out"
        )
        return
    if asyncio.run(_erase_now(account_id)):
        typer.echo(f"account {account_id} erased")
    else:
        typer.echo(
            f"account {account_id} has a generation still running; its erasure is queued "
            "to run once it has finished"
        )


async def _erase_now(account_id: str) -> bool:
    res = build_resources(settings())
    try:
        return await res.erasure.erase_now(account_id)
    except erasure.ErasureError as exc:
        raise fail(str(exc)) from None
    finally:
        await res.close()
