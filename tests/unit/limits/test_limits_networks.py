"""Addresses and networks: strict parsing, canonical spelling, membership for v4 and v6."""

from __future__ import annotations

import ipaddress

import pytest

from image_router.kit.networks import (
    NetworkError,
    NetworkSet,
    canonical,
    parse_address,
    parse_network,
)


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("203.0.113.7", "203.0.113.7"),
        (" 203.0.113.0/24 ", "203.0.113.0/24"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("2001:db8::/32", "2001:db8::/32"),
        ("::ffff:192.0.2.0/120", "192.0.2.0/24"),  # IPv4-mapped is stored as IPv4
        ("0.0.0.0/0", "0.0.0.0/0"),
    ],
)
def test_networks_are_stored_canonically(text: str, stored: str) -> None:
    assert canonical(parse_network(text)) == stored


@pytest.mark.parametrize("text", ["nonsense", "10.0.0.1/8", "2001:db8::1/32", "1.2.3.4/33", ""])
def test_bad_networks_are_refused_with_the_input_named(text: str) -> None:
    with pytest.raises(NetworkError, match="is not an IP address or network"):
        parse_network(text)


def test_mapped_ipv6_clients_are_ipv4() -> None:
    assert parse_address("::ffff:127.0.0.1") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_address("testclient") is None
    assert parse_address(None) is None


def test_membership_across_prefix_lengths_and_families() -> None:
    networks = NetworkSet(
        parse_network(n)
        for n in ("203.0.113.0/24", "198.51.100.7", "2607:f1c0:f010:2300::1", "2600:6c42::/32")
    )
    inside = ["203.0.113.0", "203.0.113.255", "198.51.100.7", "2607:f1c0:f010:2300::1"]
    inside += ["2600:6c42:4b40:160a::b1", "::ffff:203.0.113.9"]
    outside = ["203.0.114.0", "198.51.100.8", "2607:f1c0:f010:2300::2", "2600:6c43::1"]
    outside += ["::ffff:198.51.100.8", "10.0.0.1"]
    assert [networks.contains(parse_address(a)) for a in inside] == [True] * len(inside)
    assert [networks.contains(parse_address(a)) for a in outside] == [False] * len(outside)
    assert len(networks) == 4


def test_everything_is_inside_the_default_routes() -> None:
    networks = NetworkSet([parse_network("0.0.0.0/0"), parse_network("::/0")])
    assert networks.contains(parse_address("8.8.8.8"))
    assert networks.contains(parse_address("2001:db8::1"))
    assert not NetworkSet().contains(parse_address("8.8.8.8"))
