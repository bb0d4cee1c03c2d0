"""Stripe as Image Router uses it: Checkout Sessions out, signed webhook events in.

The official `stripe` package does the wire work (form encoding, `Idempotency-Key`,
`Stripe-Version`, retries of 5xx and network errors with the same key) and the signature
check. Its requests go through the process's shared `httpx.AsyncClient`, so they use the
same connection pool as every vendor call, and tests reach the fake Stripe through the same
in-process transport as the vendor fakes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import stripe
from stripe.params.checkout import SessionCreateParams

DEFAULT_API_BASE = "https://api.stripe.com"
#: Seconds a signed event stays acceptable (stripe-python's `Webhook.DEFAULT_TOLERANCE`).
SIGNATURE_TOLERANCE_S = 300
_REQUEST_TIMEOUT_S = 30.0
_LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")


class StripeUnavailable(Exception):
    """Stripe could not be reached, or refused a request it should have accepted."""


class InvalidSignature(ValueError):
    """A webhook whose `Stripe-Signature` does not prove it comes from Stripe, recently."""


@dataclass(frozen=True)
class CheckoutSession:
    id: str
    url: str
    #: The account's stored customer no longer exists at Stripe; a new one will be made.
    customer_replaced: bool = False


@dataclass(frozen=True)
class CheckoutRequest:
    topup_id: str
    account_id: str
    amount_cents: int
    currency: str
    product_name: str
    success_url: str
    cancel_url: str
    customer_id: str | None = None


class StripeGateway:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        secret_key: str,
        webhook_secrets: Sequence[str],
        api_base: str | None = None,
        max_network_retries: int = 2,
    ) -> None:
        if not webhook_secrets:
            raise ValueError("at least one webhook signing secret is needed")
        self._secrets = tuple(webhook_secrets)
        self.livemode = secret_key.startswith(_LIVE_KEY_PREFIXES)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": (api_base or DEFAULT_API_BASE).rstrip("/")},
            max_network_retries=max_network_retries,
            http_client=_SharedHttpx(http, timeout=_REQUEST_TIMEOUT_S),
        )

    async def create_checkout_session(self, request: CheckoutRequest) -> CheckoutSession:
        """Create a hosted Checkout Session for one top-up (idempotent per top-up id)."""
        try:
            return await self._create(request, request.customer_id)
        except stripe.InvalidRequestError as exc:
            if not (
                request.customer_id and exc.code == "resource_missing" and exc.param == "customer"
            ):
                raise StripeUnavailable(_describe(exc)) from exc
        # Someone deleted the customer at Stripe (dashboard, erasure): start a fresh one
        # rather than failing every top-up of this account from now on.
        try:
            session = await self._create(request, None)
        except stripe.StripeError as exc:
            raise StripeUnavailable(_describe(exc)) from exc
        return CheckoutSession(session.id, session.url, customer_replaced=True)

    async def _create(self, request: CheckoutRequest, customer_id: str | None) -> CheckoutSession:
        # Only ids go to Stripe: no e-mail, no prompt (the person types their e-mail there).
        ids = {"topup_id": request.topup_id, "account_id": request.account_id}
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency,
                        "unit_amount": request.amount_cents,
                        "product_data": {"name": request.product_name},
                    },
                }
            ],
            "client_reference_id": request.topup_id,
            "metadata": ids,
            "payment_intent_data": {"metadata": ids},
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
        }
        key = f"topup:{request.topup_id}"
        if customer_id:
            params["customer"] = customer_id
        else:
            params["customer_creation"] = "always"
            if request.customer_id:
                # Same top-up, different parameters: Stripe refuses a reused key for that.
                key += ":new-customer"
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params=params, options={"idempotency_key": key}
            )
        except stripe.InvalidRequestError:
            raise
        except stripe.StripeError as exc:
            raise StripeUnavailable(_describe(exc)) from exc
        if not session.url:
            raise StripeUnavailable(f"Stripe returned checkout session {session.id} without a URL")
        return CheckoutSession(session.id, session.url)

    async def expire_checkout_session(self, session_id: str) -> bool:
        """Close an open Checkout Session so it can no longer be paid (STR-8).

        False when it was not open any more (completed, already expired, unknown): Stripe
        refuses to expire those, and for erasure that is just as good.
        """
        try:
            await self._client.v1.checkout.sessions.expire_async(
                session_id, options={"idempotency_key": f"expire:{session_id}"}
            )
        except stripe.InvalidRequestError:
            return False
        except stripe.StripeError as exc:
            raise StripeUnavailable(_describe(exc)) from exc
        return True

    async def delete_customer(self, customer_id: str) -> bool:
        """Delete a customer (its saved cards go with it); False when it was already gone."""
        try:
            await self._client.v1.customers.delete_async(customer_id)
        except stripe.InvalidRequestError as exc:
            if exc.code == "resource_missing":
                return False
            raise StripeUnavailable(_describe(exc)) from exc
        except stripe.StripeError as exc:
            raise StripeUnavailable(_describe(exc)) from exc
        return True

    def verify_event(self, payload: bytes, header: str | None) -> dict[str, Any]:
        """The event in a webhook body, once its signature is proven; else `InvalidSignature`.

        Every configured secret is tried, so an endpoint secret can be rolled without a
        window where events are refused. The timestamp must be at most five minutes old.
        """
        if not header:
            raise InvalidSignature("missing Stripe-Signature header")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSignature("the webhook body is not UTF-8") from None
        secret = self._matching_secret(text, header)
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, SIGNATURE_TOLERANCE_S)
        except stripe.SignatureVerificationError:
            raise InvalidSignature(
                f"Stripe-Signature timestamp is more than {SIGNATURE_TOLERANCE_S} s old"
            ) from None
        try:
            event = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise InvalidSignature("the webhook body is not JSON") from None
        if not isinstance(event, dict):
            raise InvalidSignature("the webhook body is not a Stripe event")
        return event

    def _matching_secret(self, text: str, header: str) -> str:
        for secret in self._secrets:
            try:
                # Signature only (no tolerance) first, so a stale but genuine event is
                # told apart from a forged one.
                stripe.WebhookSignature.verify_header(text, header, secret, None)
            except stripe.SignatureVerificationError as exc:
                if "extract timestamp" in str(exc) or "expected scheme" in str(exc):
                    raise InvalidSignature("malformed Stripe-Signature header") from None
                continue
            except (TypeError, ValueError):
                # hmac.compare_digest refuses non-ASCII signatures with TypeError.
                raise InvalidSignature("malformed Stripe-Signature header") from None
            return secret
        raise InvalidSignature("no Stripe-Signature matches a configured webhook secret")


def _describe(exc: stripe.StripeError) -> str:
    if isinstance(exc, stripe.AuthenticationError):
        return "Stripe refused the configured secret key (STRIPE_SECRET_KEY)"
    if isinstance(exc, stripe.APIConnectionError):
        return "could not reach Stripe"
    status = f" (HTTP {exc.http_status})" if exc.http_status else ""
    return f"Stripe error{status}: {exc.user_message or exc}"


class _SharedHttpx(stripe.HTTPClient):
    """Stripe's HTTP client interface over an `httpx.AsyncClient` we own (async only)."""

    name = "image-router-httpx"

    def __init__(self, http: httpx.AsyncClient, *, timeout: float) -> None:
        super().__init__()
        self._http = http
        self._timeout = timeout

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        try:
            response = await self._http.request(
                method, url, headers=dict(headers), content=post_data, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            # should_retry lets the library retry with the same Idempotency-Key.
            raise stripe.APIConnectionError(  # type: ignore[no-untyped-call]  # untyped in stripe
                f"could not reach Stripe: {type(exc).__name__}", should_retry=True
            ) from exc
        return response.content, response.status_code, response.headers

    def sleep_async(self, secs: float) -> Awaitable[None]:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        # The shared client belongs to the process's resources, which close it.
        return None
