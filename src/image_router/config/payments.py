"""Top-ups through Stripe Checkout (README "Payments")."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from image_router.config.group import Group


class PaymentSettings(Group):
    payments_provider: Literal["none", "stripe"] = Field(
        default="none",
        description="`none`: the operator grants credits with the CLI; `stripe`: top-ups "
        "through Stripe Checkout ([Payments](#payments))",
    )
    stripe_secret_key: SecretStr | None = Field(
        default=None,
        description="required with `stripe`; an `sk_live_`/`rk_live_` key accepts only "
        "live-mode events, any other key only test-mode ones",
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None,
        description="required with `stripe`: the endpoint's signing secret (`whsec_…`); a "
        "comma-separated list while one is rolled (each is tried)",
    )
    stripe_api_base: str | None = Field(
        default=None,
        description="Stripe's API host (tests point it at a fake); unset: `https://api.stripe.com`",
    )
    billing_currency: Literal["usd"] = Field(
        default="usd",
        description="the Checkout currency; credits are dollars, so only `usd` is accepted",
    )
    topup_min_cents: int = Field(
        default=500,
        ge=50,
        description="smallest top-up, cents; at least 50 (Stripe's smallest charge)",
    )
    topup_max_cents: int = Field(default=100_000, ge=50, description="largest top-up, cents")
    admin_grant_max_usd: Decimal = Field(
        default=Decimal(1000),
        gt=0,
        description="the largest operator grant of credit at once (`/admin`, `credits grant`) "
        "without an explicit override (the form's checkbox, `--force`)",
    )
    site_url: str | None = Field(
        default=None,
        description="the website Checkout returns to (`/billing?topup=…`); unset: `PUBLIC_URL`",
    )
    support_email: str | None = Field(
        default=None,
        description="the operator's contact for adding credits and questions, shown on "
        "`/pricing` (and wherever top-ups are explained) when there is no Stripe",
    )

    @model_validator(mode="after")
    def _check(self) -> PaymentSettings:
        if self.topup_min_cents > self.topup_max_cents:
            raise ValueError("TOPUP_MIN_CENTS must not exceed TOPUP_MAX_CENTS")
        if self.payments_provider == "stripe":
            missing = [
                name
                for name, secret in (
                    ("STRIPE_SECRET_KEY", self.stripe_secret_key),
                    ("STRIPE_WEBHOOK_SECRET", self.stripe_webhook_secret),
                )
                if secret is None or not secret.get_secret_value().strip()
            ]
            if missing:
                raise ValueError(f"PAYMENTS_PROVIDER=stripe needs {' and '.join(missing)}")
        return self

    def stripe_webhook_secrets(self) -> list[str]:
        """The webhook signing secrets, old and new while an endpoint secret is rolled."""
        raw = self.stripe_webhook_secret.get_secret_value() if self.stripe_webhook_secret else ""
        return [part.strip() for part in raw.split(",") if part.strip()]
