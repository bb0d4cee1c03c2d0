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

from image_router.providers.contract import Provider, Result
from image_router.providers.errors import (
    UpstreamError,
    UpstreamMisconfiguredError,
    UpstreamProtocolError,
    UpstreamRateLimitedError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from image_router.providers.polling import DEFAULT_RETRY
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


POLLING_CASES = [c for c in CONTRACT_CASES if c.polls]


def submissions(fake: FakeVendor) -> int:
    """How many jobs were submitted: requests carrying the first request's body (every
    status check differs from it, even where checks share the submit's URL)."""
    first = fake.requests[0].body
    return sum(1 for r in fake.requests if r.body == first)


@pytest.mark.parametrize("case", POLLING_CASES, indirect=True, ids=lambda c: c.id)
@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_transient_poll_failures_are_ridden_over(
    case: ContractCase, fake: FakeVendor, provider: Provider, status: int
) -> None:
    """Two failed status checks of a running job, then success: one job, one result."""
    fake.fail_polls(status, times=2)

    result = await provider.generate(case.job, case.target)

    assert_has_images(result)
    assert fake.poll_failures_left == 0, "the provider never polled through the failures"
    assert submissions(fake) == 1
    assert fake.cancelled_jobs() == []


@pytest.mark.parametrize("case", POLLING_CASES, indirect=True, ids=lambda c: c.id)
async def test_a_poll_read_timeout_is_ridden_over(
    case: ContractCase, fake: FakeVendor, provider: Provider
) -> None:
    fake.hang_polls(SHORT_TIMEOUT * 3, times=2)

    result = await provider.generate(case.job, case.target)

    assert_has_images(result)
    assert submissions(fake) == 1


@pytest.mark.parametrize("case", POLLING_CASES, indirect=True, ids=lambda c: c.id)
async def test_polling_failing_for_good_gives_up_and_cancels_the_job(
    case: ContractCase, fake: FakeVendor, provider: Provider
) -> None:
    fake.fail_polls(503, times=100)

    with pytest.raises(UpstreamUnavailableError) as caught:
        await provider.generate(case.job, case.target)

    assert 100 - fake.poll_failures_left == DEFAULT_RETRY.max_failures
    assert caught.value.retry_elsewhere is True
    assert caught.value.vendor_job_cancelled is case.cancels
    assert caught.value.record().get("vendor_job_cancelled", False) is case.cancels
    assert len(fake.cancelled_jobs()) == (1 if case.cancels else 0)
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
