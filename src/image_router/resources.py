"""The composition root: build every adapter from settings, once per process.

`build_resources` is called by the app's lifespan and by the CLI. Tests pass an
`http_transport` so every vendor call goes to in-process fakes; nothing else is patched.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from httpx_aiohttp import AiohttpTransport
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

from image_router.account.clerk import (
    ClerkAuth,
    ClerkBackend,
    ClerkVerifier,
    csrf_key,
    webhook_verifier,
)
from image_router.account.key_cache import KeyCache
from image_router.account.key_changes import ChangeFile, KeyChanges, RedisChannel
from image_router.account.mailer import Mailer, build_mailer
from image_router.account.personal_data import Vault
from image_router.catalog.loader import load_catalog
from image_router.catalog.spec import Catalog
from image_router.config import Settings
from image_router.db.key_store import KeyStore
from image_router.db.session import make_engine
from image_router.generation.durability import NO_DURABILITY, Durability
from image_router.generation.events import NO_EVENTS, GenerationEvents
from image_router.generation.policy import GenerationPolicy
from image_router.generation.service import Generator
from image_router.idempotency.store import Idempotency, IdempotencyPolicy
from image_router.jobs.resumer import JobResumer
from image_router.jobs.service import Jobs, JobsPolicy
from image_router.kit.crypto import decode_key, load_or_create_key
from image_router.kit.drain import Drain
from image_router.kit.link import Link
from image_router.kit.money import usd_to_credits
from image_router.kit.networks import parse_network
from image_router.kit.redis_connections import connection_class
from image_router.legal.consent_cookie import CONSENT_MAX_AGE
from image_router.legal.facts import RetentionPeriods, retention_rows, vendor_names
from image_router.legal.render import PolicyFacts
from image_router.limits.bans import BanList, load_networks
from image_router.limits.client_ip import ClientIpPolicy
from image_router.limits.free_tier import FreeTier
from image_router.limits.guard import Limits, RatePolicy
from image_router.limits.human_check import HumanCheck, derive_key
from image_router.limits.rates import AccountScale, Rate, memory_counter, redis_counter
from image_router.observability import metrics
from image_router.payment.stripe_api import StripeGateway
from image_router.payment.topups import Payments, TopupPolicy
from image_router.privacy import erasure, export, policy_mail
from image_router.privacy.erasure import ErasureRunner
from image_router.privacy.export_runner import ExportPolicy, ExportRunner
from image_router.privacy.jobs import JobRunner
from image_router.privacy.retention import Retention, RetentionPolicy
from image_router.providers import PROVIDERS
from image_router.providers.contract import Provider
from image_router.providers.output_fetch import OutputFetcher
from image_router.routing.fallback_health import FallbackHealthStore
from image_router.routing.health import HealthPolicy, HealthStore, MemoryHealthStore
from image_router.routing.redis_health import RedisHealthStore
from image_router.storage.base import Store
from image_router.storage.local import LocalStore
from image_router.storage.s3 import S3Store
from image_router.webhooks import notices as webhook_notices
from image_router.webhooks.delivery import DeliveryRunner
from image_router.webhooks.events import WebhookEvents
from image_router.webhooks.notices import DisabledNotice
from image_router.webhooks.policy import WebhookPolicy
from image_router.webhooks.service import Webhooks
from image_router.webhooks.targets import UrlGuard

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
    generator: Generator  # the generation use case, sharing the adapters above
    erasure: ErasureRunner  # privacy: erasures (the job, `users delete --now`)
    export: ExportRunner  # privacy: data exports (built now, the job, downloads)
    retention: Retention  # privacy: the retention purge
    jobs: JobRunner  # the durable job queue, with every kind this process runs
    webhooks: Webhooks  # outgoing webhooks: endpoints, the events, the delivery runner
    idempotency: Idempotency  # Idempotency-Key claims and stored answers
    disabled: Mapping[str, str] = field(default_factory=dict)
    payments: Payments | None = None  # None: PAYMENTS_PROVIDER=none
    clerk: ClerkAuth | None = None  # None: AUTH_PROVIDER=local
    web_token_secret: str = ""  # signs website tokens: JWT_SECRET or a key file (never "")
    human_check: HumanCheck | None = None  # None: HUMAN_CHECK=off
    # Authenticated API keys for AUTH_CACHE_TTL_S (0: off), and how changes reach the
    # other processes (`account/key_changes.py`); `KeyChanges.listen` runs in the lifespan.
    key_changes: KeyChanges = field(default_factory=lambda: KeyChanges(KeyCache(0)))
    # The graceful stop (SIGTERM): `/ready` turns 503, hooks in `drain.on_drain` run, and
    # the generations still running after SHUTDOWN_DRAIN_S are cut off (`kit/drain.py`).
    drain: Drain = field(default_factory=Drain)
    # Async and durable generations (`Prefer: respond-async`, vendor jobs resumed after a
    # restart): the generator's durability and the job API's use case (jobs/).
    generation_jobs: Jobs | None = None
    # Their leases, the jobs of processes that died, and the hand-over on a stop.
    job_resumer: JobResumer | None = None
    # REDIS_URL: a client for `/ready`'s probe, and whether Redis answers (`kit/link.py`).
    redis: Redis | None = None
    redis_link: Link | None = None

    @property
    def enabled(self) -> frozenset[str]:
        return frozenset(self.providers)

    async def close(self) -> None:
        await self.key_changes.close()
        await self.health.close()
        await self.limits.close()
        await self.http.aclose()
        await self.store.close()
        await self.vault.close()
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()


def public_url(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> str:
    return (settings.serving.public_url or f"http://{host}:{port}").rstrip("/")


def own_link(configured: str | None, settings: Settings, path: str) -> str:
    """A page of this site that an error message names (`/pricing`, `/playground`): the
    operator's override, else PUBLIC_URL + path. A message needs an absolute URL and is
    written far from any request; `serve` always sets PUBLIC_URL (from the address it
    listens on when the operator did not)."""
    return configured or f"{public_url(settings)}{path}"


def build_vault(settings: Settings) -> Vault:
    """The keys protecting personal data: from the settings, else key files in DATA_DIR.

    Several machines sharing one database must share these keys (set PII_KEK and
    BLIND_INDEX_KEY): a data key wrapped by another KEK does not open.
    """
    keys_dir = settings.storage.data_dir / "keys"
    if settings.privacy.pii_kek is not None:
        kek = decode_key(settings.privacy.pii_kek.get_secret_value(), "PII_KEK")
    else:
        kek = load_or_create_key(
            settings.privacy.pii_kek_file or keys_dir / "pii-kek.key", "PII_KEK"
        )
    if settings.privacy.blind_index_key is not None:
        index_key = decode_key(
            settings.privacy.blind_index_key.get_secret_value(), "BLIND_INDEX_KEY"
        )
    else:
        index_key = load_or_create_key(keys_dir / "blind-index.key", "BLIND_INDEX_KEY")
    if index_key == kek:
        raise ValueError("BLIND_INDEX_KEY must differ from PII_KEK")
    keys_url = settings.storage.resolved_data_keys_url()
    if keys_url == settings.storage.resolved_database_url():
        raise ValueError("DATA_KEYS_URL must name another database than DATABASE_URL")
    if settings.storage.data_keys_url is None:
        keys_dir.mkdir(parents=True, exist_ok=True)
    raw_previous = (
        settings.privacy.pii_kek_previous.get_secret_value()
        if settings.privacy.pii_kek_previous
        else ""
    )
    previous = tuple(
        decode_key(part, "PII_KEK_PREVIOUS") for part in raw_previous.split(",") if part.strip()
    )
    key_store = KeyStore(
        keys_url,
        pool_size=settings.storage.db_pool_size,
        max_overflow=settings.storage.db_max_overflow,
    )
    return Vault(kek, index_key, key_store, previous)


def build_http_client(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    # Generation calls legitimately take minutes; the overall deadline is enforced by the
    # generation service, so the read timeout here only guards against a dead socket.
    timeout = httpx.Timeout(
        connect=settings.routing.upstream_connect_timeout_s,
        read=max(settings.generation.image_deadline_s, settings.generation.video_deadline_s),
        write=60.0,
        pool=60.0,
    )
    limits = httpx.Limits(
        max_connections=settings.routing.upstream_max_connections,
        max_keepalive_connections=min(512, settings.routing.upstream_max_connections),
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
    if provider_id == "test" and not settings.generation.enable_test_models:
        return "test models disabled (ENABLE_TEST_MODELS=false)"
    if cls.needs_credential and not settings.vendors.credential(cls):
        return f"no key configured ({cls.key_env})"
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
            credential=settings.vendors.credential(cls),
            base_url=settings.vendors.base_url(cls),
            poll_interval=settings.routing.poll_interval_s,
            extra=settings.vendors.extra(cls),
        )
    return enabled, disabled


def build_store(settings: Settings, url_prefix: str) -> Store:
    if settings.storage.storage_url and settings.storage.storage_url.startswith("s3://"):
        return S3Store.from_url(
            settings.storage.storage_url,
            endpoint_url=settings.storage.s3_endpoint,
            region=settings.storage.s3_region,
            access_key_id=settings.storage.s3_access_key_id,
            secret_access_key=(
                settings.storage.s3_secret_access_key.get_secret_value()
                if settings.storage.s3_secret_access_key
                else None
            ),
            public_base_url=settings.storage.s3_custom_public_url,
        )
    root = settings.storage.data_dir / "outputs"
    if settings.storage.storage_url:
        root = Path(settings.storage.storage_url.removeprefix("file://"))
    return LocalStore(root, f"{url_prefix}/files")


def build_health(settings: Settings, link: Link | None = None) -> HealthStore:
    """Route health in Redis when configured (shared by all workers), else in process;
    with a `link`, in process too while Redis is down."""
    policy = HealthPolicy(
        failure_threshold=settings.routing.circuit_failure_threshold,
        cooldown_s=settings.routing.circuit_cooldown_s,
    )
    if settings.storage.redis_url:
        shared = RedisHealthStore(
            redis_client(settings),
            policy,
            namespace=settings.storage.redis_namespace,
        )
        if link is None:
            return shared
        return FallbackHealthStore(shared, MemoryHealthStore(policy), link)
    return MemoryHealthStore(policy)


def redis_client(settings: Settings, *, blocking_s: float = 0.0) -> Redis:
    """A Redis client whose every call gives up after REDIS_TIMEOUT_S (plus `blocking_s`,
    the longest wait of a blocking command it sends): a dead Redis never hangs a request."""
    assert settings.storage.redis_url is not None
    timeout = settings.storage.redis_timeout_s
    return Redis.from_url(
        settings.storage.redis_url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout + blocking_s,
        health_check_interval=30,
        # One immediate retry on a fresh connection (a pooled one may have died with a
        # Redis restart), not redis-py's three with back-off (seconds per call while down).
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
        connection_class=connection_class(settings.storage.redis_url),
    )


def redis_link() -> Link:
    """The shared state of this process's Redis clients: one WARNING when Redis goes, one
    INFO when it is back, and the `image_router_redis_up` gauge."""
    link = Link("Redis")
    metrics.set_redis_up(True)
    link.on_change.append(metrics.set_redis_up)
    return link


def build_web_token_secret(settings: Settings) -> str:
    """JWT_SECRET, else a key created on first start under DATA_DIR/keys (as the PII KEK
    is), so website tokens, and so the playground, work on a default install."""
    if settings.auth.jwt_secret is not None:
        return settings.auth.jwt_secret.get_secret_value()
    path = settings.storage.data_dir / "keys" / "web-token.key"
    return base64.b64encode(load_or_create_key(path, "JWT_SECRET")).decode()


def build_human_check(settings: Settings, secret: str, limits: Limits) -> HumanCheck | None:
    """ALTCHA challenges before a guest's website token; solved ones are remembered in the
    limiter's storage (Redis when it is shared), so none is used twice."""
    if settings.auth.human_check == "off":
        return None
    return HumanCheck(
        derive_key(secret),
        limits.counter,
        max_number=settings.auth.human_check_max_number,
        expire_s=settings.auth.human_check_expire_s,
    )


def build_limits(settings: Settings, engine: AsyncEngine, link: Link | None = None) -> Limits:
    """Rate limits in Redis when configured (shared by all workers), else in process."""
    rates = RatePolicy(
        general=Rate.parse(settings.limits.rate_limit_general),
        generation_ip=Rate.parse(settings.limits.rate_limit_generation_ip),
        image=AccountScale(
            usd_to_credits(settings.limits.rate_limit_account_image_step_usd),
            settings.limits.rate_limit_account_image_min,
            settings.limits.rate_limit_account_image_max,
        ),
        video=AccountScale(
            usd_to_credits(settings.limits.rate_limit_account_video_step_usd),
            settings.limits.rate_limit_account_video_min,
            settings.limits.rate_limit_account_video_max,
        ),
    )
    return Limits(
        rates=rates if settings.limits.rate_limits_enabled else None,
        counter=(
            redis_counter(
                settings.storage.redis_url,
                settings.storage.redis_namespace,
                link=link,
                timeout_s=settings.storage.redis_timeout_s,
            )
            if settings.storage.redis_url and settings.limits.rate_limits_enabled
            else memory_counter()
        ),
        bans=BanList(
            [parse_network(n) for n in settings.limits.banned_networks],
            lambda: load_networks(engine),
            refresh_s=settings.limits.bans_refresh_s,
        ),
        free_tier=FreeTier(
            engine,
            funded_daily=settings.limits.free_daily_limit_funded,
            unfunded_daily=settings.limits.free_daily_limit_unfunded,
            generate_url=own_link(settings.limits.generate_url, settings, "/playground"),
            pricing_url=own_link(settings.generation.pricing_url, settings, "/pricing"),
        ),
        client_ip=ClientIpPolicy(
            settings.limits.trusted_proxy_count, settings.limits.client_ip_header
        ),
    )


def build_generator(
    settings: Settings,
    *,
    engine: AsyncEngine,
    catalog: Catalog,
    providers: Mapping[str, Provider],
    health: HealthStore,
    store: Store,
    outputs: OutputFetcher,
    vault: Vault,
    events: GenerationEvents = NO_EVENTS,
    drain: Drain | None = None,
    durability: Durability = NO_DURABILITY,
) -> Generator:
    """The generation use case with its collaborators and its own settings only."""
    policy = GenerationPolicy(
        image_deadline_s=settings.generation.image_deadline_s,
        video_deadline_s=settings.generation.video_deadline_s,
        attempt_timeout_s=settings.routing.attempt_timeout_s,
        retry_backoff_s=settings.routing.retry_backoff_s,
        retention_prompts_days=settings.retention.retention_prompts_days,
        retention_outputs_hours=settings.retention.retention_outputs_hours,
        pricing_url=own_link(settings.generation.pricing_url, settings, "/pricing"),
    )
    return Generator(
        engine,
        catalog,
        providers,
        health,
        store,
        outputs,
        vault,
        policy,
        events,
        drain=drain if drain is not None else Drain(),
        durability=durability,
    )


def build_generation_jobs(settings: Settings, engine: AsyncEngine, vault: Vault) -> Jobs:
    """Async and durable generations; `attach` the generator built with it."""
    policy = JobsPolicy(
        lease_s=settings.generation.job_lease_s,
        resume_interval_s=settings.generation.job_resume_interval_s,
        shutdown_wait_s=_JOBS_SHUTDOWN_WAIT_S,
        outputs_hours=settings.retention.retention_outputs_hours,
    )
    return Jobs(engine, vault, policy)


# How long a stopping process waits for its async jobs that cannot be resumed (their vendor
# answers in one call) once the drain is over, before they are released as interrupted.
_JOBS_SHUTDOWN_WAIT_S = 10.0


def build_webhooks(
    settings: Settings,
    engine: AsyncEngine,
    http: httpx.AsyncClient,
    vault: Vault,
    mailer: Mailer,
) -> Webhooks:
    """Outgoing webhooks: the generation's events, the delivery runner, the e-mail notice;
    their addresses checked like vendor output URLs (ALLOW_PRIVATE_UPSTREAMS)."""
    config = settings.webhooks
    policy = WebhookPolicy(
        timeout_s=config.webhook_timeout_s,
        retry_first=timedelta(seconds=config.webhook_retry_first_s),
        retry_window=timedelta(hours=config.webhook_retry_hours),
        disable_after=timedelta(days=config.webhook_disable_after_days),
        max_endpoints=config.webhook_max_endpoints,
        log_for=timedelta(days=config.webhook_log_days),
        site_url=site_base(settings) or public_url(settings),
    )
    guard = UrlGuard(allow_private=settings.routing.allow_private_upstreams)
    return Webhooks(
        engine=engine,
        vault=vault,
        policy=policy,
        events=WebhookEvents(engine, guard, policy),
        runner=DeliveryRunner(engine, http, vault, guard, policy),
        notice=DisabledNotice(engine, vault, mailer, policy.site_url),
    )


def build_payments(settings: Settings, http: httpx.AsyncClient) -> Payments | None:
    """Stripe top-ups when configured; None means the operator grants credits by CLI."""
    if (
        settings.payments.payments_provider != "stripe"
        or settings.payments.stripe_secret_key is None
    ):
        return None
    gateway = StripeGateway(
        http,
        secret_key=settings.payments.stripe_secret_key.get_secret_value(),
        webhook_secrets=settings.payments.stripe_webhook_secrets(),
        api_base=settings.payments.stripe_api_base,
    )
    policy = TopupPolicy(
        currency=settings.payments.billing_currency,
        min_cents=settings.payments.topup_min_cents,
        max_cents=settings.payments.topup_max_cents,
        site_url=(settings.payments.site_url or public_url(settings)).rstrip("/"),
    )
    return Payments(gateway, policy)


def build_clerk(settings: Settings, http: httpx.AsyncClient, vault: Vault) -> ClerkAuth | None:
    """Clerk session verification, Backend API and webhook secret (AUTH_PROVIDER=clerk)."""
    if settings.auth.auth_provider != "clerk" or settings.clerk.clerk_issuer is None:
        return None
    secret = (
        settings.clerk.clerk_secret_key.get_secret_value()
        if settings.clerk.clerk_secret_key
        else None
    )
    jwks_url = None if settings.clerk.clerk_jwt_key else settings.clerk.clerk_jwks_url
    # The Backend API's JWKS (CLERK_API_URL/v1/jwks) needs the secret key; the Frontend
    # API's /.well-known/jwks.json is public and gets no credentials.
    on_backend = jwks_url == settings.clerk.clerk_api_url.rstrip("/") + "/v1/jwks"
    verifier = ClerkVerifier(
        issuer=settings.clerk.clerk_issuer,
        authorized_parties=settings.clerk.clerk_authorized_parties,
        jwt_key=settings.clerk.clerk_jwt_key,
        jwks_url=jwks_url,
        http=http,
        jwks_headers={"Authorization": f"Bearer {secret}"} if secret and on_backend else None,
        jwks_cache_s=settings.clerk.clerk_jwks_cache_s,
    )
    signing = settings.clerk.clerk_webhook_signing_secret
    return ClerkAuth(
        verifier=verifier,
        backend=(
            ClerkBackend(http, secret_key=secret, api_url=settings.clerk.clerk_api_url)
            if secret
            else None
        ),
        webhook=webhook_verifier(signing.get_secret_value() if signing else None),
        csrf_key=csrf_key(vault.index_key),
        sign_in_url=settings.clerk.clerk_sign_in_url,
    )


def site_base(settings: Settings) -> str | None:
    """The website's address when configured (SITE_URL, else PUBLIC_URL), without a slash."""
    configured = settings.payments.site_url or settings.serving.public_url
    return configured.rstrip("/") if configured else None


def policy_facts(settings: Settings) -> PolicyFacts:
    """What the policy documents (and every data export) state about this deployment."""
    analytics = settings.legal.analytics_script_url
    return PolicyFacts(
        contact_email=settings.legal.privacy_contact_email,
        site_url=site_base(settings) or public_url(settings),
        retention=retention_rows(
            RetentionPeriods(
                prompts_days=settings.retention.retention_prompts_days,
                outputs_hours=settings.retention.retention_outputs_hours,
                usage_meta_days=settings.retention.retention_usage_meta_days,
                security_log_days=settings.retention.retention_security_log_days,
                accounting_years=settings.retention.retention_accounting_years,
                webhook_ids_days=settings.retention.retention_webhook_ids_days,
                audit_days=settings.retention.retention_audit_days,
                consent_proof_days=settings.retention.retention_consent_proof_days,
                export_ttl_hours=settings.privacy.export_ttl_hours,
                idempotency_hours=settings.retention.retention_idempotency_hours,
                webhook_log_days=settings.webhooks.webhook_log_days,
            )
        ),
        clerk=settings.auth.auth_provider == "clerk",
        stripe=settings.payments.payments_provider == "stripe",
        analytics_host=(urlsplit(analytics).netloc or analytics) if analytics else None,
        store_prompts_default=settings.privacy.default_store_prompts,
        object_storage=bool(
            settings.storage.storage_url and settings.storage.storage_url.startswith("s3://")
        ),
        vendors=vendor_names(p for p in PROVIDERS if provider_problem(settings, p) is None),
        grace_days=settings.legal.legal_grace_days,
        consent_reask_days=settings.legal.consent_reask_days,
        consent_cookie_days=CONSENT_MAX_AGE.days,
        session_days=max(1, round(settings.auth.session_ttl_s / 86400)),
    )


def build_erasure(
    settings: Settings,
    engine: AsyncEngine,
    store: Store,
    vault: Vault,
    payments: Payments | None,
    clerk: ClerkAuth | None,
) -> ErasureRunner:
    return ErasureRunner(
        engine=engine,
        store=store,
        vault=vault,
        stripe=payments.gateway if payments is not None else None,
        clerk=clerk.backend if clerk is not None else None,
        hold_grace=timedelta(seconds=settings.generation.hold_grace_s),
    )


def build_export(
    settings: Settings, engine: AsyncEngine, store: Store, vault: Vault, mailer: Mailer
) -> ExportRunner:
    policy = ExportPolicy(
        ttl=timedelta(hours=settings.privacy.export_ttl_hours),
        # The estimate is whole bytes, so flooring a fractional limit changes no outcome.
        sync_max_bytes=int(settings.privacy.export_sync_max_mb * 1024 * 1024),
        link_base=site_base(settings) or public_url(settings),
    )
    return ExportRunner(engine, store, vault, mailer, policy_facts(settings), policy)


def build_idempotency(settings: Settings, engine: AsyncEngine, vault: Vault) -> Idempotency:
    policy = IdempotencyPolicy(
        retention=timedelta(hours=settings.retention.retention_idempotency_hours),
        wait_s=settings.generation.idempotency_wait_s,
    )
    return Idempotency(engine, vault, policy)


def build_retention(
    settings: Settings, engine: AsyncEngine, store: Store, exports: ExportRunner
) -> Retention:
    policy = RetentionPolicy(
        security_log_days=settings.retention.retention_security_log_days,
        usage_meta_days=settings.retention.retention_usage_meta_days,
        webhook_ids_days=settings.retention.retention_webhook_ids_days,
        audit_days=settings.retention.retention_audit_days,
        consent_proof_days=settings.retention.retention_consent_proof_days,
        accounting_years=settings.retention.retention_accounting_years,
        webhook_log_days=settings.webhooks.webhook_log_days,
        batch_size=settings.retention.purge_batch_size,
    )
    return Retention(engine, store, policy, exports=exports.purge_expired)


def build_jobs(
    engine: AsyncEngine,
    vault: Vault,
    mailer: Mailer,
    erasures: ErasureRunner,
    exports: ExportRunner,
    webhooks: Webhooks | None = None,
) -> JobRunner:
    """The job registry: every kind of background job, and what runs it."""
    notices = policy_mail.NoticeRunner(engine, vault, mailer)
    handlers = {
        erasure.JOB_KIND: erasures.run,
        export.JOB_KIND: exports.run,
        policy_mail.JOB_KIND: notices.run,
    }
    if webhooks is not None:
        handlers[webhook_notices.JOB_KIND] = webhooks.notice.run
    return JobRunner(engine, handlers)


def build_key_changes(settings: Settings, *, cache: bool = True) -> KeyChanges:
    """`cache` False (the CLI): only tell the serving processes about this one's changes."""
    ttl = settings.auth.auth_cache_ttl_s if cache else 0.0
    file = ChangeFile(settings.storage.data_dir / "key-changes")
    redis = None
    if settings.storage.redis_url:
        # However short this process's TTL, the servers' is the default at least.
        wait_s = max(settings.auth.auth_cache_ttl_s, 5.0)
        redis = RedisChannel(
            redis_client(settings, blocking_s=wait_s), settings.storage.redis_namespace, wait_s
        )
    return KeyChanges(KeyCache(ttl, signal=file.version), file, redis)


def build_resources(
    settings: Settings,
    *,
    http_transport: httpx.AsyncBaseTransport | None = None,
    url_prefix: str | None = None,
) -> Resources:
    settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
    http = build_http_client(settings, http_transport)
    providers, disabled = build_providers(settings, http)
    catalog = load_catalog(
        settings.generation.catalog_paths,
        image_inputs={pid: cls.image_inputs for pid, cls in PROVIDERS.items()},
    )
    engine = make_engine(
        settings.storage.resolved_database_url(),
        pool_size=settings.storage.db_pool_size,
        max_overflow=settings.storage.db_max_overflow,
    )
    vault = build_vault(settings)
    store = build_store(settings, url_prefix or public_url(settings))
    link = redis_link() if settings.storage.redis_url else None
    health = build_health(settings, link)
    outputs = OutputFetcher(http, allow_private=settings.routing.allow_private_upstreams)
    payments = build_payments(settings, http)
    clerk = build_clerk(settings, http, vault)
    mailer = build_mailer(settings.mail.smtp_url, settings.mail.smtp_from)
    erasures = build_erasure(settings, engine, store, vault, payments, clerk)
    exports = build_export(settings, engine, store, vault, mailer)
    limits = build_limits(settings, engine, link)
    web_token_secret = build_web_token_secret(settings)
    webhooks = build_webhooks(settings, engine, http, vault, mailer)
    drain = Drain()
    generation_jobs = build_generation_jobs(settings, engine, vault)
    job_resumer = JobResumer(generation_jobs)
    drain.on_drain.append(job_resumer.begin_stop)
    resources = Resources(
        settings=settings,
        engine=engine,
        http=http,
        catalog=catalog,
        providers=providers,
        store=store,
        health=health,
        limits=limits,
        disabled=disabled,
        payments=payments,
        vault=vault,
        outputs=outputs,
        generator=build_generator(
            settings,
            engine=engine,
            catalog=catalog,
            providers=providers,
            health=health,
            store=store,
            outputs=outputs,
            vault=vault,
            events=webhooks.events,
            drain=drain,
            durability=generation_jobs,
        ),
        clerk=clerk,
        erasure=erasures,
        export=exports,
        retention=build_retention(settings, engine, store, exports),
        jobs=build_jobs(engine, vault, mailer, erasures, exports, webhooks),
        webhooks=webhooks,
        idempotency=build_idempotency(settings, engine, vault),
        web_token_secret=web_token_secret,
        human_check=build_human_check(settings, web_token_secret, limits),
        key_changes=build_key_changes(settings).attach(engine),
        drain=drain,
        redis=redis_client(settings) if settings.storage.redis_url else None,
        redis_link=link,
        generation_jobs=generation_jobs,
        job_resumer=job_resumer,
    )
    generation_jobs.attach(resources.generator)
    return resources
