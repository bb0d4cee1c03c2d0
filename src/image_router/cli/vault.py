"""`image-router vault`: the keys that protect personal data.

Rotating the key-encryption key: put a new key (`image-router vault new-key`) in PII_KEK and
the old one in PII_KEK_PREVIOUS, restart the servers (both open data keys meanwhile), run
`image-router vault rewrap` with the same settings, then remove PII_KEK_PREVIOUS and
destroy the old key. Sealed values are never rewritten: only the data keys are re-wrapped.
"""

from __future__ import annotations

import base64
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.cli.common import fail, run_db, vault
from image_router.cli.privacy_admin import operator
from image_router.kit.crypto import new_key
from image_router.privacy import audit

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
