"""What the website needs beyond the gateway's resources, built once per process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.templating import Jinja2Templates

from image_router.account.mailer import Mailer, build_mailer
from image_router.config import Settings
from image_router.kit import crypto
from image_router.limits.rates import Decision, Rate, WindowCounter, memory_counter, redis_counter

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"


@dataclass(frozen=True)
class ThrottleRates:
    """Attempts allowed per (e-mail, address) pair, per e-mail, per address."""

    pair: Rate
    email: Rate
    address: Rate


@dataclass
class WebState:
    templates: Jinja2Templates
    mailer: Mailer
    throttle: WindowCounter
    rates: ThrottleRates
    #: Keys the hash that stands for e-mails and addresses in the limiter's keys, so Redis
    #: (or a dump of it) holds neither in clear.
    identity_key: bytes
    #: PUBLIC_URL is https: cookies are Secure even when a proxy speaks plain HTTP to us.
    served_over_https: bool
    session_ttl_s: int
    #: What a page needs to load Clerk's browser script, which keeps `__session` fresh
    #: (Clerk session tokens live about a minute); None unless in Clerk mode.
    clerk_browser: dict[str, str] | None

    async def hit(self, action: str, identity: str) -> Decision | None:
        """Count one attempt at `action` by an opaque `identity` (an account id)."""
        return await self.throttle.hit(f"web-{action}", identity, self.rates.pair)

    async def hit_address(self, action: str, ip: str) -> Decision | None:
        """Count one attempt at `action` (a sign-up) from the address `ip`."""
        return await self.throttle.hit(f"web-{action}", self._opaque("ip", ip), self.rates.pair)

    async def hit_credentials(self, action: str, email: str, ip: str) -> Decision | None:
        """Count one attempt at `action` (sign-in, reset) for `email` from `ip`.

        Three counters: the pair, the e-mail from any address (one account guessed at from
        many addresses), the address whatever the e-mail (one address trying many
        accounts). The answer is the refusal that lasts longest, else the pair's count;
        None when the limiter's storage is unreachable.
        """
        email_id = self._opaque("email", email.strip().lower())
        ip_id = self._opaque("ip", ip)
        decisions = [
            await self.throttle.hit(f"web-{action}", f"{email_id}|{ip_id}", self.rates.pair),
            await self.throttle.hit(f"web-{action}-email", email_id, self.rates.email),
            await self.throttle.hit(f"web-{action}-ip", ip_id, self.rates.address),
        ]
        refused = [d for d in decisions if d is not None and not d.allowed]
        if refused:
            return max(refused, key=lambda d: d.reset_s)
        return next((d for d in decisions if d is not None), None)

    def _opaque(self, kind: str, value: str) -> str:
        return crypto.blind_index(self.identity_key, f"throttle-{kind}:{value}")[:32]

    async def close(self) -> None:
        await self.throttle.close()


def build_web_state(settings: Settings, identity_key: bytes) -> WebState:
    # Shared through Redis when configured, so several workers count the same attempts.
    counter = (
        redis_counter(settings.storage.redis_url, settings.storage.redis_namespace)
        if settings.storage.redis_url
        else memory_counter()
    )
    return WebState(
        templates=Jinja2Templates(directory=TEMPLATES_DIR),
        mailer=build_mailer(settings.mail.smtp_url, settings.mail.smtp_from),
        throttle=counter,
        rates=ThrottleRates(
            pair=Rate.parse(settings.auth.signin_throttle),
            email=Rate.parse(settings.auth.signin_throttle_email),
            address=Rate.parse(settings.auth.signin_throttle_ip),
        ),
        identity_key=identity_key,
        served_over_https=(settings.serving.public_url or "").startswith("https://"),
        session_ttl_s=int(settings.auth.session_ttl_s),
        clerk_browser=_clerk_browser(settings),
    )


def _clerk_browser(settings: Settings) -> dict[str, str] | None:
    if settings.auth.auth_provider != "clerk" or not settings.clerk.clerk_publishable_key:
        return None
    return {
        "publishable_key": settings.clerk.clerk_publishable_key,
        "frontend_api": (settings.clerk.clerk_issuer or "").rstrip("/"),
    }
