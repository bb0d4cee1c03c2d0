"""A fake Stripe API (Checkout Sessions, customers), its event builder and a webhook signer.

It speaks Stripe's wire format, so the official `stripe` package talks to it unchanged:

- auth: `Authorization: Bearer <secret key>`; a missing or wrong key → 401 with Stripe's
  `invalid_request_error` body;
- bodies are form-encoded with bracketed keys (`line_items[0][price_data][unit_amount]`);
  `requests[i].form` holds them flattened (`Recorded.form` stays empty for non-multipart);
- `POST /v1/checkout/sessions` validates what Checkout needs (mode, one line item with an
  integer amount, currency, success URL; `customer` and `customer_creation` exclusive; an
  unknown `customer` → 400 `resource_missing`) and answers a session with `id` and `url`;
- `Idempotency-Key`: a repeat with the same parameters replays the first answer; with other
  parameters → 400 `idempotency_error`, as Stripe does;
- `GET /v1/checkout/sessions/{id}`; `POST …/{id}/expire` (only an open session, else 400,
  as Stripe does; recorded in `expired_sessions`); `DELETE /v1/customers/{id}` (an unknown
  or deleted customer → 404 `resource_missing`; recorded in `deleted_customers`).

Stripe's side of a payment is simulated by the event builders (`completed`, `refunded`,
`dispute_created`…): they move the stored session along and return the event object Stripe
would send. `sign(payload, secret)` makes the `Stripe-Signature` header for it, computed
here from the documented scheme (not with the library the gateway verifies with).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import time
import uuid
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.upstream import FakeVendor, Recorded

DEFAULT_SECRET_KEY = "sk_test_fake_stripe_0123456789"
API_VERSION = "2026-10-28.endive"


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """`Stripe-Signature` for `payload`: `t=<unix>,v1=<hex HMAC-SHA256 of "{t}.{payload}">`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def form_of(recorded: Recorded) -> dict[str, str]:
    """The flattened form fields of a recorded request."""
    return dict(parse_qsl(recorded.body.decode(), keep_blank_values=True))


def _id(prefix: str) -> str:
    return f"{prefix}_test_{uuid.uuid4().hex[:24]}"


def _error(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> Response:
    error: dict[str, Any] = {"type": "invalid_request_error", "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return JSONResponse({"error": error}, status_code=status)


class FakeStripe(FakeVendor):
    def __init__(self, secret_key: str = DEFAULT_SECRET_KEY) -> None:
        super().__init__()
        self.secret_key = secret_key
        self.sessions: dict[str, dict[str, Any]] = {}
        self.customers: set[str] = set()
        self.deleted_customers: list[str] = []
        self.expired_sessions: list[str] = []  # expired through the API (not by Stripe)
        self._replays: dict[str, tuple[dict[str, str], int, bytes]] = {}
        self._charges: dict[str, dict[str, Any]] = {}
        self._disputes: dict[str, dict[str, Any]] = {}
        self.add_route("/v1/checkout/sessions", self._create_session, ["POST"])
        self.add_route("/v1/checkout/sessions/{id}", self._get_session, ["GET"])
        self.add_route("/v1/checkout/sessions/{id}/expire", self._expire_session, ["POST"])
        self.add_route("/v1/customers/{id}", self._delete_customer, ["DELETE"])

    def error_body(self, status: int) -> object:
        return {"error": {"type": "api_error", "message": f"fake Stripe error {status}"}}

    @property
    def session_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/v1/checkout/sessions")]

    # ----------------------------------------------------------------------- API

    def _refuse(self, request: Request) -> Response | None:
        if request.headers.get("authorization") != f"Bearer {self.secret_key}":
            return _error(401, "Invalid API Key provided: sk_****")
        return None

    async def _create_session(self, request: Request, recorded: Recorded) -> Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        form = form_of(recorded)
        key = request.headers.get("idempotency-key")
        if key is not None and key in self._replays:
            params, status, body = self._replays[key]
            if params != form:
                return _error(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                    code="idempotency_error",
                )
            return Response(body, status_code=status, media_type="application/json")
        status, session = self._new_session(form)
        body = orjson.dumps(session)
        if key is not None:
            self._replays[key] = (form, status, body)
        return Response(body, status_code=status, media_type="application/json")

    def _new_session(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("mode") != "payment":
            return 400, {"error": {"type": "invalid_request_error", "param": "mode"}}
        amount = form.get("line_items[0][price_data][unit_amount]", "")
        currency = form.get("line_items[0][price_data][currency]")
        if not amount.isdigit() or not currency or not form.get("success_url"):
            return 400, {"error": {"type": "invalid_request_error", "code": "parameter_missing"}}
        customer = form.get("customer")
        if customer and "customer_creation" in form:
            return 400, {"error": {"type": "invalid_request_error", "param": "customer_creation"}}
        if customer and customer not in self.customers:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "code": "resource_missing",
                    "param": "customer",
                    "message": f"No such customer: '{customer}'",
                }
            }
        session_id = _id("cs")
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": int(amount) * int(form.get("line_items[0][quantity]", "1")),
            "currency": currency,
            "client_reference_id": form.get("client_reference_id"),
            "customer": customer,
            "customer_creation": form.get("customer_creation"),
            "metadata": _nested(form, "metadata"),
            "payment_intent_metadata": _nested(form, "payment_intent_data[metadata]"),
            "payment_intent": None,
            "success_url": form["success_url"],
            "cancel_url": form.get("cancel_url"),
            "url": f"https://checkout.stripe.test/c/pay/{session_id}",
            "livemode": False,
            "created": int(time.time()),
            "expires_at": int(time.time()) + 86_400,
        }
        self.sessions[session_id] = session
        return 200, self._public(session)

    async def _get_session(self, request: Request, recorded: Recorded) -> Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        session = self.sessions.get(request.path_params["id"])
        if session is None:
            return _error(404, "No such checkout.session", code="resource_missing", param="id")
        return JSONResponse(self._public(session))

    async def _expire_session(self, request: Request, recorded: Recorded) -> Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        session = self.sessions.get(request.path_params["id"])
        if session is None:
            return _error(404, "No such checkout.session", code="resource_missing", param="id")
        if session["status"] != "open":
            # Stripe's answer for a completed or already expired session (no `code`).
            return _error(
                400,
                'Only Checkout Sessions with a status in ["open"] can be expired. '
                f"This Checkout Session has a status of {session['status']}.",
            )
        session["status"] = "expired"
        self.expired_sessions.append(session["id"])
        return JSONResponse(self._public(session))

    async def _delete_customer(self, request: Request, recorded: Recorded) -> Response:
        if (refused := self._refuse(request)) is not None:
            return refused
        customer = request.path_params["id"]
        if customer not in self.customers:
            return _error(404, f"No such customer: '{customer}'", code="resource_missing")
        self.customers.discard(customer)
        self.deleted_customers.append(customer)
        return JSONResponse({"id": customer, "object": "customer", "deleted": True})

    @staticmethod
    def _public(session: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in session.items() if k != "payment_intent_metadata"}

    # ----------------------------------------------------------------------- Stripe's side

    def event(
        self, event_type: str, obj: dict[str, Any], *, livemode: bool = False
    ) -> dict[str, Any]:
        """An Event object as Stripe's webhook posts it."""
        return {
            "id": _id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "livemode": livemode,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
            "data": {"object": copy.deepcopy(obj)},
        }

    def completed(self, session_id: str, *, payment_status: str = "paid") -> dict[str, Any]:
        """The person finished Checkout: `checkout.session.completed`."""
        session = self.sessions[session_id]
        session["status"] = "complete"
        session["payment_status"] = payment_status
        session["payment_intent"] = session["payment_intent"] or _id("pi")
        if session["customer"] is None and session["customer_creation"] == "always":
            customer = _id("cus")
            session["customer"] = customer
            self.customers.add(customer)
        return self.event("checkout.session.completed", self._public(session))

    def async_payment(self, session_id: str, *, succeeded: bool = True) -> dict[str, Any]:
        session = self.sessions[session_id]
        session["payment_status"] = "paid" if succeeded else "unpaid"
        outcome = "succeeded" if succeeded else "failed"
        return self.event(f"checkout.session.async_payment_{outcome}", self._public(session))

    def expired(self, session_id: str) -> dict[str, Any]:
        session = self.sessions[session_id]
        session["status"] = "expired"
        return self.event("checkout.session.expired", self._public(session))

    def charge(self, session_id: str) -> dict[str, Any]:
        """The charge of a paid session (created on first use)."""
        session = self.sessions[session_id]
        if session["payment_intent"] is None:
            raise AssertionError("the session has not been paid")
        return self._charges.setdefault(
            session_id,
            {
                "id": _id("ch"),
                "object": "charge",
                "amount": session["amount_total"],
                "amount_refunded": 0,
                "currency": session["currency"],
                "paid": True,
                "refunded": False,
                "payment_intent": session["payment_intent"],
                # Stripe copies the payment intent's metadata onto its charge.
                "metadata": dict(session["payment_intent_metadata"]),
            },
        )

    def refunded(self, session_id: str, amount_refunded: int) -> dict[str, Any]:
        """`charge.refunded` with the charge's cumulative `amount_refunded`."""
        charge = self.charge(session_id)
        charge["amount_refunded"] = amount_refunded
        charge["refunded"] = amount_refunded >= charge["amount"]
        return self.event("charge.refunded", charge)

    def dispute(self, session_id: str, amount: int | None = None) -> dict[str, Any]:
        charge = self.charge(session_id)
        return self._disputes.setdefault(
            session_id,
            {
                "id": _id("dp"),
                "object": "dispute",
                "amount": charge["amount"] if amount is None else amount,
                "currency": charge["currency"],
                "charge": charge["id"],
                "payment_intent": charge["payment_intent"],
                "reason": "fraudulent",
                "status": "needs_response",
                "metadata": {},
            },
        )

    def dispute_created(self, session_id: str, amount: int | None = None) -> dict[str, Any]:
        return self.event("charge.dispute.created", self.dispute(session_id, amount))

    def dispute_closed(self, session_id: str, status: str) -> dict[str, Any]:
        dispute = self.dispute(session_id)
        dispute["status"] = status
        return self.event("charge.dispute.closed", dispute)


def _nested(form: dict[str, str], prefix: str) -> dict[str, str]:
    """`{"a": "1"}` from `prefix[a]=1` form fields."""
    start = f"{prefix}["
    return {
        k[len(start) : -1]: v for k, v in form.items() if k.startswith(start) and k.endswith("]")
    }


async def deliver(
    client: httpx.AsyncClient,
    event: dict[str, Any],
    *,
    secret: str,
    timestamp: int | None = None,
    path: str = "/webhooks/stripe",
) -> httpx.Response:
    """POST `event` to a webhook endpoint as Stripe does: raw JSON, signed."""
    payload = orjson.dumps(event).decode()
    return await client.post(
        path,
        content=payload,
        headers={
            "Content-Type": "application/json",
            "Stripe-Signature": sign(payload, secret, timestamp),
        },
    )
