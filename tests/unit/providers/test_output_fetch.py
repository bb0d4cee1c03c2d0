"""OutputFetcher: vendor output URLs are fetched only from public addresses (or the vendor's
own configured host), at the address that was checked, following redirects hop by hop.

DNS is simulated by injecting the resolver; the network by an `httpx.MockTransport` that
records every request that would have left the machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest

from image_router.providers.errors import UpstreamProtocolError
from image_router.providers.output_fetch import OutputFetcher

PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)
VENDOR = "http://vendor.internal:9000/v1"

# What the simulated DNS answers.
DNS = {
    "cdn.example": ["93.184.216.34"],
    "other-cdn.example": ["151.101.1.1"],
    "rebind.example": ["10.0.0.7"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],
    "metadata.example": ["169.254.169.254"],
    "v6-loopback.example": ["::1"],
    "mapped.example": ["::ffff:192.168.1.1"],
}


class Network:
    """Answers by path; records every request sent."""

    def __init__(self, answers: dict[str, httpx.Response]) -> None:
        self.answers = answers
        self.sent: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self.answers.get(request.url.path, httpx.Response(404))


class Dns:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        if host not in DNS:
            raise OSError(f"no such host {host}")
        return DNS[host]


def fetcher(network: Network, dns: Dns, **kwargs: object) -> OutputFetcher:
    http = httpx.AsyncClient(transport=httpx.MockTransport(network.handler))
    return OutputFetcher(http, resolve=dns, **kwargs)  # type: ignore[arg-type]


def redirect(to: str, status: int = 302) -> httpx.Response:
    return httpx.Response(status, headers={"Location": to})


async def test_a_public_host_is_fetched_at_the_checked_address_with_its_name_kept() -> None:
    network, dns = Network({"/a.png": httpx.Response(200, content=PNG)}), Dns()
    data = await fetcher(network, dns).fetch("https://cdn.example/a.png", vendor_base_url=VENDOR)
    assert data == PNG
    [sent] = network.sent
    # Connected to the address that was checked, never to a name resolved again later.
    assert sent.url.host == "93.184.216.34"
    assert sent.url.scheme == "https"
    assert sent.headers["host"] == "cdn.example"
    assert sent.extensions["sni_hostname"] == "cdn.example"
    assert dns.asked == ["cdn.example"]


async def test_the_host_header_keeps_a_non_default_port() -> None:
    network, dns = Network({"/a.png": httpx.Response(200, content=PNG)}), Dns()
    await fetcher(network, dns).fetch("http://cdn.example:8080/a.png", vendor_base_url=None)
    [sent] = network.sent
    assert (sent.url.host, sent.url.port) == ("93.184.216.34", 8080)
    assert sent.headers["host"] == "cdn.example:8080"
    assert "sni_hostname" not in sent.extensions


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2/openai/files/x.png",
        "http://10.1.2.3/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8080/x.png",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://0.0.0.0/x.png",
        "http://100.64.0.1/x.png",
        "http://rebind.example/x.png",
        "http://metadata.example/x.png",
        "http://mixed.example/x.png",
        "http://v6-loopback.example/x.png",
        "http://mapped.example/x.png",
    ],
)
async def test_private_addresses_are_refused_and_never_contacted(url: str) -> None:
    network, dns = Network({}), Dns()
    with pytest.raises(UpstreamProtocolError, match="not a public address"):
        await fetcher(network, dns).fetch(url, vendor_base_url=VENDOR)
    assert network.sent == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://cdn.example/a.png", "gopher://cdn.example/"]
)
async def test_only_http_and_https_are_fetched(url: str) -> None:
    network, dns = Network({}), Dns()
    with pytest.raises(UpstreamProtocolError, match="not http"):
        await fetcher(network, dns).fetch(url, vendor_base_url=VENDOR)
    assert network.sent == []


async def test_an_unresolvable_host_is_refused() -> None:
    network, dns = Network({}), Dns()
    with pytest.raises(UpstreamProtocolError, match="could not resolve"):
        await fetcher(network, dns).fetch("http://nowhere.example/a", vendor_base_url=VENDOR)
    assert network.sent == []


async def test_the_vendors_own_host_is_trusted_without_a_lookup() -> None:
    # The vendor's base URL is the operator's choice: a private host there is intended.
    network, dns = Network({"/files/a.png": httpx.Response(200, content=PNG)}), Dns()
    data = await fetcher(network, dns).fetch(
        "http://VENDOR.internal:9000/files/a.png", vendor_base_url=VENDOR
    )
    assert data == PNG
    assert dns.asked == []
    assert network.sent[0].url.host == "vendor.internal"


async def test_another_vendors_private_host_is_not_trusted() -> None:
    network, dns = Network({}), Dns()
    with pytest.raises(UpstreamProtocolError, match="not a public address"):
        await fetcher(network, dns).fetch(
            "http://127.0.0.1:9000/files/a.png", vendor_base_url="http://127.0.0.2:9000"
        )
    assert network.sent == []


@pytest.mark.parametrize(
    "target",
    [
        "http://169.254.169.254/latest/meta-data/iam/",
        "http://rebind.example/x.png",
        "http://[::1]/x.png",
        "file:///etc/passwd",
    ],
)
async def test_a_redirect_into_private_space_is_refused(target: str) -> None:
    network, dns = Network({"/a.png": redirect(target)}), Dns()
    with pytest.raises(UpstreamProtocolError):
        await fetcher(network, dns).fetch("https://cdn.example/a.png", vendor_base_url=VENDOR)
    # The public hop was fetched; the private one never was.
    assert [r.url.host for r in network.sent] == ["93.184.216.34"]


async def test_a_redirect_from_the_vendors_host_is_checked_too() -> None:
    network, dns = Network({"/files/a.png": redirect("http://10.9.9.9/steal")}), Dns()
    with pytest.raises(UpstreamProtocolError, match="not a public address"):
        await fetcher(network, dns).fetch(
            "http://vendor.internal:9000/files/a.png", vendor_base_url=VENDOR
        )
    assert len(network.sent) == 1


async def test_public_redirects_are_followed_hop_by_hop() -> None:
    network = Network(
        {
            "/a.png": redirect("https://other-cdn.example/b.png", 301),
            "/b.png": redirect("/c.png", 307),
            "/c.png": httpx.Response(200, content=PNG),
        }
    )
    dns = Dns()
    data = await fetcher(network, dns).fetch("https://cdn.example/a.png", vendor_base_url=None)
    assert data == PNG
    assert [(r.url.host, r.headers["host"]) for r in network.sent] == [
        ("93.184.216.34", "cdn.example"),
        ("151.101.1.1", "other-cdn.example"),
        ("151.101.1.1", "other-cdn.example"),
    ]


async def test_endless_redirects_end() -> None:
    network, dns = Network({"/a.png": redirect("/a.png")}), Dns()
    with pytest.raises(UpstreamProtocolError, match="redirected more than"):
        await fetcher(network, dns).fetch("https://cdn.example/a.png", vendor_base_url=None)
    assert len(network.sent) == 6


async def test_private_addresses_are_fetched_when_the_operator_allows_them() -> None:
    network, dns = Network({"/x.png": httpx.Response(200, content=PNG)}), Dns()
    data = await fetcher(network, dns, allow_private=True).fetch(
        "http://rebind.example/x.png", vendor_base_url=VENDOR
    )
    assert data == PNG
    assert network.sent[0].url.host == "10.0.0.7"


async def test_the_size_cap_holds_with_and_without_a_content_length() -> None:
    network = Network(
        {
            "/declared.png": httpx.Response(200, content=PNG * 4),
            "/streamed.png": httpx.Response(200, stream=httpx.ByteStream(PNG * 4)),
        }
    )
    small = fetcher(network, Dns(), max_bytes=len(PNG) * 2)
    for path in ("/declared.png", "/streamed.png"):
        with pytest.raises(UpstreamProtocolError, match="too large"):
            await small.fetch(f"https://cdn.example{path}", vendor_base_url=None)


async def test_a_failed_download_is_a_protocol_error_with_the_status() -> None:
    network, dns = Network({}), Dns()
    with pytest.raises(UpstreamProtocolError) as caught:
        await fetcher(network, dns).fetch("https://cdn.example/gone.png", vendor_base_url=None)
    assert caught.value.status == 404
