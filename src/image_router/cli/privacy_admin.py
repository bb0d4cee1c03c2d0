"""Privacy operations: the audit log, audited views of personal data, restriction of
processing, and data-subject requests received outside the product (privacy-payments.md
§4.4; SEC-4, SEC-7, DSR-4, DSR-8).

Every command that shows personal data requires --reason and appends an audit entry naming
the operator (the login name running the command) and the fields shown, never their values.
Accounts are named by e-mail (found through its blind index) or by id.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from image_router.account import service as accounts
from image_router.cli.common import fail, run_db, vault
from image_router.db.tables import Account
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.privacy import audit, breach, restriction
from image_router.privacy import requests as dsr

audit_app = typer.Typer(no_args_is_help=True, help="The audit log of access to personal data.")
dsr_app = typer.Typer(no_args_is_help=True, help="Data-subject requests and their due dates.")

Reason = Annotated[str | None, typer.Option(help="Why (kept in the audit log; no personal data).")]


def add_user_commands(users_app: typer.Typer) -> None:
    """Add the audited `show`, `restrict` and `unrestrict` commands to the `users` group."""
    users_app.command("show")(users_show)
    users_app.command("restrict")(users_restrict)
    users_app.command("unrestrict")(users_unrestrict)


def operator() -> str:
    """Who is running the command, as the audit log names them."""
    try:
        return getpass.getuser()[:64]
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown-operator"


def _required_reason(reason: str | None, why: str) -> str:
    if reason is None or not reason.strip():
        raise fail(f"--reason is required: {why}")
    return reason.strip()


def _moment(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 date or date-time (UTC unless it has an offset)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise fail(f"{option} '{value}' is not an ISO 8601 date or date-time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def account_id_of(conn: AsyncConnection, who: str) -> str:
    """The id of the account named by e-mail or id, without decrypting anything."""
    if "@" in who:
        found = await accounts.find_account_id(conn, vault(), who)
        if found is None:
            raise accounts.AccountError(f"no account with e-mail {who.strip().lower()}")
        return found
    if await conn.scalar(select(Account.id).where(Account.id == who.strip())) is None:
        raise accounts.AccountError(f"no account with id {who}")
    return who.strip()


# ------------------------------------------------------------------------------- audit


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the hash chain; exit 1 naming the first entry that does not fit."""
    result = run_db(audit.verify)
    if not result.ok:
        raise fail(f"audit log broken at entry {result.first_bad_id}: {result.problem}")
    pruned = " (older entries removed by retention)" if result.pruned else ""
    typer.echo(f"audit log intact: {result.checked} entries{pruned}")
    if result.head:
        typer.echo(f"newest hash: {result.head}")


@audit_app.command("list")
def audit_list(
    subject: Annotated[str | None, typer.Option(help="Account e-mail or id.")] = None,
    since: Annotated[str | None, typer.Option(help="From (ISO 8601, inclusive).")] = None,
    until: Annotated[str | None, typer.Option(help="Until (ISO 8601, exclusive).")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
) -> None:
    """List entries, oldest first: id, time, actor, action, subject, fields, reason."""
    start, end = _moment(since, "--since"), _moment(until, "--until")

    async def work(conn: AsyncConnection) -> list[audit.AuditRecord]:
        account_id = None if subject is None else await account_id_of(conn, subject)
        return await audit.entries(conn, subject=account_id, since=start, until=end, action=action)

    found = run_db(work)
    for e in found:
        typer.echo(
            f"{e.id}\t{e.created_at.isoformat()}\t{e.actor_type}:{e.actor_id or '-'}\t"
            f"{e.action}\t{e.subject_account_id or '-'}\t{','.join(e.fields) or '-'}\t"
            f"{e.reason or '-'}" + (f"\trequest {e.request_id}" if e.request_id else "")
        )
    typer.echo(f"{len(found)} entries")


@audit_app.command("affected")
def audit_affected(
    since: Annotated[str, typer.Option(help="Window start (ISO 8601, inclusive).")],
    until: Annotated[str, typer.Option(help="Window end (ISO 8601, exclusive).")],
    emails: Annotated[
        bool, typer.Option("--emails", help="Also decrypt e-mail addresses (needs --reason).")
    ] = False,
    reason: Reason = None,
) -> None:
    """Accounts with any activity in a time window, for a breach assessment (GDPR Art. 33)."""
    start, end = _moment(since, "--since"), _moment(until, "--until")
    assert start is not None and end is not None
    why = _required_reason(reason, "e-mail addresses are personal data") if emails else None

    async def work(conn: AsyncConnection) -> list[tuple[breach.AffectedAccount, str]]:
        found = await breach.affected_accounts(conn, start, end)
        shown = []
        for account in found:
            email = ""
            if why is not None:
                view = await accounts.get_account(conn, vault(), account.account_id)
                email = view.email if view else ""
                await audit.record(
                    conn,
                    actor_type="operator",
                    actor_id=operator(),
                    subject_account_id=account.account_id,
                    action="breach_listing",
                    fields=("email",),
                    reason=why,
                )
            shown.append((account, email))
        return shown

    listed = run_db(work)
    for account, email in listed:
        traces = ", ".join(f"{source} {n}" for source, n in sorted(account.traces.items()))
        typer.echo(
            f"{account.account_id}\t{account.status}\t{traces}" + (f"\t{email}" if emails else "")
        )
    typer.echo(f"{len(listed)} accounts affected between {start.isoformat()} and {end.isoformat()}")


# ------------------------------------------------------------------------------- users


def users_show(who: str, reason: Reason = None) -> None:
    """Show an account's personal data (decrypted); audited, so --reason is required."""
    why = _required_reason(reason, "say why you are looking at this person's data")

    async def work(conn: AsyncConnection) -> tuple[accounts.AccountView, Any, str | None]:
        account_id = await account_id_of(conn, who)
        view = await accounts.get_account(conn, vault(), account_id)
        assert view is not None
        details = (
            await conn.execute(
                select(
                    Account.auth_provider,
                    Account.store_prompts,
                    Account.marketing_emails,
                    Account.allow_routing_improvement,
                    Account.processing_restricted,
                    Account.restricted_reason_enc,
                    Account.restricted_at,
                ).where(Account.id == account_id)
            )
        ).one()
        await audit.record(
            conn,
            actor_type="operator",
            actor_id=operator(),
            subject_account_id=account_id,
            action="operator_view",
            fields=("email", "name", "restriction_reason"),
            reason=why,
        )
        return view, details, await vault().open(account_id, details.restricted_reason_enc)

    view, details, restricted_because = run_db(work)
    lines = {
        "id": view.id,
        "email": view.email or "(erased)",
        "name": view.name or "-",
        "role": view.role,
        "status": view.status,
        "balance": f"${format_usd(view.balance)}",
        "created": view.created_at.isoformat(),
        "sign-in": details.auth_provider,
        "store prompts": _yes(details.store_prompts),
        "marketing e-mails": _yes(details.marketing_emails),
        "routing statistics": _yes(details.allow_routing_improvement),
        "restricted": _restriction(details, restricted_because),
    }
    for label, value in lines.items():
        typer.echo(f"{label + ':':<20}{value}")


def _restriction(details: Any, because: str | None) -> str:
    if not details.processing_restricted:
        return "no"
    since = details.restricted_at.isoformat() if details.restricted_at else "?"
    return f"yes, since {since} ({because or 'no reason given'})"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def users_restrict(
    who: str,
    reason: Reason = None,
    request: Annotated[
        str | None, typer.Option(help="The recorded request (dsr add) this fulfils.")
    ] = None,
) -> None:
    """Restrict processing (GDPR Art. 18): no generation, skipped by retention purges."""
    why = _required_reason(reason, "say why processing is restricted")

    async def work(conn: AsyncConnection) -> restriction.RestrictionState:
        account_id = await account_id_of(conn, who)
        return await restriction.restrict(
            conn,
            vault(),
            account_id,
            reason=why,
            actor_type="operator",
            actor_id=operator(),
            channel="cli",
            dsr_id=request,
        )

    done = run_db(work)
    if not done.changed:
        since = done.restricted_at.isoformat() if done.restricted_at else "?"
        typer.echo(f"{who} is already restricted (since {since}); nothing changed")
        return
    typer.echo(f"restricted processing of {who}")


def users_unrestrict(
    who: str,
    reason: Reason = None,
    notified: Annotated[
        bool,
        typer.Option("--notified", help="Confirm the person was told beforehand (Art. 18(3))."),
    ] = False,
) -> None:
    """Lift a restriction; the person must have been told first (--notified)."""
    why = _required_reason(reason, "say why the restriction is lifted")

    async def work(conn: AsyncConnection) -> restriction.RestrictionState:
        account_id = await account_id_of(conn, who)
        return await restriction.lift(
            conn, vault(), account_id, reason=why, notified=notified, operator=operator()
        )

    run_db(work)
    typer.echo(f"lifted the restriction of {who} (notice recorded)")


# ------------------------------------------------------------------------------- dsr


@dsr_app.command("list")
def dsr_list(
    overdue: Annotated[bool, typer.Option("--overdue", help="Only open ones past due.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Include completed ones.")] = False,
) -> None:
    """List requests (open ones unless --all), soonest due first."""
    now = utcnow()

    async def work(conn: AsyncConnection) -> list[dsr.RequestView]:
        if overdue:
            return await dsr.overdue(conn, now)
        return await dsr.list_requests(conn, open_only=not all_)

    found = run_db(work)
    for r in found:
        state = "OVERDUE" if r.is_overdue(now) else r.status
        typer.echo(
            f"{r.id}\t{r.type}\t{r.channel}\t{state}\treceived {r.received_at.date()}\t"
            f"due {r.due_at.date()}\t{r.account_id or '-'}\t{r.note or ''}"
        )
    typer.echo(f"{len(found)} requests")


@dsr_app.command("add")
def dsr_add(
    who: str,
    type: Annotated[str, typer.Option("--type", help=", ".join(dsr.TYPES))],
    channel: Annotated[str, typer.Option(help=", ".join(dsr.CHANNELS))] = "email",
    note: Annotated[str | None, typer.Option(help="Free text, e.g. a ticket reference.")] = None,
    received: Annotated[
        str | None, typer.Option(help="When it arrived (ISO 8601; default now).")
    ] = None,
) -> None:
    """Record a request that arrived outside the product; it is due one month later."""
    received_at = _moment(received, "--received")

    async def work(conn: AsyncConnection) -> dsr.RequestView:
        return await dsr.open_request(
            conn,
            account_id=await account_id_of(conn, who),
            type=type,
            channel=channel,
            note=note,
            received_at=received_at,
            handled_by=operator(),
        )

    request = run_db(work)
    typer.echo(f"recorded {request.type} request {request.id}; due {request.due_at.isoformat()}")


@dsr_app.command("close")
def dsr_close(
    request_id: str,
    note: Annotated[str | None, typer.Option(help="What was done.")] = None,
) -> None:
    """Mark a request completed."""
    done = run_db(
        lambda conn: dsr.close_request(conn, request_id, handled_by=operator(), note=note)
    )
    late = " (after its due date)" if done.completed_at and done.completed_at > done.due_at else ""
    typer.echo(f"closed request {done.id}{late}")
