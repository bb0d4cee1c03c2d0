"""Clerk session tokens (CLK-1…6): the verification matrix, the JWKS cache and rotation."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest

from image_router.account.clerk import ClerkUnavailable, ClerkVerifier, InvalidSessionToken
from tests.fakes.clerk import ISSUER, ORIGIN, SECRET_KEY, FakeClerk, new_rsa_key
from tests.fakes.upstream import serve_in_thread

JWKS_URL = "http://clerk.test/v1/jwks"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> FakeClerk:
    return FakeClerk()


@pytest.fixture
async def http(fake: FakeClerk) -> AsyncIterator[httpx.AsyncClient]:
    async with fake.client("http://clerk.test") as client:
        yield client


def jwks_verifier(http: httpx.AsyncClient, clock: Clock | None = None, **kw: Any) -> ClerkVerifier:
    return ClerkVerifier(
        issuer=ISSUER,
        authorized_parties=[ORIGIN],
        jwks_url=JWKS_URL,
        http=http,
        jwks_headers={"Authorization": f"Bearer {SECRET_KEY}"},
        clock=clock or Clock(),
        **kw,
    )


def pem_verifier(pem: str, http: httpx.AsyncClient | None = None) -> ClerkVerifier:
    return ClerkVerifier(issuer=ISSUER, authorized_parties=[ORIGIN], jwt_key=pem, http=http)


async def test_a_valid_token_gives_the_user_session_and_first_factor_age(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    iat = int(time.time())
    token = fake.mint("user_ada", sid="sess_1", iat=iat, fva=[7, -1])

    session = await jwks_verifier(http).verify(token)

    assert (session.subject, session.session_id, session.first_factor_age_min) == (
        "user_ada",
        "sess_1",
        7,
    )
    assert session.verified_at == datetime.fromtimestamp(iat, UTC) - timedelta(minutes=7)
    assert session.claims["azp"] == ORIGIN


@pytest.mark.parametrize("fva", [None, [-1, -1], "7", [True, 3]])
async def test_without_a_first_factor_age_there_is_no_verification_time(
    fake: FakeClerk, http: httpx.AsyncClient, fva: object
) -> None:
    session = await jwks_verifier(http).verify(fake.mint(fva=fva))
    assert session.first_factor_age_min is None and session.verified_at is None


def _now() -> int:
    return int(time.time())


# Times are offsets from now, resolved when the test runs (not when it is collected).
REJECTED: dict[str, dict[str, Any]] = {
    "expired": {"exp": -30},
    "not yet valid": {"nbf": 30},
    "issued in the future": {"iat": 30},
    "wrong issuer": {"iss": "https://clerk.evil.test"},
    "wrong authorized party": {"azp": "https://evil.test"},
    "no authorized party": {"azp": None},
    "pending session": {"sts": "pending"},
    "no session id": {"sid": None},
    "empty subject": {"sub": ""},
    "no exp": {"exp": None},
    "no iat": {"iat": None},
    "no nbf": {"nbf": None},
    "no iss": {"iss": None},
    "an audience": {"aud": "someone-else"},
}
_TIMES = ("exp", "nbf", "iat")


@pytest.mark.parametrize("claims", REJECTED.values(), ids=REJECTED.keys())
async def test_tokens_that_must_not_sign_in(
    fake: FakeClerk, http: httpx.AsyncClient, claims: dict[str, Any]
) -> None:
    resolved = {
        k: _now() + v if k in _TIMES and isinstance(v, int) else v for k, v in claims.items()
    }
    with pytest.raises(InvalidSessionToken):
        await jwks_verifier(http).verify(fake.mint(**resolved))


async def test_clock_skew_of_a_few_seconds_is_tolerated(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    token = fake.mint(exp=_now() - 2, nbf=_now() + 2)
    assert (await jwks_verifier(http).verify(token)).subject == "user_test"


async def test_a_token_signed_by_another_key_with_a_known_kid_is_refused(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    with pytest.raises(InvalidSessionToken):
        await jwks_verifier(http).verify(fake.mint(key=new_rsa_key()))


async def test_hs256_signed_with_the_public_pem_is_refused(fake: FakeClerk) -> None:
    """Key confusion: the classic attack signs HS256 with the public key as the secret."""
    pem = fake.public_pem()
    forged = _hs256(fake.claims(), pem, fake.current_kid)
    with pytest.raises(InvalidSessionToken, match="algorithm"):
        await pem_verifier(pem).verify(forged)


def _hs256(claims: dict[str, Any], secret: str, kid: str) -> str:
    # PyJWT refuses to HMAC-sign with a PEM, so the forgery is assembled by hand.
    import base64
    import hashlib
    import hmac
    import json

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


async def test_alg_none_is_refused_without_fetching_keys(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    unsigned = jwt.encode(fake.claims(), None, algorithm="none", headers={"kid": fake.current_kid})
    with pytest.raises(InvalidSessionToken, match="algorithm"):
        await jwks_verifier(http).verify(unsigned)
    assert fake.jwks_hits() == 0


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30"])
async def test_garbage_is_refused(http: httpx.AsyncClient, token: str) -> None:
    with pytest.raises(InvalidSessionToken):
        await jwks_verifier(http).verify(token)


# ------------------------------------------------------------------------ JWKS: CLK-2


async def test_keys_are_fetched_once_and_cached_until_the_ttl(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    verifier = jwks_verifier(http, clock, jwks_cache_s=300)
    for _ in range(5):
        await verifier.verify(fake.mint())
    assert fake.jwks_hits() == 1
    assert fake.last.headers["authorization"] == f"Bearer {SECRET_KEY}"

    clock.now += 301
    await verifier.verify(fake.mint())
    assert fake.jwks_hits() == 2


async def test_a_rotated_key_is_fetched_exactly_once(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    verifier = jwks_verifier(http, clock)
    old_token = fake.mint()
    await verifier.verify(old_token)

    fake.rotate()  # the old key is withdrawn
    clock.now += 60  # within the cache TTL, past the kid-miss cooldown
    new_tokens = [fake.mint() for _ in range(3)]
    for token in new_tokens:
        await verifier.verify(token)

    assert fake.jwks_hits() == 2
    with pytest.raises(InvalidSessionToken):
        await verifier.verify(old_token)
    assert fake.jwks_hits() == 2


async def test_made_up_kids_do_not_turn_into_a_fetch_per_request(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    verifier = jwks_verifier(http, clock)
    await verifier.verify(fake.mint())
    clock.now += 60
    for _ in range(10):
        with pytest.raises(InvalidSessionToken, match="kid"):
            await verifier.verify(fake.mint(kid=f"ins_{uuid.uuid4().hex}"))
    assert fake.jwks_hits() == 2  # one re-fetch for the first unknown kid, then none


async def test_concurrent_first_requests_share_one_fetch(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    fake.delay = 0.05
    verifier = jwks_verifier(http)
    tokens = [fake.mint(f"user_{i}") for i in range(20)]
    sessions = await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert [s.subject for s in sessions] == [f"user_{i}" for i in range(20)]
    assert fake.jwks_hits() == 1


async def test_cached_keys_keep_working_while_clerk_is_down(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    clock = Clock()
    verifier = jwks_verifier(http, clock)
    await verifier.verify(fake.mint())
    clock.now += 301
    fake.fail_next(503)
    assert (await verifier.verify(fake.mint("user_b"))).subject == "user_b"


async def test_without_any_keys_an_unreachable_clerk_is_not_a_bad_token(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    fake.fail_next(503)
    with pytest.raises(ClerkUnavailable):
        await jwks_verifier(http).verify(fake.mint())


async def test_the_backend_jwks_refuses_a_wrong_secret(
    fake: FakeClerk, http: httpx.AsyncClient
) -> None:
    verifier = ClerkVerifier(
        issuer=ISSUER, authorized_parties=[ORIGIN], jwks_url=JWKS_URL, http=http
    )
    with pytest.raises(ClerkUnavailable):
        await verifier.verify(fake.mint())


async def test_jwks_over_real_loopback_http(fake: FakeClerk) -> None:
    with serve_in_thread(fake.app) as base:
        async with httpx.AsyncClient(trust_env=False) as client:
            verifier = ClerkVerifier(
                issuer=ISSUER,
                authorized_parties=[ORIGIN],
                jwks_url=f"{base}/.well-known/jwks.json",
                http=client,
            )
            assert (await verifier.verify(fake.mint("user_loop"))).subject == "user_loop"
            await verifier.verify(fake.mint("user_loop"))
    assert fake.jwks_hits() == 1


# ------------------------------------------------------------------------ PEM: networkless


def _single_line(pem: str) -> str:
    return pem.replace("\n", "")


def _escaped(pem: str) -> str:
    return pem.replace("\n", "\\n")


@pytest.mark.parametrize("shape", [str, _single_line, _escaped], ids=["pem", "one-line", "\\n"])
async def test_a_pem_key_verifies_without_any_network(
    fake: FakeClerk, http: httpx.AsyncClient, shape: Any
) -> None:
    verifier = pem_verifier(shape(fake.public_pem()), http)
    assert (await verifier.verify(fake.mint("user_pem"))).subject == "user_pem"
    with pytest.raises(InvalidSessionToken):
        await verifier.verify(fake.mint(key=new_rsa_key()))
    assert fake.requests == []


def test_a_pem_that_is_not_an_rsa_public_key_fails_at_start_up() -> None:
    with pytest.raises(ValueError, match="PEM"):
        pem_verifier("not a key")
