"""`/billing`: balance, every balance movement, spend over time, and adding credit.

The movements are the ledger's (`ledger/movements.py`): grants, top-ups, refunds, disputes,
forfeits and operator deductions one by one, each kind in words, and generations summed
per UTC day; with the balance they add up. Spend over time is a chart of the last 12
months (the same ledger entries), with a table.

Adding credit: with Stripe, the top-up form starts the same checkout as
`POST /v1/billing/checkout` and sends the browser on to Stripe. Stripe sends it back to
`/billing?topup=…&session_id=…`; the page then says "processing" (refreshing itself) until
the verified webhook has credited the top-up: the return itself never credits anything
(STR-2). Without payments the page names the operator's `SUPPORT_EMAIL`, or says that
the operator grants credit with the CLI. `/account/billing` (the former address) redirects
here.

Opening checkouts is throttled per account like sign-in attempts (`SIGNIN_THROTTLE`): each
one writes a top-up row and calls Stripe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from image_router.account.sessions import SessionView
from image_router.api.deps import ResourcesDep
from image_router.db.session import unit_of_work
from image_router.errors import GatewayError, InvalidRequest
from image_router.kit.clock import utcnow
from image_router.kit.money import format_usd
from image_router.ledger import movements
from image_router.ledger import service as ledger
from image_router.payment import topups
from image_router.payment.amounts import format_cents, parse_amount_usd
from image_router.resources import Resources
from image_router.web.charts import bar_chart
from image_router.web.common import SignedInDep, SignedInFormDep, field, redirect, render, web_state
from image_router.web.keys import when

router = APIRouter(include_in_schema=False)

BILLING_URL = "/billing"
OLD_URL = "/account/billing"
MOVEMENTS_PAGE = 50
CHART_MONTHS = 12
HISTORY_LENGTH = 50
PAYMENTS_DISABLED = "Online payment is not enabled on this gateway."
#: Each ledger kind in words (movements of other kinds show their name).
KIND_WORDS = {
    "grant": "Credit granted by the operator",
    "topup": "Top-up",
    "refund": "Top-up refunded",
    "dispute_hold": "Payment disputed: credit frozen",
    "dispute_won": "Dispute won: frozen credit returned",
    "dispute_lost": "Dispute lost",
    "forfeit": "Balance forfeited (account deletion)",
    "deduct": "Deducted by the operator",
    "deduction": "Deducted by the operator",
}
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


@dataclass(frozen=True)
class MovementRow:
    """One balance movement as the page shows it."""

    id: str
    created: str
    kind: str
    words: str
    amount: str  # signed: "+$10.0000", "-$0.0400"
    incoming: bool
    reason: str | None


def kind_words(kind: str) -> str:
    return KIND_WORDS.get(kind, kind.replace("_", " ").capitalize())


def _signed(credits: int) -> str:
    return f"{'+' if credits >= 0 else '-'}${format_usd(abs(credits))}"


def movement_rows(
    money: list[movements.Movement], spend: dict[date, int], newest_first: bool = True
) -> list[MovementRow]:
    """Money movements and, between them, the days' generation spend, newest first.

    The days shown are those between the oldest listed movement (or any day, on the last
    page) and now, so paging through the movements shows every day once."""
    rows: list[tuple[datetime, MovementRow]] = [
        (
            m.created_at,
            MovementRow(
                id=str(m.id),
                created=when(m.created_at),
                kind=m.kind,
                words=kind_words(m.kind),
                amount=_signed(m.amount),
                incoming=m.amount >= 0,
                reason=m.reason,
            ),
        )
        for m in money
    ]
    for day, credits in spend.items():
        end_of_day = datetime(day.year, day.month, day.day, 23, 59, 59, tzinfo=UTC)
        rows.append(
            (
                end_of_day,
                MovementRow(
                    id=f"spend-{day.isoformat()}",
                    created=day.isoformat(),
                    kind="generations",
                    words="Generations (the day's total)",
                    amount=_signed(-credits),
                    incoming=credits <= 0,
                    reason=None,
                ),
            )
        )
    rows.sort(key=lambda pair: pair[0], reverse=newest_first)
    return [row for _, row in rows]


def monthly(spend: dict[date, int], today: date, months: int) -> list[tuple[str, int]]:
    """(YYYY-MM, credits) for the last `months` months, oldest first."""
    keys = []
    year, month = today.year, today.month
    for _ in range(months):
        keys.append(f"{year:04d}-{month:02d}")
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    totals = dict.fromkeys(reversed(keys), 0)
    for day, credits in spend.items():
        key = f"{day.year:04d}-{day.month:02d}"
        if key in totals:
            totals[key] += credits
    return list(totals.items())


def _entry_id(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 19 else None


def _months_back(today: date, months: int) -> date:
    """The first day of the month `months` months before `today`'s."""
    index = today.year * 12 + today.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


@router.get(OLD_URL)
async def old_billing(request: Request) -> Response:
    """The page's former address."""
    query = request.url.query
    return RedirectResponse(BILLING_URL + (f"?{query}" if query else ""), status_code=308)


async def _billing_page(
    request: Request,
    res: Resources,
    session: SessionView,
    *,
    status: int = 200,
    topup: str = "",
    from_checkout: bool = False,
    cancelled: bool = False,
    error: str | None = None,
    amount: str = "",
) -> Response:
    account = session.account_id
    before = _entry_id(request.query_params.get("before", ""))
    today = utcnow().date()
    async with unit_of_work(res.engine) as conn:
        history = await topups.list_topups(conn, account, limit=HISTORY_LENGTH)
        came_back = await topups.get_topup(conn, account, topup) if topup else None
        money = await movements.money_movements(conn, account, limit=MOVEMENTS_PAGE, before=before)
        # The days of generation spend that fall between this page's movements.
        upper = await movements.entry_time(conn, account, before) if before else None
        lower = money.movements[-1].created_at if money.next_before is not None else None
        days = await movements.generation_spend_by_day(
            conn,
            account,
            since=None if lower is None else movements.start_of_day(lower),
            until=None if upper is None else movements.start_of_day(upper),
        )
        chart_spend = await movements.generation_spend_by_day(
            conn, account, since=movements.start_of_day(_months_back(today, CHART_MONTHS - 1))
        )
        paid_in = await ledger.deposits(conn, account)
        spent = await movements.generation_spend_total(conn, account)
    months = monthly(chart_spend, today, CHART_MONTHS)
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
        min_usd=format_cents(res.settings.payments.topup_min_cents),
        max_usd=format_cents(res.settings.payments.topup_max_cents),
        deposits=[deposit(v) for v in history],
        movements=movement_rows(money.movements, days),
        next_before=money.next_before,
        paged=before is not None,
        paid_in=format_usd(paid_in),
        spent=format_usd(spent),
        chart=bar_chart(
            "Spend per month, last 12 months", [(m, c, "") for m, c in months], unit="month"
        ),
        months=[(m, f"${format_usd(c)}") for m, c in months],
        support_email=res.settings.payments.support_email,
        returned=back,
        refresh_s=REFRESH_S,
        error=error,
        amount=amount,
    )


@router.get(BILLING_URL)
async def billing_page(
    request: Request,
    res: ResourcesDep,
    session: SignedInDep,
    topup: str = "",
    session_id: str = "",
    cancelled: str = "",
) -> Response:
    return await _billing_page(
        request,
        res,
        session,
        topup=topup,
        from_checkout=bool(session_id),
        cancelled=cancelled == "true",
    )


@router.post(BILLING_URL + "/checkout")
@router.post(OLD_URL + "/checkout")
async def checkout(request: Request, res: ResourcesDep, signed: SignedInFormDep) -> Response:
    """Open a Stripe Checkout for the amount and send the browser there."""
    session, form = signed
    amount = field(form, "amount_usd").strip()
    if res.payments is None:
        # A form from before payments were turned off: the page says why it cannot be used.
        return await _billing_page(request, res, session, status=404)
    policy = res.payments.policy
    try:
        # Checked before the throttle counts it, so a typo costs no attempt.
        parse_amount_usd(amount, min_cents=policy.min_cents, max_cents=policy.max_cents)
    except InvalidRequest as exc:
        message = exc.message.replace("amount_usd", "The amount", 1)
        return await _billing_page(request, res, session, status=400, error=message, amount=amount)
    decision = await web_state(request).hit("checkout", session.account_id)
    if decision is not None and not decision.allowed:
        message = f"Too many checkouts. Please wait {decision.reset_s} seconds and try again."
        return await _billing_page(request, res, session, status=429, error=message, amount=amount)
    try:
        started = await topups.start_checkout(res.engine, res.payments, session.account_id, amount)
    except GatewayError as exc:  # the provider failing (502), nothing was charged
        return await _billing_page(
            request, res, session, status=exc.status, error=exc.message, amount=amount
        )
    return redirect(request, started.url)
