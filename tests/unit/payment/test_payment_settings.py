"""Payment settings fail fast at start-up rather than at the first payment."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from image_router.config import Settings


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_stripe_without_its_secrets_is_refused() -> None:
    with pytest.raises(ValidationError, match="STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET"):
        settings(payments_provider="stripe")
    with pytest.raises(ValidationError, match="needs STRIPE_WEBHOOK_SECRET"):
        settings(
            payments_provider="stripe", stripe_secret_key="sk_test_x", stripe_webhook_secret=" "
        )


def test_topup_bounds_must_make_sense() -> None:
    with pytest.raises(ValidationError, match="TOPUP_MIN_CENTS must not exceed"):
        settings(topup_min_cents=5000, topup_max_cents=1000)
    with pytest.raises(ValidationError):
        settings(topup_min_cents=10)  # below Stripe's smallest charge
    with pytest.raises(ValidationError):
        settings(billing_currency="eur")


def test_webhook_secrets_are_a_comma_list() -> None:
    configured = settings(
        payments_provider="stripe",
        stripe_secret_key="sk_test_x",
        stripe_webhook_secret="whsec_old, whsec_new,",
    )
    assert configured.payments.stripe_webhook_secrets() == ["whsec_old", "whsec_new"]
    assert settings().payments.payments_provider == "none"
