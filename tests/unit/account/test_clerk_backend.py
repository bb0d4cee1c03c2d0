"""Clerk's Backend API: reading and deleting a user (CLK-7, DSR-2 step 5)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from image_router.account.clerk import ClerkBackend, ClerkUnavailable
from tests.fakes.clerk import SECRET_KEY, FakeClerk


@pytest.fixture
def fake() -> FakeClerk:
    return FakeClerk()


@pytest.fixture
async def backend(fake: FakeClerk) -> AsyncIterator[ClerkBackend]:
    async with fake.client("http://clerk.test") as client:
        yield ClerkBackend(client, secret_key=SECRET_KEY, api_url="http://clerk.test/")


async def test_get_user_reads_the_user_with_the_secret_key(
    fake: FakeClerk, backend: ClerkBackend
) -> None:
    user = fake.add_user("user_2abc", email="grace@example.com")

    assert await backend.get_user("user_2abc") == user
    assert fake.last.method == "GET" and fake.last.path == "/v1/users/user_2abc"
    assert fake.last.headers["authorization"] == f"Bearer {SECRET_KEY}"


async def test_an_unknown_user_is_none(backend: ClerkBackend) -> None:
    assert await backend.get_user("user_missing") is None


async def test_delete_user_deletes_once_and_a_second_time_is_already_gone(
    fake: FakeClerk, backend: ClerkBackend
) -> None:
    fake.add_user("user_2abc")

    assert await backend.delete_user("user_2abc") is True
    assert await backend.delete_user("user_2abc") is False  # 404: gone, which is success
    assert fake.deleted_users == ["user_2abc"]
    assert [r.method for r in fake.requests] == ["DELETE", "DELETE"]


async def test_a_user_id_stays_one_path_segment() -> None:
    sent: list[bytes] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request.url.raw_path)
        return httpx.Response(404, json={"errors": [{"code": "resource_not_found"}]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        backend = ClerkBackend(client, secret_key=SECRET_KEY, api_url="http://clerk.test")
        assert await backend.get_user("../jwks?x=1") is None
    assert sent == [b"/v1/users/..%2Fjwks%3Fx%3D1"]


@pytest.mark.parametrize("status", [401, 429, 500, 503])
async def test_clerk_errors_are_reported_as_unavailable(
    fake: FakeClerk, backend: ClerkBackend, status: int
) -> None:
    fake.add_user("user_2abc")
    fake.fail_next(status)
    with pytest.raises(ClerkUnavailable, match=str(status)):
        await backend.get_user("user_2abc")
    fake.fail_next(status)
    with pytest.raises(ClerkUnavailable):
        await backend.delete_user("user_2abc")
    assert fake.deleted_users == []


async def test_an_unreachable_clerk_is_unavailable() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(_refuse)) as client:
        backend = ClerkBackend(client, secret_key=SECRET_KEY, api_url="http://clerk.test")
        with pytest.raises(ClerkUnavailable):
            await backend.delete_user("user_2abc")


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)
