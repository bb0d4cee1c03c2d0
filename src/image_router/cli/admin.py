"""The operator's credit and access commands, twins of the website's operator area (`/admin`):
`credits grant` / `credits deduct`, `users set-password`, `users signin-link`.

They run the same use cases as the website (`admin/`): the ledger entry carries the reason,
and the audit log names the operator (the login name running the command).
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account import local_auth
from image_router.account import service as accounts
from image_router.admin import credits
from image_router.admin.credits import Operator
from image_router.cli.common import fail, run_db, settings, vault
from image_router.cli.privacy_admin import operator
from image_router.errors import OperatorError
from image_router.kit.money import MoneyFormatError, format_usd, parse_usd, usd_to_credits
from image_router.privacy import audit

ONCE_PATH = "/signin/once"

Reason = Annotated[str, typer.Option(help="Why (kept in the ledger and the audit log).")]


def add_credit_commands(credits_app: typer.Typer) -> None:
    credits_app.command("grant")(credits_grant)
    credits_app.command("deduct")(credits_deduct)


def add_user_commands(users_app: typer.Typer) -> None:
    users_app.command("set-password")(users_set_password)
    users_app.command("signin-link")(users_signin_link)


def _credits(usd: str) -> int:
    try:
        value = parse_usd(usd)
    except MoneyFormatError as exc:
        raise fail(str(exc)) from None
    if value <= 0:
        raise fail(f"'{usd}' must be a positive USD amount")
    return usd_to_credits(value)


def _reason(reason: str) -> str:
    if not reason.strip():
        raise fail("--reason must not be empty")
    return reason


def credits_grant(
    email: str,
    usd: str,
    reason: Reason,
    force: Annotated[
        bool, typer.Option("--force", help="Grant more than ADMIN_GRANT_MAX_USD at once.")
    ] = False,
) -> None:
    """Add USD of credit to an account (a ledger entry with its reason, audited)."""
    amount, why = _credits(usd), _reason(reason)
    cap = usd_to_credits(settings().payments.admin_grant_max_usd)

    async def work(conn: AsyncConnection) -> int:
        account = await accounts.require_account(conn, vault(), email)
        try:
            return await credits.grant(
                conn, account.id, amount, reason=why, by=Operator(operator()), cap=cap, force=force
            )
        except credits.OverCap as exc:
            raise OperatorError(f"{exc}: add --force to grant it anyway") from None

    balance = run_db(work)
    typer.echo(f"granted ${format_usd(amount)} to {email}; balance ${format_usd(balance)}")


def credits_deduct(email: str, usd: str, reason: Reason) -> None:
    """Take USD of credit off an account, never below zero (a ledger entry, audited)."""
    amount, why = _credits(usd), _reason(reason)

    async def work(conn: AsyncConnection) -> int:
        account = await accounts.require_account(conn, vault(), email)
        return await credits.deduct(conn, account.id, amount, reason=why, by=Operator(operator()))

    balance = run_db(work)
    typer.echo(f"deducted ${format_usd(amount)} from {email}; balance ${format_usd(balance)}")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise fail("no password on standard input")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise fail("no terminal to ask for the password: pipe it in with --stdin")
    first = typer.prompt("New password", hide_input=True)
    if first != typer.prompt("The same password again", hide_input=True):
        raise fail("the two passwords differ")
    return str(first)


def users_set_password(
    email: str,
    from_stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input (one line).")
    ] = False,
) -> None:
    """Set an account's password (asked twice on the terminal, or one line with --stdin);
    every session of the account is signed out."""
    if settings().auth.auth_provider != "local":
        raise fail("AUTH_PROVIDER=clerk: passwords are kept by Clerk, not here")
    password = _read_password(from_stdin)

    async def work(conn: AsyncConnection) -> None:
        account = await accounts.require_account(conn, vault(), email)
        await local_auth.set_password(conn, account.id, password)
        await audit.record(
            conn,
            actor_type="operator",
            actor_id=operator(),
            subject_account_id=account.id,
            action="password_set",
        )

    run_db(work)
    typer.echo(f"password set for {email}; its sessions were signed out")


async def signin_link(conn: AsyncConnection, account_id: str, *, actor: str) -> str:
    """A one-time sign-in link for the account (the path and token, audited)."""
    minutes = settings().auth.admin_signin_link_ttl_minutes
    token = await local_auth.issue_signin_link(conn, account_id, ttl=timedelta(minutes=minutes))
    await audit.record(
        conn,
        actor_type="operator" if actor != "system" else "system",
        actor_id=actor,
        subject_account_id=account_id,
        action="signin_link_issued",
    )
    return f"{ONCE_PATH}?token={token}"


def site_url() -> str:
    configured = settings()
    return (
        configured.serving.public_url
        or f"http://{configured.serving.host}:{configured.serving.port}"
    ).rstrip("/")


def users_signin_link(email: str) -> None:
    """Print a one-time sign-in link for an account (it asks for a new password, then signs
    in; valid ADMIN_SIGNIN_LINK_TTL_MINUTES, once)."""
    if settings().auth.auth_provider != "local":
        raise fail("AUTH_PROVIDER=clerk: people sign in through Clerk")

    async def work(conn: AsyncConnection) -> str:
        account = await accounts.require_account(conn, vault(), email)
        return await signin_link(conn, account.id, actor=operator())

    path = run_db(work)
    minutes = settings().auth.admin_signin_link_ttl_minutes
    typer.echo(f"one-time sign-in link for {email} (works once, within {minutes} minutes):")
    typer.echo(site_url() + path)
