"""The operator's command line: serve, migrate, accounts, keys, credits, catalog.

Accounts are named by e-mail. Every command exits with status 1 and a one-line message on
bad input (unknown account, malformed amount...), never with a traceback.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from decimal import Decimal
from typing import Annotated, TypeVar

import typer
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account import managed_keys
from image_router.account import service as accounts
from image_router.admin import directory
from image_router.admin.credits import Operator
from image_router.cli import admin as admin_commands
from image_router.cli import erasure as erasure_commands
from image_router.cli import export as export_command
from image_router.cli import privacy_admin, serving, startup
from image_router.cli.common import fail, run_db, vault
from image_router.cli.retention import retention_app
from image_router.cli.vault import vault_app
from image_router.config import Settings, set_variable_names
from image_router.db.migrate import upgrade
from image_router.db.tables import Account
from image_router.kit.clock import utcnow
from image_router.kit.money import (
    format_usd,
)
from image_router.ledger import service as ledger
from image_router.limits import bans
from image_router.observability.logging import configure_logging
from image_router.observability.metrics import MULTIPROC_ENV
from image_router.providers import PROVIDERS
from image_router.resources import provider_problem

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
users_app = typer.Typer(no_args_is_help=True, help="Accounts.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys.")
credits_app = typer.Typer(no_args_is_help=True, help="Credits (prepaid balance).")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
catalog_app = typer.Typer(no_args_is_help=True, help="The model catalog.")
providers_app = typer.Typer(no_args_is_help=True, help="Upstream vendors and route health.")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
app.add_typer(credits_app, name="credits")
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
app.add_typer(providers_app, name="providers")
bans_app = typer.Typer(no_args_is_help=True, help="Banned IP addresses and networks.")
app.add_typer(bans_app, name="bans")
app.add_typer(privacy_admin.audit_app, name="audit")
app.add_typer(privacy_admin.dsr_app, name="dsr")
app.add_typer(retention_app, name="retention")
app.add_typer(vault_app, name="vault")
privacy_admin.add_user_commands(users_app)  # users show | restrict | unrestrict
users_app.command("export")(export_command.users_export)
erasure_commands.add_user_commands(users_app)  # users delete
admin_commands.add_user_commands(users_app)  # users set-password | signin-link
admin_commands.add_credit_commands(credits_app)  # credits grant | deduct


_fail = fail
_run = run_db


# ------------------------------------------------------------------------------- serve


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Interface to listen on (default: HOST, 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (default: PORT, 8000).")] = None,
    workers: Annotated[
        str,
        typer.Option(
            help="Worker processes: a number, or 'auto' for one per CPU core "
            "(PostgreSQL; SQLite has one writer, so one worker)."
        ),
    ] = "1",
) -> None:
    """Serve the API (and website) on HOST:PORT. Migrates and bootstraps first."""
    import uvicorn

    configured = Settings()
    count = worker_count(workers, sqlite=configured.storage.is_sqlite, cores=_cores())
    host = host or configured.serving.host
    port = port or configured.serving.port
    if not os.environ.get("PUBLIC_URL"):
        shown = "localhost" if host in ("0.0.0.0", "::") else host
        os.environ["PUBLIC_URL"] = f"http://{shown}:{port}"
    settings = Settings()
    configure_logging(settings.observability.log_level, settings.observability.log_format)
    for line in startup.variable_warnings(set_variable_names()):
        typer.echo(line, err=True)
    for line in startup.vendor_report(settings):
        typer.echo(line)
    created = _run(_bootstrap_admin)
    if created is not None:
        email, secret, link = created
        typer.echo(
            f"First start: created the admin account {email} and its API key "
            "(shown only this once; store it now):"
        )
        typer.echo(secret)
        if link is not None:
            typer.echo(
                "Sign in to the website as the admin with this one-time link (it asks for a "
                f"password; works once, within {settings.auth.admin_signin_link_ttl_minutes} "
                "minutes; later: image-router users signin-link EMAIL or users set-password):"
            )
            typer.echo(os.environ["PUBLIC_URL"].rstrip("/") + link)
    if count > 1:
        # Before the workers start (they read it when they import prometheus_client).
        metrics_dir = serving.prepare_metrics_dir(os.environ.get(MULTIPROC_ENV))
        os.environ[MULTIPROC_ENV] = str(metrics_dir)
    typer.echo(f"Serving Image Router on {os.environ['PUBLIC_URL']} ({count} worker(s))")
    config = uvicorn.Config(
        "image_router.app:create_app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=count,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,  # keep our handler: uvicorn's default config would replace it
        log_level=settings.observability.log_level.lower(),
        timeout_keep_alive=30,
        backlog=4096,
        # A spawned worker answers the supervisor's ping only once it has re-imported
        # this CLI; uvicorn's 5 s default kills it before that on a busy machine, and
        # respawns it forever: a restarted host never served again (bench/soak.py).
        timeout_worker_healthcheck=60,
        # The app cuts off what still runs after SHUTDOWN_DRAIN_S and answers it 503
        # (kit/drain.py); uvicorn's own cancellation, which answers 500, only backs it up.
        timeout_graceful_shutdown=serving.uvicorn_grace_s(settings.serving.shutdown_drain_s),
    )
    serving.run(config)


def worker_count(asked: str, *, sqlite: bool, cores: int) -> int:
    """`--workers`: a positive number, or `auto` (one per core, or one on SQLite).

    SQLite takes one writer at a time: several processes writing the same file queue on
    its lock (and time out under load), so more than one worker there is refused.
    """
    if asked.strip().lower() == "auto":
        return 1 if sqlite else max(1, cores)
    try:
        count = int(asked)
    except ValueError:
        raise _fail(f"--workers wants a number or 'auto', not {asked!r}") from None
    if count < 1:
        raise _fail(f"--workers wants at least 1, not {count}")
    if count > 1 and sqlite:
        raise _fail(
            f"--workers {count} needs PostgreSQL (DATABASE_URL=postgresql+asyncpg://...): "
            "SQLite has one writer, so it is served by one worker"
        )
    return count


def _cores() -> int:
    """The CPU cores this process may run on (its affinity, e.g. under taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


async def _bootstrap_admin(conn: AsyncConnection) -> tuple[str, str, str | None] | None:
    """On the very first start (no account at all), create the admin, one key and (local
    sign-in) a one-time sign-in link's path."""
    if await conn.scalar(select(func.count()).select_from(Account)):
        return None
    settings = Settings()
    try:
        admin = await accounts.create_account(
            conn, vault(), settings.auth.bootstrap_admin_email, role="admin"
        )
    except accounts.AccountError as exc:
        if not isinstance(exc.__cause__, IntegrityError):
            raise
        # Another host starting on the same fresh database counted no account either and
        # created the admin first (its insert held the unique e-mail until it committed):
        # the admin is there, which is all this start needs. That host printed its key.
        typer.echo("The admin account was created by another host starting at the same time.")
        return None
    _, secret = await accounts.create_key(conn, admin.id, "bootstrap")
    link = None
    if settings.auth.auth_provider == "local":
        link = await admin_commands.signin_link(conn, admin.id, actor="system")
    return admin.email, secret, link


# ------------------------------------------------------------------------------- db


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration to DATABASE_URL."""
    settings = Settings()
    settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(upgrade(settings.storage.resolved_database_url()))
    typer.echo("database is up to date")


# ------------------------------------------------------------------------------- users


@users_app.command("create")
def users_create(
    email: str,
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Give operator rights.")] = False,
) -> None:
    """Create an account."""

    async def work(conn: AsyncConnection) -> accounts.AccountView:
        return await accounts.create_account(
            conn, vault(), email, name=name, role="admin" if admin else "user"
        )

    account = _run(work)
    typer.echo(f"created account {account.email} ({account.id})")


@users_app.command("list")
def users_list(
    reason: Annotated[
        str | None,
        typer.Option(help="Show e-mails in full; kept in the audit log (no personal data)."),
    ] = None,
) -> None:
    """List accounts with their balances. E-mails are masked unless a --reason is given."""

    async def work(conn: AsyncConnection) -> directory.Listing:
        by = Operator(privacy_admin.operator())
        return await directory.list_accounts(conn, vault(), by=by, reason=reason)

    if reason is not None and not reason.strip():
        raise _fail("--reason must say why")
    for account in reversed(_run(work).accounts):  # oldest first, as before
        typer.echo(f"{account.email}\t{account.role}\t${format_usd(account.balance)}\t{account.id}")


# ------------------------------------------------------------------------------- keys


@keys_app.command("create")
def keys_create(
    email: str,
    name: Annotated[str, typer.Option(help="A name to recognise it by.")] = "default",
    management: Annotated[
        bool,
        typer.Option("--management", help="A management key: manages keys, cannot generate."),
    ] = False,
    spend_limit: Annotated[
        str | None, typer.Option("--spend-limit", help="Most USD the key may spend.")
    ] = None,
    period: Annotated[
        str | None,
        typer.Option(help="Window of --spend-limit: day, week or month (UTC); default lifetime."),
    ] = None,
    expires: Annotated[
        str | None, typer.Option(help="Expiry, ISO 8601 (UTC unless an offset is given).")
    ] = None,
) -> None:
    """Create an API key; the key itself is printed alone on the last line, once."""
    if period is not None and spend_limit is None:
        raise _fail("--period needs --spend-limit")

    async def work(conn: AsyncConnection) -> tuple[accounts.KeyView, str]:
        # Parsed in here so a bad value is reported like every other bad input.
        limit = managed_keys.parse_spend_limit(spend_limit)
        expires_at = managed_keys.parse_expiry(expires, utcnow())
        account = await accounts.require_account(conn, vault(), email)
        return await accounts.create_key(
            conn,
            account.id,
            name,
            management=management,
            spend_limit=limit,
            spend_limit_period=managed_keys.parse_period(period),
            expires_at=expires_at,
        )

    key, secret = _run(work)
    kind = "management key" if key.is_management else "key"
    typer.echo(f"created {kind} {key.id} '{key.name}' for {email} (shown once):")
    typer.echo(secret)


@keys_app.command("list")
def keys_list(email: str) -> None:
    """List an account's keys (never the secrets)."""

    async def work(conn: AsyncConnection) -> list[accounts.KeyView]:
        account = await accounts.require_account(conn, vault(), email)
        return await accounts.list_keys(conn, account.id)

    now = utcnow()
    for key in _run(work):
        used = key.last_used_at.isoformat() if key.last_used_at else "never used"
        typer.echo(
            f"{key.id}\t{key.name}\t{key.prefix}…{key.last_four}\t{_key_state(key, now)}\t"
            f"{used}\t{'management' if key.is_management else 'normal'}\t{_key_limit(key)}\t"
            + (f"expires {key.expires_at.isoformat()}" if key.expires_at else "no expiry")
        )


def _key_state(key: accounts.KeyView, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if not key.is_active:
        return "disabled"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def _key_limit(key: accounts.KeyView) -> str:
    if key.spend_limit is None:
        return "no spend limit"
    return f"limit ${format_usd(key.spend_limit)}/{key.spend_limit_period or 'lifetime'}"


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key; it stops working at the next request."""

    async def work(conn: AsyncConnection) -> None:
        await accounts.revoke_key(conn, key_id)

    _run(work)
    typer.echo(f"revoked key {key_id}")


# ------------------------------------------------------------------------------- credits


@credits_app.command("show")
def credits_show(email: str) -> None:
    """Show an account's balance and check it against its ledger."""

    async def work(conn: AsyncConnection) -> tuple[int, int, int]:
        account = await accounts.require_account(conn, vault(), email)
        balance, entries = await ledger.books(conn, account.id)
        return balance, entries, await ledger.deposits(conn, account.id)

    balance, entries, deposits = _run(work)
    typer.echo(f"balance ${format_usd(balance)} (deposits ${format_usd(deposits)})")
    if balance != entries:
        raise _fail(f"ledger mismatch: entries sum to ${format_usd(entries)}")


# ------------------------------------------------------------------------------- catalog


@catalog_app.command("check")
def catalog_check() -> None:
    """List every model and route as enabled or disabled, and why."""
    from image_router.catalog.fallbacks import dearer_fallbacks
    from image_router.catalog.loader import load_catalog
    from image_router.catalog.spec import CatalogError

    settings = Settings()
    try:
        catalog = load_catalog(
            settings.generation.catalog_paths,
            image_inputs={pid: cls.image_inputs for pid, cls in PROVIDERS.items()},
        )
    except CatalogError as exc:
        raise _fail(str(exc)) from None
    enabled_models = 0
    dearer: list[str] = []
    for spec in catalog.models.values():
        dearer.extend(
            f"    {spec.id} → {d.route.provider} {d.route.upstream}: up to "
            f"${_usd_text(d.usd)} where the first route holds ${_usd_text(d.first_usd)}"
            for d in dearer_fallbacks(spec)
        )
        lines = []
        any_enabled = False
        for route in spec.routes:
            reason = provider_problem(settings, route.provider)
            any_enabled = any_enabled or reason is None
            lines.append(
                f"    {route.provider:<12} {route.upstream:<50} "
                f"{'enabled' if reason is None else 'disabled: ' + reason}"
            )
        enabled_models += any_enabled
        typer.echo(f"{spec.id} [{spec.modality}] {'enabled' if any_enabled else 'disabled'}")
        for line in lines:
            typer.echo(line)
    if dearer:
        typer.echo(
            f"{len(dearer)} routes priced above their model's first route (tried as "
            "fallbacks only when the account can pay the difference):"
        )
        for line in dearer:
            typer.echo(line)
    typer.echo(f"{enabled_models} of {len(catalog.models)} models enabled")


def _usd_text(usd: Decimal) -> str:
    """0.6, not 0.600."""
    return format(usd.normalize(), "f")


@providers_app.command("status")
def providers_status(
    url: Annotated[
        str | None, typer.Option(help="The running server (default: PUBLIC_URL).")
    ] = None,
) -> None:
    """Show every vendor (enabled or why not) and each route's learned health."""
    import httpx

    settings = Settings()
    base = (
        url
        or settings.serving.public_url
        or _local_url(settings.serving.host, settings.serving.port)
    ).rstrip("/")
    try:
        response = httpx.get(f"{base}/v1/providers/status", timeout=10)
        response.raise_for_status()
        body = response.json()
    except httpx.ConnectError:
        raise _fail(
            f"nothing answers at {base} (connection refused): is `image-router serve` "
            "running there? Pass --url http://HOST:PORT, or set PUBLIC_URL or HOST/PORT "
            "as for serve"
        ) from None
    except (httpx.HTTPError, ValueError) as exc:
        raise _fail(f"could not read {base}/v1/providers/status: {exc}") from None
    for pid, state in body["providers"].items():
        typer.echo(f"{pid:<14} {'enabled' if state['enabled'] else 'disabled: ' + state['reason']}")
    shared = "shared through Redis" if body["policy"]["shared"] else "this worker only"
    typer.echo(f"\nroutes ({shared}):")
    if not body["routes"]:
        typer.echo("  no route has been used yet")
    for key, h in body["routes"].items():
        latency = "-" if h["latency_ms"] is None else f"{h['latency_ms']} ms"
        typer.echo(
            f"  {key:<60} {h['state']:<9} errors {h['error_rate']:.0%}  latency {latency}"
            f"  ({h['samples']} samples)"
        )


def _local_url(host: str, port: int) -> str:
    """Where a client on this machine reaches `serve` listening on host:port."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # listening everywhere: loopback answers too
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


# ------------------------------------------------------------------------------- bans


@bans_app.command("add")
def bans_add(
    network: str,
    reason: Annotated[str, typer.Option(help="Why (kept with the ban).")],
) -> None:
    """Refuse an address or CIDR network (IPv4 or IPv6) on the generation routes."""
    if not reason.strip():
        raise _fail("--reason must not be empty")
    ban = _run(lambda conn: bans.add_ban(conn, network, reason))
    typer.echo(f"banned {ban.network} (running servers apply it within BANS_REFRESH_S)")


@bans_app.command("list")
def bans_list() -> None:
    """List bans: the database's, then those of BANNED_NETWORKS."""
    for ban in _run(bans.list_bans):
        typer.echo(f"{ban.network}\t{ban.created_at.isoformat()}\t{ban.reason or ''}")
    for network in Settings().limits.banned_networks:
        typer.echo(f"{network}\t(configuration)\tBANNED_NETWORKS")


@bans_app.command("remove")
def bans_remove(network: str) -> None:
    """Lift a ban made with `bans add` (configured ones live in BANNED_NETWORKS)."""
    removed = _run(lambda conn: bans.remove_ban(conn, network))
    typer.echo(f"unbanned {removed}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
