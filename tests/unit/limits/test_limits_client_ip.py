"""The client address (spec §1.1) behind zero, one or several trusted proxies."""

from __future__ import annotations

from typing import Any

import pytest

from image_router.limits.client_ip import ClientIpPolicy

PEER = "10.0.0.2"


def headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(k.replace("_", "-").encode(), v.encode()) for k, v in values.items()]


def test_without_trusted_proxies_the_socket_peer_is_the_client() -> None:
    policy = ClientIpPolicy(0, "CF-Connecting-IP")
    spoofed = headers(x_forwarded_for="1.1.1.1", cf_connecting_ip="2.2.2.2")
    assert policy.resolve(PEER, spoofed) == PEER
    assert policy.resolve("::ffff:10.0.0.2", []) == PEER
    assert policy.resolve(None, []) is None


@pytest.mark.parametrize(
    ("count", "forwarded", "client"),
    [
        (1, "198.51.100.1, 203.0.113.9", "203.0.113.9"),  # one proxy appended the peer
        (2, "198.51.100.1, 203.0.113.9", "198.51.100.1"),
        (2, "6.6.6.6, 198.51.100.1, 203.0.113.9", "198.51.100.1"),  # spoofed left part
        (3, "203.0.113.9", "203.0.113.9"),  # fewer hops than trusted: the leftmost
        (1, "2001:DB8::7", "2001:db8::7"),
        (1, "[2001:db8::7]:443", "2001:db8::7"),
        (1, "203.0.113.9:5555", "203.0.113.9"),
        (1, "not-an-address", PEER),  # garbage never keys a limiter
    ],
)
def test_trusted_proxies_count_hops_from_the_right(count: int, forwarded: str, client: str) -> None:
    assert ClientIpPolicy(count).resolve(PEER, headers(x_forwarded_for=forwarded)) == client


def test_repeated_forwarded_headers_are_one_list() -> None:
    raw = [(b"X-Forwarded-For", b"198.51.100.1"), (b"x-forwarded-for", b"203.0.113.9")]
    assert ClientIpPolicy(2).resolve(PEER, raw) == "198.51.100.1"


def test_a_trusted_proxy_without_forwarded_for_leaves_the_peer() -> None:
    assert ClientIpPolicy(1).resolve(PEER, []) == PEER


def test_the_client_header_wins_only_behind_trusted_proxies() -> None:
    policy = ClientIpPolicy(1, "CF-Connecting-IP")
    both = headers(x_forwarded_for="198.51.100.1", cf_connecting_ip="2001:db8::9")
    assert policy.resolve(PEER, both) == "2001:db8::9"
    # Absent or unusable: back to X-Forwarded-For.
    assert policy.resolve(PEER, headers(x_forwarded_for="198.51.100.1")) == "198.51.100.1"
    bad = headers(x_forwarded_for="198.51.100.1", cf_connecting_ip="bogus")
    assert policy.resolve(PEER, bad) == "198.51.100.1"


def test_the_address_is_resolved_once_per_request() -> None:
    scope: dict[str, Any] = {"client": (PEER, 1), "headers": headers(x_forwarded_for="1.2.3.4")}
    policy = ClientIpPolicy(1)
    assert policy.of_scope(scope) == "1.2.3.4"
    scope["headers"] = []
    assert policy.of_scope(scope) == "1.2.3.4"


def test_a_negative_proxy_count_is_refused() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        ClientIpPolicy(-1)
