"""The billing page (`/account/billing`): balance, top-up through Stripe Checkout, deposits.

The top-up form starts the same checkout as `POST /v1/billing/checkout` and sends the
browser on to Stripe. Stripe sends it back to `/billing?topup=…&session_id=…`; the page then
says "processing" (refreshing itself) until the verified webhook has credited the top-up: the
return itself never credits anything (STR-2). With `PAYMENTS_PROVIDER=none` the page says
that the operator grants credits.

Opening checkouts is throttled per account like sign-in attempts (`SIGNIN_THROTTLE`): each
one writes a top-up row and calls Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from image_router.account.sessions import SessionView
from image_router.db.session import unit_of_work
from image_router.errors import GatewayError, InvalidRequest
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.payment import topups
from image_router.payment.amounts import format_cents, parse_amount_usd
from image_router.web.common import field, redirect, render, resources_of, web_state
from image_router.web.keys import when
from image_router.web.pages import signed_in, signed_in_form

router = APIRouter(include_in_schema=False)

BILLING_URL = "/account/billing"
HISTORY_LENGTH = 50
PAYMENTS_DISABLED = (
    "Online payment is not enabled on this gateway: credits are granted by its operator."
)
REFRESH_S = 3
# A webhook normally lands within seconds; past this the page stops refreshing itself.
REFRESH_FOR = timedelta(minutes=10)
STATUS_WORDS = {
    "pending": "awaiting payment",
    "processing": "processing",
    "paid": "paid",
    "failed": "failed",
    "expired": "expired",
    "refunded": "refunded",
    "partially_refunded": "partially refunded",
    "disputed": "disputed",
    "dispute_lost": "dispute lost",
    "flagged": "under review",
}


@dataclass(frozen=True)
class Deposit:
    """One top-up as the history shows it."""

    id: str
    created: str
    amount: str
    credits: str
    status: str
    status_words: str
    refunded: str | None
    disputed: str | None


@dataclass(frozen=True)
class Returned:
    """What the page says about the top-up whose checkout the browser comes back from."""

    state: str  # processing | paid | cancelled | awaiting | closed
    deposit: Deposit
    refresh: bool = False


def deposit(view: topups.TopupView) -> Deposit:
    return Deposit(
        id=view.id,
        created=when(view.created_at),
        amount=f"${format_cents(view.amount_cents)}",
        credits=f"${format_usd(view.credits)}",
        status=view.status,
        status_words=STATUS_WORDS.get(view.status, view.status),
        refunded=f"${format_cents(view.refunded_cents)}" if view.refunded_cents else None,
        disputed=f"${format_cents(view.disputed_cents)}" if view.disputed_cents else None,
    )


def returned(view: topups.TopupView, *, from_checkout: bool, cancelled: bool) -> Returned:
    shown = deposit(view)
    if view.status == "pending" and cancelled:
        return Returned("cancelled", shown)
    if view.status == "pending" and from_checkout:
        # Stripe only sends the browser back once the payment went through; the credit
        # follows with Stripe's event.
        return Returned("processing", shown, refresh=utcnow() - view.created_at < REFRESH_FOR)
    if view.status == "pending":
        return Returned("awaiting", shown)
    if view.status == "processing":
        return Returned("processing", shown)  # a delayed payment method: days, not seconds
    return Returned("paid" if view.status == "paid" else "closed", shown)


@router.get("/billing")
async def stripe_return(request: Request) -> Response:
    """Where Checkout sends the browser back (the payment service's success/cancel URLs)."""
    query = request.url.query
    return RedirectResponse(BILLING_URL + (f"?{query}" if query else ""), status_code=303)


async def _billing_page(
    request: Request,
    session: SessionView,
    *,
    status: int = 200,
    topup: str = "",
    from_checkout: bool = False,
    cancelled: bool = False,
    error: str | None = None,
    amount: str = "",
) -> Response:
    res = resources_of(request)
    async with unit_of_work(res.engine) as conn:
        history = await topups.list_topups(conn, session.account_id, limit=HISTORY_LENGTH)
        came_back = await topups.get_topup(conn, session.account_id, topup) if topup else None
    back = (
        None
        if came_back is None
        else returned(came_back, from_checkout=from_checkout, cancelled=cancelled)
    )
    return render(
        request,
        "billing.html",
        session,
        status=status,
        balance=format_usd(session.balance),
        payments_enabled=res.payments is not None,
        payments_disabled=PAYMENTS_DISABLED,
        min_usd=format_cents(res.settings.topup_min_cents),
        max_usd=format_cents(res.settings.topup_max_cents),
        deposits=[deposit(v) for v in history],
        returned=back,
        refresh_s=REFRESH_S,
        error=error,
        amount=amount,
    )


@router.get(BILLING_URL)
async def billing_page(
    request: Request, topup: str = "", session_id: str = "", cancelled: str = ""
) -> Response:
    session = await signed_in(request)
    return await _billing_page(
        request,
        session,
        topup=topup,
        from_checkout=bool(session_id),
        cancelled=cancelled == "true",
    )


@router.post(BILLING_URL + "/checkout")
async def checkout(request: Request) -> Response:
    """Open a Stripe Checkout for the amount and send the browser there."""
    session, form = await signed_in_form(request)
    res = resources_of(request)
    amount = field(form, "amount_usd").strip()
    if res.payments is None:
        # A form from before payments were turned off: the page says why it cannot be used.
        return await _billing_page(request, session, status=404)
    policy = res.payments.policy
    try:
        # Checked before the throttle counts it, so a typo costs no attempt.
        parse_amount_usd(amount, min_cents=policy.min_cents, max_cents=policy.max_cents)
    except InvalidRequest as exc:
        message = exc.message.replace("amount_usd", "The amount", 1)
        return await _billing_page(request, session, status=400, error=message, amount=amount)
    decision = await web_state(request).hit("checkout", session.account_id)
    if decision is not None and not decision.allowed:
        message = f"Too many checkouts. Please wait {decision.reset_s} seconds and try again."
        return await _billing_page(request, session, status=429, error=message, amount=amount)
    try:
        started = await topups.start_checkout(res.engine, res.payments, session.account_id, amount)
    except GatewayError as exc:  # the provider failing (502), nothing was charged
        return await _billing_page(
            request, session, status=exc.status, error=exc.message, amount=amount
        )
    return redirect(request, started.url)
