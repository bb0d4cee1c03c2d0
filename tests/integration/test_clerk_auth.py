"""Signing in with Clerk (AUTH_PROVIDER=clerk): cookie and header, CSRF, step-up, the
separation from API keys, the sign-in pages, and networkless verification (CLK-1…10)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import Gateway
from tests.fakes.clerk import ORIGIN, SIGN_IN_URL, FakeClerk, clerk_gateway

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def fake() -> FakeClerk:
    return FakeClerk()


@pytest.fixture
async def gw(db_url: str, tmp_path: Path, fake: FakeClerk) -> AsyncIterator[Gateway]:
    async with clerk_gateway(db_url, tmp_path / "data", fake, jobs_interval_s=3600) as gateway:
        yield gateway


def _user(fake: FakeClerk, email: str = "ada@example.com") -> str:
    return str(fake.add_user(f"user_{uuid.uuid4().hex[:20]}", email=email)["id"])


def cookie(token: str) -> dict[str, str]:
    return {"cookie": f"__session={token}"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_the_session_cookie_signs_in_and_creates_the_account(
    gw: Gateway, fake: FakeClerk
) -> None:
    sub = _user(fake, "ada@example.com")

    response = await gw.client.get("/v1/account", headers=cookie(fake.mint(sub)))

    assert response.status_code == 200, response.text
    assert response.json()["email"] == "ada@example.com"
    assert [(r.method, r.path) for r in fake.requests if "users" in r.path] == [
        ("GET", f"/clerk/v1/users/{sub}")
    ]
    rows = await gw.rows("SELECT auth_provider, auth_subject FROM accounts")
    assert rows == [{"auth_provider": "clerk", "auth_subject": sub}]


async def test_the_same_token_works_as_a_bearer_header(gw: Gateway, fake: FakeClerk) -> None:
    sub = _user(fake)
    token = fake.mint(sub)

    by_cookie = await gw.client.get("/test/principal", headers=cookie(token))
    by_header = await gw.client.get("/test/principal", headers=bearer(token))

    assert by_cookie.status_code == by_header.status_code == 200
    assert by_cookie.json() == by_header.json()
    assert by_header.json()["via"] == "clerk"


async def test_the_sign_in_time_comes_from_the_first_factor_age(
    gw: Gateway, fake: FakeClerk
) -> None:
    sub = _user(fake)
    iat = int(time.time())
    fresh = await gw.client.get("/test/principal", headers=bearer(fake.mint(sub, iat=iat)))
    unknown = await gw.client.get("/test/principal", headers=bearer(fake.mint(sub, fva=[-1, -1])))
    assert fresh.json()["authenticated_at"] == iat - 2 * 60  # fva=[2, -1]
    assert unknown.json()["authenticated_at"] is None


@pytest.mark.parametrize(
    ("fva", "status"), [([2, -1], 200), ([30, -1], 403), ([-1, -1], 403), (None, 403)]
)
async def test_destructive_operations_need_a_recent_first_factor(
    gw: Gateway, fake: FakeClerk, fva: Any, status: int
) -> None:
    sub = _user(fake)
    response = await gw.client.post("/test/step-up", headers=bearer(fake.mint(sub, fva=fva)))
    assert response.status_code == status
    if status == 403:
        assert response.json()["error"]["code"] == "reverification_required"


CONFIRM = {"confirm": "DELETE MY ACCOUNT"}


async def test_account_deletion_needs_a_recent_sign_in(gw: Gateway, fake: FakeClerk) -> None:
    sub = _user(fake)
    stale = await gw.client.request(
        "DELETE", "/v1/account", headers=bearer(fake.mint(sub, fva=[30, -1])), json=CONFIRM
    )
    fresh = await gw.client.request(
        "DELETE", "/v1/account", headers=bearer(fake.mint(sub, fva=[2, -1])), json=CONFIRM
    )
    assert stale.status_code == 403
    assert stale.json()["error"]["code"] == "reverification_required"
    assert fresh.status_code == 202, fresh.text


@pytest.mark.parametrize("gone_at_clerk", [False, True], ids=["deleted", "already gone"])
async def test_erasing_from_our_side_deletes_the_clerk_user_once(
    db_url: str, tmp_path: Path, fake: FakeClerk, gone_at_clerk: bool
) -> None:
    async with clerk_gateway(db_url, tmp_path / "data", fake, jobs_interval_s=3600) as gw:
        sub = _user(fake)
        token = fake.mint(sub)
        response = await gw.client.request(
            "DELETE", "/v1/account", headers=bearer(token), json=CONFIRM
        )
        assert response.status_code == 202
        if gone_at_clerk:
            fake.users.pop(sub)  # deleted at Clerk meanwhile: a 404 is success too
        assert await gw.res.jobs.run_due() == 1
        assert await gw.res.jobs.run_due() == 0
        statuses = await gw.rows("SELECT status FROM jobs")

    deletes = [r.path for r in fake.requests if r.method == "DELETE"]
    assert deletes == [f"/clerk/v1/users/{sub}"]
    assert statuses == [{"status": "done"}]
    assert fake.deleted_users == ([] if gone_at_clerk else [sub])


# ------------------------------------------------------------------------ CSRF (CLK-10)


async def test_a_cookie_post_from_a_foreign_origin_is_refused(gw: Gateway, fake: FakeClerk) -> None:
    token = fake.mint(_user(fake))
    foreign = await gw.client.post(
        "/test/principal", headers=cookie(token) | {"origin": "https://evil.example"}
    )
    missing = await gw.client.post("/test/principal", headers=cookie(token))
    assert foreign.status_code == missing.status_code == 403
    assert foreign.json()["error"]["code"] == "csrf_failed"


async def test_a_cookie_post_from_our_pages_is_accepted(gw: Gateway, fake: FakeClerk) -> None:
    token = fake.mint(_user(fake))
    page = await gw.client.get("/", headers=cookie(token))
    found = CSRF_META.search(page.text)
    assert found is not None

    with_token = await gw.client.post(
        "/test/principal",
        headers=cookie(token) | {"x-csrf-token": found.group(1), "origin": "https://evil.example"},
    )
    same_origin = await gw.client.post(
        "/test/principal", headers=cookie(token) | {"origin": ORIGIN}
    )
    forged = await gw.client.post("/test/principal", headers=cookie(token) | {"x-csrf-token": "x"})

    assert with_token.status_code == same_origin.status_code == 200
    assert forged.status_code == 403


async def test_the_csrf_token_is_bound_to_the_clerk_session(gw: Gateway, fake: FakeClerk) -> None:
    sub = _user(fake)
    first = await gw.client.get("/", headers=cookie(fake.mint(sub, sid="sess_a")))
    again = await gw.client.get("/", headers=cookie(fake.mint(sub, sid="sess_a")))
    other = await gw.client.get("/", headers=cookie(fake.mint(sub, sid="sess_b")))
    tokens = [CSRF_META.search(r.text) for r in (first, again, other)]
    assert all(tokens)
    values = [t.group(1) for t in tokens if t]
    assert values[0] == values[1] != values[2]


async def test_a_bearer_post_needs_no_csrf_token(gw: Gateway, fake: FakeClerk) -> None:
    token = fake.mint(_user(fake))
    response = await gw.client.post(
        "/test/principal", headers=bearer(token) | {"origin": "https://elsewhere.example"}
    )
    assert response.status_code == 200


# ------------------------------------------------------------------------ signed out


@pytest.mark.parametrize(
    "claims",
    [{"exp": -30}, {"sts": "pending"}, {"azp": "https://evil.example"}, {"iss": "https://x"}],
    ids=["expired", "pending", "foreign azp", "foreign issuer"],
)
async def test_an_invalid_session_is_signed_out(
    gw: Gateway, fake: FakeClerk, claims: dict[str, Any]
) -> None:
    if "exp" in claims:
        claims = {"exp": int(time.time()) + claims["exp"]}
    token = fake.mint(_user(fake), **claims)

    api = await gw.client.get("/v1/account", headers=bearer(token))
    page = await gw.client.get("/account", headers=cookie(token))

    assert api.status_code == 401 and api.json()["error"]["code"] == "invalid_session"
    assert page.status_code == 303 and page.headers["location"] == "/signin"
    assert await gw.rows("SELECT id FROM accounts") == []


async def test_a_closed_account_cannot_sign_in(gw: Gateway, fake: FakeClerk) -> None:
    sub = _user(fake)
    assert (await gw.client.get("/v1/account", headers=bearer(fake.mint(sub)))).status_code == 200
    await gw.execute("UPDATE accounts SET status = 'deletion_pending'")

    response = await gw.client.get("/v1/account", headers=bearer(fake.mint(sub)))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "account_closed"


# ------------------------------------------------------------------------ API keys (CLK-9)


async def test_api_keys_keep_working_and_never_reach_clerk(gw: Gateway, fake: FakeClerk) -> None:
    _, key = await gw.account("1")

    response = await gw.client.get("/test/principal", headers=bearer(key))

    assert response.status_code == 200 and response.json()["via"] == "api_key"
    for request in fake.requests:
        assert key not in str(request.headers) + request.path + request.body.decode()


async def test_a_clerk_token_is_not_an_api_key(gw: Gateway, fake: FakeClerk) -> None:
    token = fake.mint(_user(fake))
    response = await gw.client.post("/v1/auth/test", headers=bearer(token))
    assert response.status_code == 401


# ------------------------------------------------------------------------ pages


@pytest.mark.parametrize(("method", "path"), [("GET", "/signin"), ("GET", "/signup")])
async def test_the_sign_in_pages_send_people_to_clerk(gw: Gateway, method: str, path: str) -> None:
    response = await gw.client.request(method, path)

    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == SIGN_IN_URL
    assert parse_qs(target.query) == {"redirect_url": ["http://gateway.test/account"]}


async def test_no_password_account_can_be_made_in_clerk_mode(gw: Gateway) -> None:
    response = await gw.client.post(
        "/signup", data={"email": "x@example.com", "password": "correct horse battery"}
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith(SIGN_IN_URL)
    assert await gw.rows("SELECT id FROM accounts") == []


async def test_local_mode_keeps_its_own_pages_and_has_no_clerk_webhook(gateway: Gateway) -> None:
    assert (await gateway.client.get("/signin")).status_code == 200
    assert (await gateway.client.post("/webhooks/clerk", content=b"{}")).status_code == 404


# ------------------------------------------------------------------------ networkless (CLK-2)


@pytest.mark.parametrize("one_line", [False, True], ids=["pem", "single-line pem"])
async def test_with_the_pem_key_clerk_is_never_called(
    db_url: str, tmp_path: Path, fake: FakeClerk, one_line: bool
) -> None:
    pem = fake.public_pem()
    overrides = {
        "clerk_jwt_key": pem.replace("\n", "") if one_line else pem,
        "clerk_secret_key": None,  # accounts come from the token alone
    }
    async with clerk_gateway(db_url, tmp_path / "data", fake, **overrides) as gw:
        sub = _user(fake)
        ok = await gw.client.get("/test/principal", headers=bearer(fake.mint(sub)))
        fake.rotate()
        unknown_key = await gw.client.get("/test/principal", headers=bearer(fake.mint(sub)))

    assert ok.status_code == 200 and unknown_key.status_code == 401
    assert fake.requests == []


async def test_a_public_jwks_gets_no_secret_key(
    db_url: str, tmp_path: Path, fake: FakeClerk
) -> None:
    url = "http://fakes/clerk/.well-known/jwks.json"
    async with clerk_gateway(db_url, tmp_path / "data", fake, clerk_jwks_url=url) as gw:
        response = await gw.client.get("/test/principal", headers=bearer(fake.mint(_user(fake))))
    assert response.status_code == 200
    jwks = [r for r in fake.requests if r.path.endswith("jwks.json")]
    assert len(jwks) == 1 and "authorization" not in jwks[0].headers


async def test_pages_load_clerks_script_and_sign_out_through_it(
    db_url: str, tmp_path: Path, fake: FakeClerk
) -> None:
    """Clerk's short-lived session cookie is kept fresh by its browser script, so every page
    loads it (from the Frontend API) and signs out through it rather than our form."""
    async with clerk_gateway(
        db_url, tmp_path / "data", fake, jobs_interval_s=3600, clerk_publishable_key="pk_test_x"
    ) as gateway:
        page = await gateway.client.get("/", headers=cookie(fake.mint(_user(fake))))
        issuer = gateway.res.settings.clerk.clerk_issuer
    assert page.status_code == 200
    assert 'data-clerk-publishable-key="pk_test_x"' in page.text
    assert f'src="{issuer}/npm/@clerk/clerk-js@5/dist/clerk.browser.js"' in page.text
    assert "Clerk.signOut" in page.text and 'action="/signout"' not in page.text
