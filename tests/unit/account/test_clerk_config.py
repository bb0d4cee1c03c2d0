"""Clerk settings that must fail at start-up, and the stateless CSRF token of a session."""

from __future__ import annotations

import pytest

from image_router.account.clerk import ClerkAuth, ClerkVerifier, csrf_key, webhook_verifier
from image_router.kit.crypto import new_key
from tests.fakes.clerk import ISSUER, ORIGIN, WEBHOOK_SECRET, FakeClerk


@pytest.mark.parametrize("secret", ["whsec_", "whsec_abc!", "not a secret", "whsec_%%%%"])
def test_a_malformed_webhook_secret_fails_at_start_up(secret: str) -> None:
    with pytest.raises(ValueError, match="CLERK_WEBHOOK_SIGNING_SECRET"):
        webhook_verifier(secret)


def test_a_real_webhook_secret_is_accepted_and_none_means_no_webhook() -> None:
    assert webhook_verifier(WEBHOOK_SECRET) is not None
    assert webhook_verifier(None) is None


def _auth(index_key: bytes) -> ClerkAuth:
    verifier = ClerkVerifier(
        issuer=ISSUER, authorized_parties=[ORIGIN], jwt_key=FakeClerk().public_pem()
    )
    return ClerkAuth(verifier=verifier, backend=None, webhook=None, csrf_key=csrf_key(index_key))


def test_the_csrf_token_is_per_session_and_per_deployment() -> None:
    key = new_key()
    one, same_deployment, other_deployment = _auth(key), _auth(key), _auth(new_key())

    assert one.csrf_token("sess_a") == same_deployment.csrf_token("sess_a")
    assert one.csrf_token("sess_a") != one.csrf_token("sess_b")
    assert one.csrf_token("sess_a") != other_deployment.csrf_token("sess_a")
    assert len(one.csrf_token("sess_a")) == 64


def test_a_verifier_needs_a_key_source() -> None:
    with pytest.raises(ValueError, match="CLERK_JWT_KEY or CLERK_JWKS_URL"):
        ClerkVerifier(issuer=ISSUER, authorized_parties=[ORIGIN])
