"""`image-router vault`: the keys that protect personal data.

Rotating the key-encryption key: put a new key (`image-router vault new-key`) in PII_KEK and
the old one in PII_KEK_PREVIOUS, restart the servers (both open data keys meanwhile), run
`image-router vault rewrap` with the same settings, then remove PII_KEK_PREVIOUS and
destroy the old key. Sealed values are never rewritten: only the data keys are re-wrapped.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Annotated

import typer
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.cli.common import fail, run_db, settings, vault
from image_router.cli.privacy_admin import operator
from image_router.errors import OperatorError
from image_router.kit.crypto import new_key
from image_router.privacy import audit, erasure, key_reconcile
from image_router.resources import build_resources

vault_app = typer.Typer(no_args_is_help=True, help="Keys protecting personal data.")


@vault_app.command("new-key")
def vault_new_key() -> None:
    """Print a fresh 32-byte key (base64), for PII_KEK or BLIND_INDEX_KEY."""
    typer.echo(base64.b64encode(new_key()).decode())


@vault_app.command("rewrap")
def vault_rewrap(
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "KEK rotation",
) -> None:
    """Re-wrap every data key still under a key of PII_KEK_PREVIOUS with PII_KEK."""
    keys = vault()
    if not keys.previous:
        raise fail("set PII_KEK_PREVIOUS to the key being replaced (and PII_KEK to the new one)")

    async def work(conn: AsyncConnection) -> int:
        count = await keys.rewrap()
        await audit.record(
            conn,
            actor_type="operator",
            actor_id=operator(),
            subject_account_id=None,
            action="kek_rotation",
            reason=reason,
        )
        return count

    count = run_db(work)
    typer.echo(f"re-wrapped {count} data key(s) under PII_KEK {keys.kek_id}")


@vault_app.command("reconcile")
def vault_reconcile(
    erase: Annotated[
        bool,
        typer.Option(
            "--erase",
            help="Erase again the live accounts whose data key is gone (read the list first).",
        ),
    ] = False,
    reason: Annotated[
        str, typer.Option(help="Why (kept in the audit log of each erasure).")
    ] = "erased before the main database was restored from a backup",
) -> None:
    """After restoring a backup: destroy the data keys of erased accounts again, and list
    (or, with --erase, erase again) live accounts whose data key is gone.

    Exits 1 while such accounts remain, so a restore script stops on it.
    """

    async def work(conn: AsyncConnection) -> key_reconcile.KeyReconciliation:
        if not await conn.run_sync(lambda sync: inspect(sync).has_table("accounts")):
            # Not migrated here: a key store restored first must not give the empty main
            # database a schema that its own restore would then refuse.
            raise OperatorError(
                "the main database (DATABASE_URL) has no tables: restore it first "
                "(deploy/backup/restore-db.sh), which reconciles both"
            )
        found = await key_reconcile.reconcile_keys(conn, vault())
        for account_id in found.keyless if erase else ():
            await erasure.queue_erasure(
                conn,
                vault(),
                account_id,
                channel="cli",
                delete_clerk_user=True,
                requested_by=operator(),
                reason=reason,
            )
        return found

    found = run_db(work, migrate=False)
    typer.echo(
        f"destroyed {len(found.destroyed)} data key(s) of erased accounts"
        + (f": {', '.join(found.destroyed)}" if found.destroyed else "")
    )
    if not found.keyless:
        typer.echo("every live account's personal data has its data key")
        return
    if not erase:
        for account_id in found.keyless:
            typer.echo(f"no data key: account {account_id}")
        raise fail(
            f"{len(found.keyless)} live account(s) hold personal data without a data key: "
            "erased after the main database's backup was taken (erase them again with "
            "--erase, before the gateways start), or created after the key store's backup "
            "(their personal data is lost)"
        )
    unfinished = asyncio.run(_erase_all(found.keyless))
    typer.echo(f"erased again {len(found.keyless) - len(unfinished)} account(s)")
    if unfinished:
        raise fail(
            f"{len(unfinished)} account(s) have a generation running; their erasure is "
            f"queued and a running server finishes it: {', '.join(unfinished)}"
        )


async def _erase_all(account_ids: list[str]) -> list[str]:
    """Run the queued erasures here and now; the ids whose erasure had to wait."""
    res = build_resources(settings())
    try:
        return [a for a in account_ids if not await res.erasure.erase_now(a)]
    except erasure.ErasureError as exc:
        raise fail(str(exc)) from None
    finally:
        await res.close()
