"""The operator area (`/admin`): accounts, credit grants and deductions.

Only admin accounts (`role = admin`) see it. A signed-out browser is sent to the sign-in
page like every signed-in page; a signed-in account that is not an admin gets the same 404
page as a path that does not exist, for every page and every form: the area's existence is
no secret (it is documented), but a non-admin has nothing there. The role is read from the
session's account on every request, so a demoted admin loses the area at once.

Every form carries the session's CSRF token. Actions are the operator use cases of
`admin/` (shared with the CLI), which write the ledger and the audit log naming the admin
(`web:<account id>`) and the request id. Usage, provider health and the catalog are in
`admin_status.py`.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import case, func, select
from starlette.datastructures import FormData
from starlette.responses import Response

from image_router.account.sessions import SessionView
from image_router.admin import credits, directory
from image_router.admin.credits import Operator
from image_router.api.deps import ResourcesDep
from image_router.db.session import unit_of_work
from image_router.db.tables import Account, Generation
from image_router.errors import OperatorError
from image_router.kit.clock import utcnow
from image_router.kit.money import MoneyFormatError, format_usd, parse_usd, usd_to_credits
from image_router.ledger.movements import money_movements
from image_router.observability.logging import request_id
from image_router.resources import Resources
from image_router.web.common import (
    PageAnswer,
    SignedInDep,
    csrf_ok,
    csrf_refused,
    field,
    redirect,
    render,
)
from image_router.web.keys import when

router = APIRouter(include_in_schema=False)

ADMIN = "/admin"
ACCOUNTS = f"{ADMIN}/accounts"
PAGE_SIZE = 50
HISTORY_LENGTH = 20
NOT_FOUND = "There is no page at this address."
DONE = {
    "granted": "The credit has been granted.",
    "deducted": "The credit has been deducted.",
}
KIND_WORDS = {
    "grant": "grant",
    "deduction": "deduction",
    "topup": "top-up",
    "refund": "refund",
    "dispute_hold": "dispute opened",
    "dispute_won": "dispute won",
    "dispute_lost": "dispute lost",
    "forfeit": "forfeited at erasure",
}


# --------------------------------------------------------------------------- guards


def not_found(request: Request, session: SessionView | None) -> Response:
    return render(request, "error.html", session, status=404, message=NOT_FOUND)


async def admin_session(request: Request, session: SignedInDep) -> SessionView:
    """The session of a signed-in admin; a signed-in non-admin gets the 404 page."""
    if session.role != "admin":
        raise PageAnswer(not_found(request, session))
    return session


AdminDep = Annotated[SessionView, Depends(admin_session)]


async def admin_form(request: Request, session: AdminDep) -> tuple[SessionView, FormData]:
    """An admin's posted form carrying the session's CSRF token (else 403)."""
    form = await request.form()
    if not csrf_ok(request, form, session):
        raise PageAnswer(csrf_refused(request, session))
    return session, form


AdminFormDep = Annotated[tuple[SessionView, FormData], Depends(admin_form)]


def operator_of(session: SessionView) -> Operator:
    """How the audit log names an admin acting through the website."""
    return Operator(f"web:{session.account_id}", request_id.get())


def usd(credits_amount: int) -> str:
    return f"${format_usd(credits_amount)}"


# --------------------------------------------------------------------------- overview


@router.get(ADMIN)
async def overview(request: Request, res: ResourcesDep, session: AdminDep) -> Response:
    since = utcnow() - timedelta(days=1)
    async with unit_of_work(res.engine) as conn:
        accounts = int(await conn.scalar(select(func.count()).select_from(Account)) or 0)
        day = (
            await conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(Generation.cost), 0),
                    func.coalesce(func.sum(case((Generation.status == "error", 1), else_=0)), 0),
                ).where(Generation.created_at >= since)
            )
        ).one()
    snapshot = await res.health.snapshot()
    return render(
        request,
        "admin.html",
        session,
        accounts=accounts,
        requests=int(day[0]),
        spend=usd(int(day[1])),
        errors=int(day[2]),
        open_circuits=sum(1 for h in snapshot.values() if h.state != "closed"),
        providers_enabled=len(res.providers),
        providers_disabled=len(res.disabled),
    )


# --------------------------------------------------------------------------- accounts


async def _accounts_page(
    request: Request,
    res: Resources,
    session: SessionView,
    *,
    query: str,
    page: int,
    reason: str | None = None,
    status: int = 200,
    error: str | None = None,
) -> Response:
    page = max(page, 1)
    async with unit_of_work(res.engine) as conn:
        listing = await directory.list_accounts(
            conn,
            res.vault,
            by=operator_of(session),
            query=query,
            reason=reason,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        )
    pages = max(1, -(-listing.total // PAGE_SIZE))
    return render(
        request,
        "admin_accounts.html",
        session,
        status=status,
        error=error,
        query=query,
        reason=reason or "",
        listing=listing,
        rows=[
            {
                "id": a.id,
                "email": a.email,
                "role": a.role,
                "status": a.status,
                "balance": usd(a.balance),
                "created": when(a.created_at),
            }
            for a in listing.accounts
        ],
        page=page,
        pages=pages,
    )


@router.get(ACCOUNTS)
async def accounts_page(
    request: Request, res: ResourcesDep, session: AdminDep, q: str = "", page: int = 1
) -> Response:
    """The accounts, e-mails masked; `q`: an e-mail address or the start of an id."""
    return await _accounts_page(request, res, session, query=q[:200], page=page)


@router.post(ACCOUNTS)
async def accounts_unmasked(request: Request, res: ResourcesDep, signed: AdminFormDep) -> Response:
    """The same list with e-mails in full: needs a reason, and is audited (`operator_list`)."""
    session, form = signed
    query = field(form, "q")[:200]
    page = int(field(form, "page")) if field(form, "page").isdigit() else 1
    try:
        return await _accounts_page(
            request, res, session, query=query, page=page, reason=field(form, "reason")
        )
    except OperatorError as exc:
        return await _accounts_page(
            request, res, session, query=query, page=page, status=400, error=str(exc)
        )


async def _account_page(
    request: Request,
    res: Resources,
    session: SessionView,
    account_id: str,
    *,
    status: int = 200,
    error: str | None = None,
    notice: str | None = None,
    entered: dict[str, Any] | None = None,
) -> Response:
    async with unit_of_work(res.engine) as conn:
        account = await directory.get_listed(conn, res.vault, account_id)
        history = (
            []
            if account is None
            else (await money_movements(conn, account_id, limit=HISTORY_LENGTH)).movements
        )
    if account is None:
        return not_found(request, session)
    return render(
        request,
        "admin_account.html",
        session,
        status=status,
        error=error,
        notice=notice,
        entered=entered or {},
        account=account,
        balance=usd(account.balance),
        cap=format_usd(usd_to_credits(res.settings.payments.admin_grant_max_usd)),
        history=[
            {
                "when": when(m.created_at),
                "kind": KIND_WORDS.get(m.kind, m.kind),
                "amount": ("+" if m.amount > 0 else "−") + usd(abs(m.amount)),
                "reason": m.reason or "",
            }
            for m in history
        ],
    )


@router.get(ACCOUNTS + "/{account_id}")
async def account_page(
    request: Request, res: ResourcesDep, session: AdminDep, account_id: str, done: str = ""
) -> Response:
    return await _account_page(request, res, session, account_id, notice=DONE.get(done))


def _amount(text: str) -> int:
    try:
        value = parse_usd(text)
    except MoneyFormatError:
        raise OperatorError(f"'{text.strip()}' is not a USD amount (e.g. 10 or 2.50)") from None
    if value <= 0:
        raise OperatorError("The amount must be more than $0.")
    if value > Decimal(10) ** 9:
        raise OperatorError("The amount is too large.")
    return usd_to_credits(value)


@router.post(ACCOUNTS + "/{account_id}/grant")
async def grant(
    request: Request, res: ResourcesDep, signed: AdminFormDep, account_id: str
) -> Response:
    session, form = signed
    entered = {
        "grant_amount": field(form, "amount_usd"),
        "grant_reason": field(form, "reason"),
        "force": field(form, "force") == "on",
    }
    cap = usd_to_credits(res.settings.payments.admin_grant_max_usd)
    try:
        amount = _amount(field(form, "amount_usd"))
        async with unit_of_work(res.engine) as conn:
            await credits.grant(
                conn,
                account_id,
                amount,
                reason=field(form, "reason"),
                by=operator_of(session),
                cap=cap,
                force=bool(entered["force"]),
            )
    except credits.OverCap as exc:
        message = f"{exc} Tick “Grant more than {usd(cap)}” to grant it anyway."
        entered["over_cap"] = True
        return await _account_page(
            request, res, session, account_id, status=400, error=message, entered=entered
        )
    except OperatorError as exc:
        return await _account_page(
            request, res, session, account_id, status=400, error=str(exc), entered=entered
        )
    return redirect(request, f"{ACCOUNTS}/{account_id}?done=granted")


@router.post(ACCOUNTS + "/{account_id}/deduct")
async def deduct(
    request: Request, res: ResourcesDep, signed: AdminFormDep, account_id: str
) -> Response:
    session, form = signed
    entered = {"deduct_amount": field(form, "amount_usd"), "deduct_reason": field(form, "reason")}
    try:
        amount = _amount(field(form, "amount_usd"))
        async with unit_of_work(res.engine) as conn:
            await credits.deduct(
                conn, account_id, amount, reason=field(form, "reason"), by=operator_of(session)
            )
    except OperatorError as exc:
        return await _account_page(
            request, res, session, account_id, status=400, error=str(exc), entered=entered
        )
    return redirect(request, f"{ACCOUNTS}/{account_id}?done=deducted")
