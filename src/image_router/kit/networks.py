"""IP addresses and networks: parsing, canonical spelling, and fast membership tests."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetworkError(ValueError):
    """Text that is not an IP address or network; the message is meant for an operator."""


def parse_network(text: str) -> Network:
    """An address (`203.0.113.7`, `2001:db8::1`) or a CIDR network (`2001:db8::/32`).

    Strict: `10.0.0.1/8` is refused (host bits set), since whoever typed it meant either
    the address or the network and only they know which.
    """
    value = text.strip()
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise NetworkError(f"'{value}' is not an IP address or network (CIDR): {exc}") from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:a.b.c.d/n is an IPv4 network in disguise
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def canonical(network: Network) -> str:
    """How a ban is stored and shown: a bare address for a single host, CIDR otherwise."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


@functools.lru_cache(maxsize=4096)
def parse_address(text: str | None) -> Address | None:
    """A client address, or None when it is not one. IPv4-mapped IPv6 becomes IPv4.

    Remembered: every generation parses its client's address twice (its spelling, then
    the ban check), and the addresses are immutable values."""
    if not text:
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class NetworkSet:
    """Membership in many networks with one set lookup per distinct prefix length."""

    def __init__(self, networks: Iterable[Network] = ()) -> None:
        # (version, prefix length) -> network addresses as integers
        self._by_prefix: dict[tuple[int, int], set[int]] = {}
        self._networks: list[Network] = []
        for network in networks:
            key = (network.version, network.prefixlen)
            self._by_prefix.setdefault(key, set()).add(int(network.network_address))
            self._networks.append(network)

    def __len__(self) -> int:
        return len(self._networks)

    @property
    def networks(self) -> tuple[Network, ...]:
        return tuple(self._networks)

    def contains(self, address: Address | None) -> bool:
        if address is None or not self._by_prefix:
            return False
        value = int(address)
        bits = address.max_prefixlen
        for (version, prefix), members in self._by_prefix.items():
            if version != address.version:
                continue
            mask = ((1 << prefix) - 1) << (bits - prefix) if prefix else 0
            if value & mask in members:
                return True
        return False
