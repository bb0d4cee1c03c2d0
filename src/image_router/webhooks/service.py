"""What the API and the website do with an account's webhooks, in one place.

`Webhooks` is built once by the composition root (`resources.build_webhooks`); its `events`
is the generation's collaborator and its `runner` the delivery loop of this process.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.personal_data import Vault
from image_router.db.session import unit_of_work
from image_router.errors import InvalidRequest
from image_router.providers.output_fetch import Resolver
from image_router.webhooks import endpoints
from image_router.webhooks.delivery import DeliveryRunner
from image_router.webhooks.endpoints import MAX_URL, DeliveryView, EndpointView
from image_router.webhooks.events import WebhookEvents
from image_router.webhooks.notices import DisabledNotice
from image_router.webhooks.policy import WebhookPolicy
from image_router.webhooks.targets import UrlGuard


@dataclass(frozen=True)
class Webhooks:
    engine: AsyncEngine
    vault: Vault
    policy: WebhookPolicy
    events: WebhookEvents
    runner: DeliveryRunner
    notice: DisabledNotice  # the `webhook_disabled` job's handler (the e-mail)

    @property
    def guard(self) -> UrlGuard:
        return self.events.guard

    def resolving_with(self, resolve: Resolver) -> Webhooks:
        """The same webhooks with another DNS resolver (tests point names at fakes)."""
        guard = replace(self.guard, resolve=resolve)
        events = replace(self.events, guard=guard)
        return replace(self, events=events, runner=replace(self.runner, guard=guard))

    async def register(
        self, account_id: str, url: object, description: object = None
    ) -> tuple[EndpointView, str]:
        """A new endpoint and its signing secret (shown this once); 400 for a URL that is
        not http(s) or not at a public address."""
        if not isinstance(url, str) or not url.strip() or len(url.strip()) > MAX_URL:
            raise InvalidRequest(
                f"url must be an http:// or https:// URL of at most {MAX_URL} characters",
                param="url",
            )
        url = url.strip()
        about = endpoints.parse_description(description)
        await self.guard.check(url)
        async with unit_of_work(self.engine) as conn:
            created = await endpoints.create_endpoint(
                conn,
                self.vault,
                account_id,
                url,
                about,
                max_endpoints=self.policy.max_endpoints,
            )
        self.events.forget(account_id)
        return created

    async def endpoints(self, account_id: str) -> list[EndpointView]:
        async with unit_of_work(self.engine) as conn:
            return await endpoints.list_endpoints(conn, account_id)

    async def delete(self, account_id: str, endpoint_id: str) -> None:
        async with unit_of_work(self.engine) as conn:
            await endpoints.delete_endpoint(conn, account_id, endpoint_id)
        self.events.forget(account_id)

    async def enable(self, account_id: str, endpoint_id: str) -> None:
        async with unit_of_work(self.engine) as conn:
            await endpoints.enable_endpoint(conn, account_id, endpoint_id)
        self.events.forget(account_id)

    async def deliveries(
        self, account_id: str, *, limit: int = 50, endpoint_id: str | None = None
    ) -> list[DeliveryView]:
        async with unit_of_work(self.engine) as conn:
            return await endpoints.list_deliveries(
                conn, account_id, limit=limit, endpoint_id=endpoint_id
            )

    async def resend(self, account_id: str, delivery_id: str) -> None:
        async with unit_of_work(self.engine) as conn:
            await endpoints.resend(
                conn, account_id, delivery_id, retry_window=self.policy.retry_window
            )

    async def request_secret(self, account_id: str) -> str:
        return await endpoints.request_secret(self.engine, self.vault, account_id)
