"""What every command shares: settings, the vault, one database unit of work, failing cleanly.

Every command exits with status 1 and a one-line message on bad input, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import cache
from typing import TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account.personal_data import Vault
from image_router.account.service import AccountError
from image_router.config import Settings
from image_router.db.migrate import upgrade
from image_router.db.outage import is_outage
from image_router.db.session import make_engine, unit_of_work
from image_router.errors import OperatorError
from image_router.kit.money import MoneyFormatError
from image_router.resources import build_key_changes, build_vault

T = TypeVar("T")


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)


@cache
def settings() -> Settings:
    return Settings()


@cache
def vault() -> Vault:
    return build_vault(settings())


def run_db(work: Callable[[AsyncConnection], Awaitable[T]], *, migrate: bool = True) -> T:
    """Run one database unit of work with the configured database."""
    config = settings()
    config.storage.data_dir.mkdir(parents=True, exist_ok=True)

    async def main() -> T:
        url = config.storage.resolved_database_url()
        if migrate and config.storage.auto_migrate:
            await upgrade(url)
        engine = make_engine(
            url,
            pool_size=config.storage.db_pool_size,
            max_overflow=config.storage.db_max_overflow,
        )
        # A revoked key, a restricted account, a grant: the servers' key caches hear of it
        # before the command returns (account/key_changes.py).
        notify = build_key_changes(config, cache=False).attach(engine)
        try:
            async with unit_of_work(engine) as conn:
                return await work(conn)
        finally:
            await notify.close()
            await engine.dispose()
            await vault().close()  # its key store's connections belong to this event loop

    try:
        return asyncio.run(main())
    except (AccountError, OperatorError, MoneyFormatError, ValueError) as exc:
        raise fail(str(exc)) from None
    except Exception as exc:
        # The database away (restarting, cut off, refusing connections; the migration's own
        # connection included): one line, exit 1, like any other operator error. Nothing
        # was written: the unit of work never committed.
        if isinstance(exc, ConnectionError | TimeoutError) or is_outage(exc):
            raise fail(f"cannot reach the database ({exc}); the command did not complete") from None
        raise
