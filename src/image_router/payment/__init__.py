"""Payments: prepaid credits bought through Stripe Checkout (spec STR-1…8).

`PAYMENTS_PROVIDER=none` (the default) leaves this package unused: the operator grants
credits with the CLI. With `stripe`, `topups` starts Checkout Sessions and keeps the deposits
history, and `webhooks` turns Stripe's events into ledger entries exactly once.
"""
