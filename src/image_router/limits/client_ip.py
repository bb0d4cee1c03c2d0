"""Which address a request comes from (spec §1.1), decided once per request.

Behind proxies the socket peer is the proxy, so the client is read from headers the proxies
write — but only as many hops as the operator says are trusted, because anything further
left in `X-Forwarded-For` is whatever the client chose to send.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from image_router.kit.networks import parse_address

_STATE_KEY = "image_router.client_ip"
_FORWARDED_FOR = b"x-forwarded-for"


@dataclass(frozen=True)
class ClientIpPolicy:
    """`trusted_proxy_count` 0: the socket peer. N > 0: like Express's `trust proxy` N, the
    Nth address from the right of `X-Forwarded-For` (the leftmost when there are fewer),
    unless `header` (e.g. `CF-Connecting-IP`) is configured and present."""

    trusted_proxy_count: int = 0
    header: str | None = None
    _header_key: bytes | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.trusted_proxy_count < 0:
            raise ValueError("the trusted proxy count must be 0 or more")
        key = self.header.strip().lower().encode("latin-1") if self.header else None
        object.__setattr__(self, "_header_key", key or None)

    def resolve(self, peer: str | None, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
        # A peer that is not an address (a unix socket, a test client) still keys limiters.
        peer_ip = (normalise(peer) or peer) if peer else None
        if self.trusted_proxy_count == 0:
            return peer_ip
        forwarded: list[str] = []
        for name, value in headers:
            lowered = name.lower()
            if self._header_key is not None and lowered == self._header_key:
                chosen = normalise(value.decode("latin-1"))
                if chosen is not None:
                    return chosen
            elif lowered == _FORWARDED_FOR:
                forwarded.extend(p for p in value.decode("latin-1").split(",") if p.strip())
        # Express's proxy-addr: [peer, X-Forwarded-For right to left...], trusting N hops.
        # A value that is not an address (garbage sent by a client when fewer proxies than
        # configured are in front) falls back to the peer rather than keying on it.
        hops = forwarded[::-1]
        if not hops:
            return peer_ip
        return normalise(hops[min(self.trusted_proxy_count, len(hops)) - 1]) or peer_ip

    def of_scope(self, scope: MutableMapping[str, Any]) -> str | None:
        """The client address of an ASGI request, computed once and kept in its state."""
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        if _STATE_KEY not in state:
            client = scope.get("client")
            state[_STATE_KEY] = self.resolve(client[0] if client else None, scope["headers"])
        ip: str | None = state[_STATE_KEY]
        return ip


def normalise(text: str) -> str | None:
    """Canonical spelling of an address (IPv4-mapped IPv6 as IPv4; port and brackets
    dropped), or None when `text` is not one."""
    value = text.strip()
    address = parse_address(value)
    if address is None:
        if value.startswith("[") and "]" in value:  # [2001:db8::1]:443
            address = parse_address(value[1 : value.index("]")])
        elif value.count(":") == 1:  # 203.0.113.7:5678
            address = parse_address(value.split(":", 1)[0])
    return str(address) if address is not None else None
