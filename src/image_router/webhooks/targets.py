"""Which URLs a webhook may be sent to: the guard built for vendor output URLs
(`providers/output_fetch.py`), with the same switch (ALLOW_PRIVATE_UPSTREAMS).

An endpoint's URL is checked when it is registered (a clear 400) and again on every
delivery, since what its name resolves to may have changed (DNS rebinding): the request
then goes to the checked address itself. Redirects are not followed: a 3xx is a failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from image_router.errors import InvalidRequest
from image_router.providers.errors import UpstreamProtocolError
from image_router.providers.output_fetch import (
    Resolver,
    checked_address,
    host_of,
    pinned_request,
    system_resolver,
)


@dataclass(frozen=True)
class UrlGuard:
    resolve: Resolver = system_resolver
    allow_private: bool = False

    async def check(self, url: str, *, param: str = "url") -> None:
        """Refuse (400, naming `param`) a URL that is not http(s) or whose host is not a
        public address (unless private ones are allowed)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise InvalidRequest(f"The webhook URL is not a valid URL: {exc}", param=param) from exc
        if parsed.scheme not in ("http", "https") or not host_of(url):
            raise InvalidRequest("The webhook URL must be an http:// or https:// URL", param=param)
        if parsed.userinfo:
            raise InvalidRequest(
                "The webhook URL must not contain a user name or password", param=param
            )
        try:
            await checked_address(
                host_of(url),
                parsed.port or (443 if parsed.scheme == "https" else 80),
                resolve=self.resolve,
                allow_private=self.allow_private,
                what="webhook",
            )
        except UpstreamProtocolError as exc:
            raise InvalidRequest(
                f"The webhook URL cannot be used: {exc.message}. Webhooks are sent to public "
                "addresses only (the operator may allow private ones).",
                param=param,
                code="webhook_url_refused",
            ) from exc

    async def request(self, http: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Request:
        """The POST to `url`, pinned to its checked address; `UpstreamProtocolError` when
        the address is refused now."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise UpstreamProtocolError("the webhook URL is not valid", provider="webhook") from exc
        return await pinned_request(
            http,
            "POST",
            parsed,
            resolve=self.resolve,
            allow_private=self.allow_private,
            what="webhook",
            **kwargs,
        )
