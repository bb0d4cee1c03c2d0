"""The composition root: build every adapter from settings, once per process.

`build_resources` is called by the app's lifespan and by the CLI. Tests pass an
`http_transport` so every vendor call goes to in-process fakes; nothing else is patched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from httpx_aiohttp import AiohttpTransport
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.clerk import (
    ClerkAuth,
    ClerkBackend,
    ClerkVerifier,
    csrf_key,
    webhook_verifier,
)
from image_router.account.personal_data import Vault
from image_router.catalog.spec import Catalog, load_catalog
from image_router.config import Settings, credential_field
from image_router.db.key_store import KeyStore
from image_router.db.session import make_engine
from image_router.kit.crypto import decode_key, load_or_create_key
from image_router.kit.money import usd_to_credits
from image_router.kit.networks import parse_network
from image_router.limits.bans import BanList, load_networks
from image_router.limits.client_ip import ClientIpPolicy
from image_router.limits.free_tier import FreeTier
from image_router.limits.guard import Limits, RatePolicy
from image_router.limits.rates import AccountScale, Rate, memory_counter, redis_counter
from image_router.payment.stripe_api import StripeGateway
from image_router.payment.topups import Payments, TopupPolicy
from image_router.providers import PROVIDERS
from image_router.providers.base import Provider
from image_router.providers.output_fetch import OutputFetcher
from image_router.routing.health import HealthPolicy, HealthStore, MemoryHealthStore
from image_router.routing.redis_health import RedisHealthStore
from image_router.storage.base import Store
from image_router.storage.local import LocalStore
from image_router.storage.s3 import S3Store

log = logging.getLogger(__name__)


@dataclass
class Resources:
    settings: Settings
    engine: AsyncEngine
    http: httpx.AsyncClient
    catalog: Catalog
    providers: Mapping[str, Provider]
    store: Store
    health: HealthStore
    limits: Limits
    vault: Vault  # seals personal data and prompts (`build_vault`)
    outputs: OutputFetcher  # downloads vendor output URLs (address-checked)
    disabled: Mapping[str, str] = field(default_factory=dict)
    payments: Payments | None = None  # None: PAYMENTS_PROVIDER=none
    clerk: ClerkAuth | None = None  # None: AUTH_PROVIDER=local

    @property
    def enabled(self) -> frozenset[str]:
        return frozenset(self.providers)

    async def close(self) -> None:
        await self.health.close()
        await self.limits.close()
        await self.http.aclose()
        await self.store.close()
        await self.vault.close()
        await self.engine.dispose()


def public_url(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> str:
    return (settings.public_url or f"http://{host}:{port}").rstrip("/")


def build_vault(settings: Settings) -> Vault:
    """The keys protecting personal data: from the settings, else key files in DATA_DIR.

    Several machines sharing one database must share these keys (set PII_KEK and
    BLIND_INDEX_KEY): a data key wrapped by another KEK does not open.
    """
    keys_dir = settings.data_dir / "keys"
    if settings.pii_kek is not None:
        kek = decode_key(settings.pii_kek.get_secret_value(), "PII_KEK")
    else:
        kek = load_or_create_key(settings.pii_kek_file or keys_dir / "pii-kek.key", "PII_KEK")
    if settings.blind_index_key is not None:
        index_key = decode_key(settings.blind_index_key.get_secret_value(), "BLIND_INDEX_KEY")
    else:
        index_key = load_or_create_key(keys_dir / "blind-index.key", "BLIND_INDEX_KEY")
    if index_key == kek:
        raise ValueError("BLIND_INDEX_KEY must differ from PII_KEK")
    keys_url = settings.resolved_data_keys_url()
    if keys_url == settings.resolved_database_url():
        raise ValueError("DATA_KEYS_URL must name another database than DATABASE_URL")
    if settings.data_keys_url is None:
        keys_dir.mkdir(parents=True, exist_ok=True)
    raw_previous = settings.pii_kek_previous.get_secret_value() if settings.pii_kek_previous else ""
    previous = tuple(
        decode_key(part, "PII_KEK_PREVIOUS") for part in raw_previous.split(",") if part.strip()
    )
    return Vault(kek, index_key, KeyStore(keys_url), previous)


def build_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    # Generation calls legitimately take minutes; the overall deadline is enforced by the
    # generation service, so the read timeout here only guards against a dead socket.
    timeout = httpx.Timeout(
        connect=settings.upstream_connect_timeout_s,
        read=max(settings.image_deadline_s, settings.video_deadline_s),
        write=60.0,
        pool=60.0,
    )
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=min(512, settings.upstream_max_connections),
    )
    if transport is None:
        # httpx's own HTTP/1.1 stack (httpcore + h11, pure Python) was the largest single
        # CPU cost of a generation; aiohttp's C parser under the same httpx API halves it.
        transport = AiohttpTransport(limits=limits)
    return httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport)


def provider_problem(settings: Settings, provider_id: str) -> str | None:
    """Why a provider cannot be used with these settings, or None when it can."""
    cls = PROVIDERS.get(provider_id)
    if cls is None:
        return "unknown provider (not implemented)"
    if provider_id == "test" and not settings.enable_test_models:
        return "test models disabled (ENABLE_TEST_MODELS=false)"
    if cls.needs_credential and not settings.credential(provider_id):
        return f"no key configured ({credential_field(provider_id).upper()})"
    return None


def build_providers(
    settings: Settings, http: httpx.AsyncClient
) -> tuple[dict[str, Provider], dict[str, str]]:
    """Instantiate every provider that is usable; say why the others are not."""
    enabled: dict[str, Provider] = {}
    disabled: dict[str, str] = {}
    for provider_id, cls in PROVIDERS.items():
        problem = provider_problem(settings, provider_id)
        if problem is not None:
            disabled[provider_id] = problem
            continue
        enabled[provider_id] = cls(
            http,
            credential=settings.credential(provider_id),
            base_url=settings.base_url(provider_id),
            poll_interval=settings.poll_interval_s,
            extra=settings.provider_extra(provider_id),
        )
    return enabled, disabled


def build_store(settings: Settings, url_prefix: str) -> Store:
    if settings.storage_url and settings.storage_url.startswith("s3://"):
        return S3Store.from_url(
            settings.storage_url,
            endpoint_url=settings.s3_endpoint,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=(
                settings.s3_secret_access_key.get_secret_value()
                if settings.s3_secret_access_key
                else None
            ),
            public_base_url=settings.s3_custom_public_url,
        )
    root = settings.data_dir / "outputs"
    if settings.storage_url:
        root = Path(settings.storage_url.removeprefix("file://"))
    return LocalStore(root, f"{url_prefix}/files")


def build_health(settings: Settings) -> HealthStore:
    """Route health in Redis when configured (shared by all workers), else in process."""
    policy = HealthPolicy(
        failure_threshold=settings.circuit_failure_threshold, cooldown_s=settings.circuit_cooldown_s
    )
    if settings.redis_url:
        return RedisHealthStore(
            Redis.from_url(settings.redis_url), policy, namespace=settings.redis_namespace
        )
    return MemoryHealthStore(policy)


def build_limits(settings: Settings, engine: AsyncEngine) -> Limits:
    """Rate limits in Redis when configured (shared by all workers), else in process."""
    rates = RatePolicy(
        general=Rate.parse(settings.rate_limit_general),
        generation_ip=Rate.parse(settings.rate_limit_generation_ip),
        image=AccountScale(
            usd_to_credits(settings.rate_limit_account_image_step_usd),
            settings.rate_limit_account_image_min,
            settings.rate_limit_account_image_max,
        ),
        video=AccountScale(
            usd_to_credits(settings.rate_limit_account_video_step_usd),
            settings.rate_limit_account_video_min,
            settings.rate_limit_account_video_max,
        ),
    )
    return Limits(
        rates=rates if settings.rate_limits_enabled else None,
        counter=(
            redis_counter(settings.redis_url, settings.redis_namespace)
            if settings.redis_url and settings.rate_limits_enabled
            else memory_counter()
        ),
        bans=BanList(
            [parse_network(n) for n in settings.banned_networks],
            lambda: load_networks(engine),
            refresh_s=settings.bans_refresh_s,
        ),
        free_tier=FreeTier(
            engine,
            funded_daily=settings.free_daily_limit_funded,
            unfunded_daily=settings.free_daily_limit_unfunded,
            generate_url=settings.generate_url,
            pricing_url=settings.pricing_url,
        ),
        client_ip=ClientIpPolicy(settings.trusted_proxy_count, settings.client_ip_header),
    )


def build_payments(settings: Settings, http: httpx.AsyncClient) -> Payments | None:
    """Stripe top-ups when configured; None means the operator grants credits by CLI."""
    if settings.payments_provider != "stripe" or settings.stripe_secret_key is None:
        return None
    gateway = StripeGateway(
        http,
        secret_key=settings.stripe_secret_key.get_secret_value(),
        webhook_secrets=settings.stripe_webhook_secrets(),
        api_base=settings.stripe_api_base,
    )
    policy = TopupPolicy(
        currency=settings.billing_currency,
        min_cents=settings.topup_min_cents,
        max_cents=settings.topup_max_cents,
        site_url=(settings.site_url or public_url(settings)).rstrip("/"),
    )
    return Payments(gateway, policy)


def build_clerk(settings: Settings, http: httpx.AsyncClient, vault: Vault) -> ClerkAuth | None:
    """Clerk session verification, Backend API and webhook secret (AUTH_PROVIDER=clerk)."""
    if settings.auth_provider != "clerk" or settings.clerk_issuer is None:
        return None
    secret = settings.clerk_secret_key.get_secret_value() if settings.clerk_secret_key else None
    jwks_url = None if settings.clerk_jwt_key else settings.clerk_jwks_url
    # The Backend API's JWKS (CLERK_API_URL/v1/jwks) needs the secret key; the Frontend
    # API's /.well-known/jwks.json is public and gets no credentials.
    on_backend = jwks_url == settings.clerk_api_url.rstrip("/") + "/v1/jwks"
    verifier = ClerkVerifier(
        issuer=settings.clerk_issuer,
        authorized_parties=settings.clerk_authorized_parties,
        jwt_key=settings.clerk_jwt_key,
        jwks_url=jwks_url,
        http=http,
        jwks_headers={"Authorization": f"Bearer {secret}"} if secret and on_backend else None,
        jwks_cache_s=settings.clerk_jwks_cache_s,
    )
    signing = settings.clerk_webhook_signing_secret
    return ClerkAuth(
        verifier=verifier,
        backend=(
            ClerkBackend(http, secret_key=secret, api_url=settings.clerk_api_url)
            if secret
            else None
        ),
        webhook=webhook_verifier(signing.get_secret_value() if signing else None),
        csrf_key=csrf_key(vault.index_key),
        sign_in_url=settings.clerk_sign_in_url,
    )


def build_resources(
    settings: Settings,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    url_prefix: str | None = None,
) -> Resources:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    http = build_http_client(settings, http_transport)
    providers, disabled = build_providers(settings, http)
    catalog = load_catalog(
        settings.catalog_paths,
        image_inputs={pid: cls.image_inputs for pid, cls in PROVIDERS.items()},
    )
    engine = make_engine(settings.resolved_database_url())
    vault = build_vault(settings)
    return Resources(
        settings=settings,
        engine=engine,
        http=http,
        catalog=catalog,
        providers=providers,
        store=build_store(settings, url_prefix or public_url(settings)),
        health=build_health(settings),
        limits=build_limits(settings, engine),
        disabled=disabled,
        payments=build_payments(settings, http),
        vault=vault,
        outputs=OutputFetcher(http, allow_private=settings.allow_private_upstreams),
        clerk=build_clerk(settings, http, vault),
    )
