"""Fetch an output URL a vendor handed us without letting it point the gateway anywhere.

A vendor's answer is untrusted input. An output URL may name the loopback interface, the
private network or a cloud metadata service (169.254.169.254), and the gateway would fetch
it from its own position in the network and store whatever came back. So, for each URL and
for each redirect hop:

- only `http` and `https`;
- a URL on the host of the serving vendor's configured base URL is trusted as that vendor
  (the operator chose that host: self-hosted vendors, the test fakes, an e2e vendor on
  127.0.0.1) and is fetched as any call to the vendor is;
- any other host is resolved here and every address it resolves to must be public (unless
  the operator set ALLOW_PRIVATE_UPSTREAMS); the request then goes to the checked address
  itself: the URL's host becomes the IP literal, while the `Host` header and the TLS server
  name (the `sni_hostname` extension, honoured by httpcore and by httpx-aiohttp, which also
  verifies the certificate against it) keep the name. Nothing resolves the name a second
  time, so a DNS answer that changes between the check and the connect (rebinding) cannot
  steer the request. Rewriting the URL rather than plugging a checking resolver into the
  aiohttp connector keeps the rule in one place that works over every transport the shared
  client may have (aiohttp in production, ASGI in tests).
- redirects are followed here, one checked hop at a time, never by the client.

`pinned_request` and `checked_address` are the same rules for any outgoing call to an
address a user or a vendor chose: the webhooks (`webhooks/`) check an endpoint's URL with
them when it is registered and again on every delivery (DNS may have changed since).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from image_router.providers.errors import UpstreamProtocolError

#: Resolves (host, port) to the IP addresses a connection would use.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

MAX_OUTPUT_BYTES = 512 * 1024 * 1024
MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's answer, as the connection would get it."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def is_public(address: IpAddress) -> bool:
    """Whether `address` is reachable on the public internet (not loopback, private,
    link-local, shared, multicast or reserved), looking through IPv6 forms of IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not address.is_multicast


def _refused(message: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(message, provider="gateway")


@dataclass(frozen=True)
class OutputFetcher:
    """Downloads vendor outputs under the rules above. Raises `UpstreamProtocolError`."""

    http: httpx.AsyncClient
    resolve: Resolver = system_resolver
    allow_private: bool = False
    max_bytes: int = MAX_OUTPUT_BYTES

    async def fetch(self, url: str, *, vendor_base_url: str | None) -> bytes:
        """The body of `url`, a 200 after at most MAX_REDIRECTS checked redirects."""
        trusted = host_of(vendor_base_url) if vendor_base_url else None
        try:
            current = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise _refused("the output URL is not a valid URL") from exc
        for _ in range(MAX_REDIRECTS + 1):
            request = await self._request_for(current, trusted)
            try:
                response = await self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _refused(f"could not download the output: {type(exc).__name__}") from exc
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    try:
                        current = current.join(location)
                    except httpx.InvalidURL as exc:
                        raise _refused("the output redirected to an invalid URL") from exc
                    continue
                if response.status_code != 200:
                    raise UpstreamProtocolError(
                        f"could not download the output ({response.status_code})",
                        provider="gateway",
                        status=response.status_code,
                    )
                return await self._read(response)
            finally:
                await response.aclose()
        raise _refused(f"the output redirected more than {MAX_REDIRECTS} times")

    async def _request_for(self, url: httpx.URL, trusted: str | None) -> httpx.Request:
        if trusted and host_of(str(url)) == trusted and url.scheme in ("http", "https"):
            return self.http.build_request("GET", url)
        return await pinned_request(
            self.http, "GET", url, resolve=self.resolve, allow_private=self.allow_private
        )

    async def _read(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise _refused("the output is too large")
        chunks = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise _refused("the output is too large")
                chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise _refused(f"could not download the output: {type(exc).__name__}") from exc
        return b"".join(chunks)


async def pinned_request(
    http: httpx.AsyncClient,
    method: str,
    url: httpx.URL,
    *,
    resolve: Resolver,
    allow_private: bool,
    what: str = "output",
    **kwargs: Any,
) -> httpx.Request:
    """A request to `url` under the rules above, sent to the checked address itself (the
    name kept in `Host` and for TLS). `what` names the URL in refusals ("output",
    "webhook"); raises `UpstreamProtocolError`. Also used for outgoing webhooks."""
    if url.scheme not in ("http", "https"):
        raise _refused(f"the {what} URL's scheme '{url.scheme}' is not http(s)")
    host = host_of(str(url))
    if not host:
        raise _refused(f"the {what} URL has no host")
    https = url.scheme == "https"
    address = await checked_address(
        host,
        url.port or (443 if https else 80),
        resolve=resolve,
        allow_private=allow_private,
        what=what,
    )
    extensions = {"sni_hostname": host} if https else {}
    headers = {**kwargs.pop("headers", {}), "Host": url.netloc.decode("ascii")}
    return http.build_request(
        method,
        url.copy_with(host=str(address)),
        headers=headers,
        extensions=extensions,
        **kwargs,
    )


async def checked_address(
    host: str, port: int, *, resolve: Resolver, allow_private: bool, what: str = "output"
) -> IpAddress:
    """The address a connection to `host` goes to: refused (`UpstreamProtocolError`) when
    it does not resolve, or when any answer is not public and `allow_private` is off."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            answer = await resolve(host, port)
        except OSError as exc:
            raise _refused(f"could not resolve the {what} host {host}") from exc
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answer]
    if not addresses:
        raise _refused(f"could not resolve the {what} host {host}")
    if not allow_private:
        # One private answer is enough to refuse: which one a connection would use is
        # not ours to predict, and a name mixing both is not a CDN.
        private = [a for a in addresses if not is_public(a)]
        if private:
            raise _refused(f"the {what} URL's host {host} is not a public address ({private[0]})")
    return addresses[0]


def host_of(url: str) -> str:
    """The URL's host as the network sees it: lower-case ASCII (IDNA), no brackets."""
    try:
        return httpx.URL(url).raw_host.decode("ascii").lower().strip("[]")
    except httpx.InvalidURL:
        return ""
