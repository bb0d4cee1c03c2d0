"""What the website needs beyond the gateway's resources, built once per process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.templating import Jinja2Templates

from image_router.account.mailer import Mailer, build_mailer
from image_router.config import Settings
from image_router.limits.rates import Decision, Rate, WindowCounter, memory_counter, redis_counter

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"


@dataclass
class WebState:
    templates: Jinja2Templates
    mailer: Mailer
    throttle: WindowCounter
    throttle_rate: Rate

    async def hit(self, action: str, identity: str) -> Decision | None:
        """Count one attempt at `action` (sign-in, sign-up, reset) by `identity`."""
        return await self.throttle.hit(f"web-{action}", identity, self.throttle_rate)

    async def close(self) -> None:
        await self.throttle.close()


def build_web_state(settings: Settings) -> WebState:
    # Shared through Redis when configured, so several workers count the same attempts.
    counter = (
        redis_counter(settings.redis_url, settings.redis_namespace)
        if settings.redis_url
        else memory_counter()
    )
    return WebState(
        templates=Jinja2Templates(directory=TEMPLATES_DIR),
        mailer=build_mailer(settings.smtp_url, settings.smtp_from),
        throttle=counter,
        throttle_rate=Rate.parse(settings.signin_throttle),
    )
