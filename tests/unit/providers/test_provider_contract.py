"""The contract every provider keeps, checked against its vendor fake.

Cases are discovered: every module of `tests/fakes` may define `CONTRACT_CASES`, a list of
`tests.fakes.contract.ContractCase` (provider class, fake factory, credential, base path,
a job the vendor accepts and one it refuses on content grounds). Adding a vendor needs no
edit here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from image_router.providers.base import (
    Provider,
    Result,
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from tests.fakes import FakeVendor, serve_in_thread
from tests.fakes.contract import ContractCase, discover_cases

FAKE_ROOT = "http://fake.test"
SHORT_TIMEOUT = 0.2
WRONG_CREDENTIAL = "sk-definitely-not-the-right-key-9f8e7d"


CONTRACT_CASES = discover_cases()


@pytest.fixture(params=CONTRACT_CASES, ids=lambda case: case.id)
def case(request: pytest.FixtureRequest) -> ContractCase:
    param: ContractCase = request.param
    return param


@pytest.fixture
def fake(case: ContractCase) -> FakeVendor:
    return case.make_fake()


@pytest.fixture
async def http(fake: FakeVendor) -> AsyncIterator[httpx.AsyncClient]:
    async with fake.client(FAKE_ROOT, timeout=SHORT_TIMEOUT) as client:
        yield client


@pytest.fixture
def provider(case: ContractCase, http: httpx.AsyncClient) -> Provider:
    return case.build(http, FAKE_ROOT)


def assert_has_images(result: Result) -> None:
    assert result.artifacts
    for artifact in result.artifacts:
        assert artifact.data or artifact.url
        if artifact.data is not None:
            assert len(artifact.data) > 0


def assert_no_secret(case: ContractCase, text: object) -> None:
    assert case.credential not in str(text)
    assert WRONG_CREDENTIAL not in str(text)


async def test_happy_path_returns_images(
    case: ContractCase, fake: FakeVendor, provider: Provider
) -> None:
    result = await provider.generate(case.job, case.target)

    assert_has_images(result)
    assert fake.requests, "the provider never reached its vendor"
    assert_no_secret(case, result.raw)
    assert_no_secret(case, result.extra)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, UpstreamUnavailableError),
        (503, UpstreamUnavailableError),
        (429, UpstreamRateLimitedError),
    ],
)
async def test_vendor_status_maps_to_upstream_error(
    case: ContractCase,
    fake: FakeVendor,
    provider: Provider,
    status: int,
    expected: type[UpstreamError],
) -> None:
    fake.fail_next(status, times=10)

    with pytest.raises(expected) as caught:
        await provider.generate(case.job, case.target)

    assert caught.value.provider == case.id
    assert caught.value.retry_elsewhere is True
    assert_no_secret(case, caught.value.record())


async def test_vendor_refusing_our_key_is_misconfiguration(
    case: ContractCase, http: httpx.AsyncClient
) -> None:
    provider = case.build(http, FAKE_ROOT, credential=WRONG_CREDENTIAL)

    with pytest.raises(UpstreamMisconfiguredError) as caught:
        await provider.generate(case.job, case.target)

    assert caught.value.retry_elsewhere is True
    assert_no_secret(case, caught.value.record())


async def test_stalled_vendor_times_out(
    case: ContractCase, fake: FakeVendor, provider: Provider
) -> None:
    fake.hang_next(SHORT_TIMEOUT * 10, times=10)

    with pytest.raises(UpstreamTimeoutError) as caught:
        await provider.generate(case.job, case.target)

    assert caught.value.retry_elsewhere is True
    assert_no_secret(case, caught.value.record())


async def test_malformed_body_is_a_protocol_error(
    case: ContractCase, fake: FakeVendor, provider: Provider
) -> None:
    fake.garbage_next(times=10)

    with pytest.raises(UpstreamProtocolError) as caught:
        await provider.generate(case.job, case.target)

    assert_no_secret(case, caught.value.record())


async def test_content_refusal_is_rejected_and_not_retried(
    case: ContractCase, provider: Provider
) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        await provider.generate(case.refused_job, case.target)

    assert caught.value.retry_elsewhere is False
    assert caught.value.message
    assert_no_secret(case, caught.value.record())


async def test_works_over_real_loopback_http(case: ContractCase) -> None:
    fake = case.make_fake()
    with serve_in_thread(fake.app) as root:
        async with httpx.AsyncClient(timeout=SHORT_TIMEOUT * 10) as http:
            provider = case.build(http, root)
            result = await provider.generate(case.job, case.target)

            fake.hang_next(SHORT_TIMEOUT * 3, times=10)
            stalled = case.build(httpx.AsyncClient(timeout=SHORT_TIMEOUT), root)
            try:
                with pytest.raises(UpstreamTimeoutError):
                    await stalled.generate(case.job, case.target)
            finally:
                await stalled.http.aclose()

    assert_has_images(result)
    assert fake.requests[0].base_url == f"{root}/"
