"""Rates: the reference's balance formulas, the draft-6 headers, the in-process counter."""

from __future__ import annotations

import asyncio

import pytest

from image_router.kit.money import usd_to_credits
from image_router.limits.rates import AccountScale, Decision, Rate, memory_counter

IMAGE = AccountScale(usd_to_credits("0.25"), 6, 100)
VIDEO = AccountScale(usd_to_credits("6"), 1, 20)


@pytest.mark.parametrize(
    ("usd", "images", "videos"),
    [
        ("0", 6, 1),
        ("0.16", 6, 1),
        ("1.74", 6, 1),
        ("1.75", 7, 1),  # floor(1.75 × 4) = 7
        ("10", 40, 1),  # observed: RateLimit-Policy: 40;w=1
        ("11.99", 47, 1),
        ("12", 48, 2),  # floor(12 / 6) = 2
        ("24.99", 99, 4),
        ("25", 100, 4),
        ("119.99", 100, 19),
        ("120", 100, 20),
        ("100000", 100, 20),
    ],
)
def test_account_rates_follow_the_reference_formulas(usd: str, images: int, videos: int) -> None:
    balance = usd_to_credits(usd)
    assert IMAGE.rate(balance) == Rate(images, 1)
    assert VIDEO.rate(balance) == Rate(videos, 1)


def test_rates_parse_the_limits_notation() -> None:
    assert Rate.parse("20/second") == Rate(20, 1)
    assert Rate.parse("6000/minute") == Rate(6000, 60)
    assert Rate.parse("6000 per 60 seconds") == Rate(6000, 60)
    with pytest.raises(ValueError, match="couldn't parse"):
        Rate.parse("lots")


def test_bad_scales_are_refused() -> None:
    with pytest.raises(ValueError, match="minimum"):
        AccountScale(0, 1, 2)
    with pytest.raises(ValueError, match="minimum"):
        AccountScale(10, 5, 2)


def test_headers_of_an_allowed_and_a_refused_request() -> None:
    allowed = Decision(Rate(40, 1), 1, 1)
    assert allowed.headers() == {
        "RateLimit-Policy": "40;w=1",
        "RateLimit-Limit": "40",
        "RateLimit-Remaining": "39",
        "RateLimit-Reset": "1",
    }
    refused = Decision(Rate(6000, 60), 6001, 42)
    assert not refused.allowed
    assert refused.headers()["RateLimit-Remaining"] == "0"
    assert refused.headers()["Retry-After"] == "42"
    # Never tell a client to retry after 0 seconds.
    assert Decision(Rate(1, 1), 2, 0).headers()["Retry-After"] == "1"
    assert (b"ratelimit-policy", b"40;w=1") in allowed.raw_headers()


async def test_the_memory_counter_counts_fixed_windows_per_identity() -> None:
    counter = memory_counter()
    rate = Rate(2, 1)
    first = [await counter.hit("general", "1.1.1.1", rate) for _ in range(3)]
    assert [d.allowed for d in first if d] == [True, True, False]
    assert [d.remaining for d in first if d] == [1, 0, 0]
    assert all(d is not None and d.reset_s == 1 for d in first)
    other = await counter.hit("general", "2.2.2.2", rate)
    assert other is not None and other.count == 1
    other_limiter = await counter.hit("generation-ip", "1.1.1.1", rate)
    assert other_limiter is not None and other_limiter.count == 1
    await asyncio.sleep(1.05)  # the window started at the first request has passed
    again = await counter.hit("general", "1.1.1.1", rate)
    assert again is not None and again.count == 1 and again.allowed
    assert counter.shared is False
    await counter.close()


async def test_a_changing_rate_keeps_the_count_of_the_window() -> None:
    """An account whose balance (and so its rate) changes mid-window is not given a fresh
    counter."""
    counter = memory_counter()
    await counter.hit("account-image", "acct", Rate(6, 1))
    decision = await counter.hit("account-image", "acct", Rate(40, 1))
    assert decision is not None and decision.count == 2 and decision.remaining == 38
