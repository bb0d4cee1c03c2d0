"""The vendor call's short lane: a plain JSON request straight through aiohttp.

Every vendor call goes through an `httpx.AsyncClient` (the adapters' API, and what the
tests' mock transports plug into) whose transport is aiohttp's. For the call every
generation makes, a JSON POST answered with a buffered body, httpx's own layers — request
building, header and URL merging, cookie extraction, the auth and redirect flows, the
streamed body — cost more CPU than the HTTP exchange itself (issue #12's profile: 14 % of
a generation's CPU in `AsyncClient.request`, of which aiohttp's part was a third). This
lane sends the same request on the same aiohttp session (the same connection pool and
limits, the client's own timeouts) and hands the adapter an `httpx.Response` built from
the buffered answer, so adapters and error handling see exactly what they saw before.

It is used only when the client's transport is the aiohttp one; any other transport (a
test's mock) keeps the full httpx path. Multipart uploads always take the full path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

# aiohttp decompresses the body itself here; the headers that describe the compressed
# body would make httpx decode it a second time.
_DROPPED = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_REQUESTS_KEPT = 256


class DirectLane:
    """JSON requests on the aiohttp session under an httpx client (see the module)."""

    def __init__(self, transport: AiohttpTransport, timeout: httpx.Timeout) -> None:
        self._transport = transport
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool
        )
        # The `request` each answer carries, by method and URL: building one parses the URL
        # again (a few per cent of a generation's CPU), and nothing ever changes it.
        self._requests: dict[tuple[str, str], httpx.Request] = {}

    @classmethod
    def of(cls, http: httpx.AsyncClient) -> DirectLane | None:
        """The lane under `http`, or None when its transport is not aiohttp's."""
        transport = getattr(http, "_transport", None)
        if not isinstance(transport, AiohttpTransport) or getattr(http, "_mounts", None):
            return None
        return cls(transport, http.timeout)

    def _session(self) -> aiohttp.ClientSession:
        # The transport creates its session lazily, on its first request; share that one.
        transport = self._transport
        if not isinstance(transport.client, aiohttp.ClientSession):
            transport.client = transport.get_client()
        return transport.client

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str], json: Any = None
    ) -> httpx.Response:
        """Send `json` (when given) with `headers`; the whole answer, buffered."""
        sent = dict(headers)
        body = None
        if json is not None:
            body = orjson.dumps(json)
            sent.setdefault("Content-Type", "application/json")
        with map_aiohttp_exceptions():  # the same httpx errors the transport raises
            async with self._session().request(
                method,
                url,
                headers=sent,
                data=body,
                allow_redirects=False,
                timeout=self._timeout,
            ) as answer:
                content = await answer.read()
        return httpx.Response(
            answer.status,
            headers=[
                (name, value)
                for name, value in answer.raw_headers
                if name.decode("latin-1").lower() not in _DROPPED
            ],
            content=content,
            request=self._request_of(method, url),
        )

    def _request_of(self, method: str, url: str) -> httpx.Request:
        request = self._requests.get((method, url))
        if request is None:
            if len(self._requests) >= _REQUESTS_KEPT:  # URLs with a job id in them: bounded
                self._requests.clear()
            request = self._requests[(method, url)] = httpx.Request(method, url)
        return request
