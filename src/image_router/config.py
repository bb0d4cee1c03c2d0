"""Settings: the only code that reads the environment.

Every variable is documented in README.md ("Configuration"). Vendor keys keep the names the
reference uses, so a deployment can move over without renaming anything.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal

import limits
from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from image_router.kit.networks import canonical, parse_network


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # --- serving
    host: str = "127.0.0.1"  # `serve` listens here; `providers status` asks here
    port: int = Field(default=8000, ge=1, le=65535)
    data_dir: Path = Path("data")
    database_url: str | None = None
    public_url: str | None = None
    auto_migrate: bool = True
    log_level: str = "INFO"
    log_format: str = "json"  # or "text"
    pricing_url: str = "https://imagerouter.io/pricing"

    # --- storage
    storage_url: str | None = None  # None: local directory under data_dir; s3://bucket[/prefix]
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_custom_public_url: str | None = None

    # --- generation
    heartbeat_after_s: float = 20.0
    heartbeat_interval_s: float = 3.0
    hold_reconcile_interval_s: float = 60.0
    hold_grace_s: float = 60.0  # how long past its deadline a hold is left to its request
    attempt_timeout_s: float | None = None  # per vendor attempt; default: the deadline
    retry_backoff_s: float = 0.2
    circuit_failure_threshold: int = 5
    circuit_cooldown_s: float = 30.0
    redis_url: str | None = None  # shared route health (and limits) across workers
    redis_namespace: str = "ir"  # key prefix, so deployments can share one Redis
    image_deadline_s: float = 300.0
    video_deadline_s: float = 1200.0
    upstream_connect_timeout_s: float = 10.0
    upstream_max_connections: int = 4096
    # Fetch vendor outputs from private addresses (loopback, RFC 1918, link-local) other than
    # the serving vendor's own configured host; off, such output URLs are refused.
    allow_private_upstreams: bool = False
    catalog_paths: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    list_all_models: bool = False
    enable_test_models: bool = True

    # --- auth
    jwt_secret: SecretStr | None = None  # signs website tokens (spec §4); none: no tokens
    bootstrap_admin_email: str = "admin@localhost"
    auth_provider: Literal["local", "clerk"] = "local"  # README "Website and sign-in"
    # Clerk (AUTH_PROVIDER=clerk): session tokens verified with the PEM (networkless) or
    # the JWKS; the Backend API only to fetch a user just in time and delete one on erasure.
    clerk_issuer: str | None = None  # the Frontend API URL, e.g. https://clerk.example.com
    clerk_authorized_parties: Annotated[list[str], NoDecode] = Field(default_factory=list)
    clerk_jwt_key: str | None = None  # PEM public key ("JWT public key" in the dashboard)
    clerk_jwks_url: str | None = None
    clerk_jwks_cache_s: float = 300.0
    clerk_secret_key: SecretStr | None = None
    clerk_api_url: str = "https://api.clerk.com"
    clerk_webhook_signing_secret: SecretStr | None = None  # whsec_... (Svix)
    clerk_sign_in_url: str | None = None  # Clerk's hosted sign-in page (Account Portal)
    clerk_publishable_key: str | None = None  # pk_... for Clerk's browser script
    reverify_max_minutes: int = Field(default=10, ge=0)  # erasure/export need a fresh sign-in
    session_ttl_s: float = Field(default=14 * 24 * 3600, gt=0)
    web_token_ttl_s: float = Field(default=60, gt=0)
    signin_throttle: str = "5/minute"  # per e-mail and client IP (the `limits` notation)
    # Sign-in and reset attempts also per e-mail from any address, and per address
    # whatever the e-mail: one e-mail tried from many addresses, many e-mails from one.
    signin_throttle_email: str = "10/minute"
    signin_throttle_ip: str = "20/minute"
    smtp_url: str | None = None  # smtp://[user:pass@]host:port or smtps://; none: stderr
    smtp_from: str = "Image Router <noreply@localhost>"

    # --- privacy (README "Privacy"; docs/privacy.md)
    # Key-encryption key for per-account data keys: 32 bytes, base64. None: a key file
    # under DATA_DIR is created on first start (fine for one machine; set it for several).
    pii_kek: SecretStr | None = None
    pii_kek_file: Path | None = None
    # Earlier KEKs (comma-separated base64) still accepted while `image-router vault
    # rewrap` moves every data key under PII_KEK; remove them once it has run.
    pii_kek_previous: SecretStr | None = None
    blind_index_key: SecretStr | None = None  # HMAC key for e-mail look-up (32 bytes, base64)
    # The per-account data keys live apart from the main database, so its backups cannot
    # open erased accounts' data. None: SQLite under DATA_DIR/keys (db/key_store.py).
    data_keys_url: str | None = None
    default_store_prompts: bool = True  # the policy says prompts are stored
    retention_prompts_days: int = Field(default=30, ge=0)
    retention_outputs_hours: int = Field(default=24, ge=0)
    retention_usage_meta_days: int = Field(default=730, ge=1)
    retention_security_log_days: int = Field(default=30, ge=1)  # client IPs on usage rows
    retention_accounting_years: int = Field(default=10, ge=1)
    retention_webhook_ids_days: int = Field(default=90, ge=1)
    retention_audit_days: int = Field(default=730, ge=1)
    retention_consent_proof_days: int = Field(default=1095, ge=1)  # after the account ends
    purge_interval_s: float = Field(default=3600.0, gt=0)
    purge_batch_size: int = Field(default=500, ge=1)
    jobs_interval_s: float = Field(default=2.0, gt=0)
    export_ttl_hours: int = Field(default=24, ge=1)
    export_sync_max_mb: float = Field(default=20.0, ge=0)
    privacy_contact_email: str = "privacy@localhost"
    security_contact: str | None = None  # default: mailto:PRIVACY_CONTACT_EMAIL
    security_policy_url: str | None = None
    legal_dir: Path | None = None  # operator's policy documents; default: the shipped ones
    legal_grace_days: int = Field(default=30, ge=0)
    analytics_script_url: str | None = None  # none: no analytics, no cookie banner
    consent_reask_days: int = Field(default=180, ge=1)

    # --- limits (spec §6; README "Limits")
    rate_limits_enabled: bool = True
    rate_limit_general: str = "20/second"  # per client IP, every route
    rate_limit_generation_ip: str = "6000/minute"  # per client IP, generation routes
    # Per account per second: one more request for every STEP_USD of balance, within MIN..MAX.
    rate_limit_account_image_step_usd: Decimal = Decimal("0.25")
    rate_limit_account_image_min: int = 6
    rate_limit_account_image_max: int = 100
    rate_limit_account_video_step_usd: Decimal = Decimal("6")
    rate_limit_account_video_min: int = 1
    rate_limit_account_video_max: int = 20
    free_daily_limit_funded: int = 50
    free_daily_limit_unfunded: int = 10
    generate_url: str = "https://imagerouter.io/generate"  # named in the ":free" refusal
    trusted_proxy_count: int = Field(default=0, ge=0)
    client_ip_header: str | None = None  # e.g. CF-Connecting-IP; only with trusted proxies
    banned_networks: Annotated[list[str], NoDecode] = Field(default_factory=list)
    bans_refresh_s: float = 5.0

    # --- payments (README "Payments")
    payments_provider: Literal["none", "stripe"] = "none"
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None  # comma-separated: each is tried (rotation)
    stripe_api_base: str | None = None  # default https://api.stripe.com (tests: a fake)
    billing_currency: Literal["usd"] = "usd"  # credits are dollars, so only usd for now
    topup_min_cents: int = Field(default=500, ge=50)  # Stripe's smallest usd charge is $0.50
    topup_max_cents: int = Field(default=100_000, ge=50)
    site_url: str | None = None  # the website (Checkout returns there); default PUBLIC_URL

    # --- vendors: keys named as the reference names them; every host is configurable
    poll_interval_s: float = 2.0
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    runware_api_key: SecretStr | None = None
    runware_base_url: str | None = None
    deepinfra_api_key: SecretStr | None = None
    deepinfra_base_url: str | None = None
    replicate_api_key: SecretStr | None = None
    replicate_base_url: str | None = None
    fal_api_key: SecretStr | None = None
    fal_base_url: str | None = None  # the queue host
    fal_sync_base_url: str | None = None
    wavespeed_api_key: SecretStr | None = None
    wavespeed_base_url: str | None = None
    chutes_api_token: SecretStr | None = None
    chutes_base_url: str | None = None  # "{model}" is replaced by the chute name
    nano_gpt_api_key: SecretStr | None = None
    # NANO_GPT_BASE_URL, like its key; NANOGPT_BASE_URL (the earlier name) is still read.
    nano_gpt_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("nano_gpt_base_url", "nanogpt_base_url")
    )
    google_gemini_api_key: SecretStr | None = None  # comma-separated list
    gemini_base_url: str | None = None  # AI Studio: gemini, Imagen and Veo
    google_cloud_project_id: str | None = None
    google_cloud_location: str = "us-central1"
    google_service_account_key: SecretStr | None = None  # base64 of the JSON key
    vertex_base_url: str | None = None
    vertex_token_url: str | None = None
    xai_api_key: SecretStr | None = None
    # XAI_BASE_URL, like its key; GROK_BASE_URL (the earlier name) is still read.
    xai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("xai_base_url", "grok_base_url")
    )
    zai_api_key: SecretStr | None = None
    zai_base_url: str | None = None
    openrouter_api_key: SecretStr | None = None  # comma-separated list
    openrouter_base_url: str | None = None
    together_api_key: SecretStr | None = None
    together_base_url: str | None = None

    @field_validator("catalog_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(p) for p in value.replace(";", ",").split(",") if p.strip()]
        return value

    @field_validator("clerk_authorized_parties", mode="before")
    @classmethod
    def _split_parties(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().rstrip("/") for part in value.split(",") if part.strip()]
        return value

    @field_validator(
        "rate_limit_general",
        "rate_limit_generation_ip",
        "signin_throttle",
        "signin_throttle_email",
        "signin_throttle_ip",
    )
    @classmethod
    def _check_rate(cls, value: str) -> str:
        limits.parse(value)  # "20/second", "6000/minute", "100 per 10 seconds"
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _check_jwt_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # HS256 with a short secret can be brute-forced offline from any one token.
        if value is not None and 0 < len(value.get_secret_value()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters")
        return value

    @field_validator("banned_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return [canonical(parse_network(str(part))) for part in value]
        return value

    @model_validator(mode="after")
    def _check_clerk(self) -> Settings:
        if self.auth_provider == "clerk":
            missing = [
                name
                for name, value in (
                    ("CLERK_ISSUER", self.clerk_issuer),
                    ("CLERK_AUTHORIZED_PARTIES", self.clerk_authorized_parties),
                    ("CLERK_JWT_KEY or CLERK_JWKS_URL", self.clerk_jwt_key or self.clerk_jwks_url),
                )
                if not value
            ]
            if missing:
                raise ValueError(f"AUTH_PROVIDER=clerk needs {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _check_payments(self) -> Settings:
        if self.topup_min_cents > self.topup_max_cents:
            raise ValueError("TOPUP_MIN_CENTS must not exceed TOPUP_MAX_CENTS")
        if self.payments_provider == "stripe":
            missing = [
                name
                for name, secret in (
                    ("STRIPE_SECRET_KEY", self.stripe_secret_key),
                    ("STRIPE_WEBHOOK_SECRET", self.stripe_webhook_secret),
                )
                if secret is None or not secret.get_secret_value().strip()
            ]
            if missing:
                raise ValueError(f"PAYMENTS_PROVIDER=stripe needs {' and '.join(missing)}")
        return self

    def stripe_webhook_secrets(self) -> list[str]:
        """The webhook signing secrets, old and new while an endpoint secret is rolled."""
        raw = self.stripe_webhook_secret.get_secret_value() if self.stripe_webhook_secret else ""
        return [part.strip() for part in raw.split(",") if part.strip()]

    def resolved_data_keys_url(self) -> str:
        if self.data_keys_url:
            return self.data_keys_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'keys' / 'data-keys.db').resolve()}"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'image-router.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url().startswith("sqlite")

    def credential(self, provider: str) -> str | None:
        """The configured credential of a vendor, or None."""
        secret = getattr(self, credential_field(provider), None)
        if isinstance(secret, SecretStr):
            return secret.get_secret_value() or None
        return None

    def base_url(self, provider: str) -> str | None:
        name = PROVIDER_SETTINGS.get(provider, ProviderFields("")).base_url or (
            f"{provider}_base_url"
        )
        value = getattr(self, name, None)
        return value if isinstance(value, str) and value else None

    def provider_extra(self, provider: str) -> dict[str, str]:
        """A vendor's other settings (second hosts, project ids...), by name."""
        fields = PROVIDER_SETTINGS.get(provider, ProviderFields(""))
        extra = {}
        for name, attribute in fields.extra.items():
            value = getattr(self, attribute, None)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if value:
                extra[name] = str(value)
        return extra


@dataclass(frozen=True)
class ProviderFields:
    """Which settings fields configure one provider."""

    credential: str
    base_url: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


#: Providers whose settings do not follow `<id>_api_key` / `<id>_base_url`.
PROVIDER_SETTINGS: Mapping[str, ProviderFields] = {
    "fal": ProviderFields("fal_api_key", extra={"sync_base_url": "fal_sync_base_url"}),
    "chutes": ProviderFields("chutes_api_token"),
    "nanogpt": ProviderFields("nano_gpt_api_key", "nano_gpt_base_url"),
    "gemini": ProviderFields("google_gemini_api_key", "gemini_base_url"),
    "geminiImagen": ProviderFields("google_gemini_api_key", "gemini_base_url"),
    "vertex": ProviderFields(
        "google_service_account_key",
        "vertex_base_url",
        extra={
            "project_id": "google_cloud_project_id",
            "location": "google_cloud_location",
            "token_url": "vertex_token_url",
        },
    ),
    "grok": ProviderFields("xai_api_key", "xai_base_url"),
}


def credential_field(provider: str) -> str:
    """The settings field (and, upper-cased, the environment variable) of a vendor's key."""
    known = PROVIDER_SETTINGS.get(provider)
    return known.credential if known else f"{provider}_api_key"


#: The shapes of a vendor setting, for spotting a misspelt one (`misnamed_variables`).
_VENDOR_NAME = re.compile(r"^([A-Z0-9_]+?)_(BASE_URL|API_KEY|API_TOKEN)$")


def vendor_variables(*, aliases: bool = True) -> frozenset[str]:
    """Every environment variable naming a vendor key or host (earlier names included
    unless `aliases` is false)."""
    names: set[str] = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = [str(c) for c in alias.choices] if isinstance(alias, AliasChoices) else [name]
        names.update(c.upper() for c in (choices if aliases else choices[:1]))
    return frozenset(n for n in names if _VENDOR_NAME.match(n))


def misnamed_variables(names: Iterable[str]) -> list[str]:
    """A warning for each set variable shaped like a vendor setting that is not one but
    resembles one, naming that one: a misspelt key or host is otherwise silently ignored
    (and the gateway calls the vendor's real host)."""
    known = vendor_variables()
    canonical = sorted(vendor_variables(aliases=False))
    warnings = []
    for name in sorted({n.upper() for n in names}):
        if name in known or not _VENDOR_NAME.match(name):
            continue
        match = _by_provider_id(name) or _closest(name, canonical)
        if match is not None:
            warnings.append(f"{name} is set but not read; did you mean {match}?")
    return warnings


def _closest(name: str, candidates: list[str]) -> str | None:
    """The candidate for the same vendor (a similar or contained name) and the same kind
    of setting (a key, or a host) as `name`, or None."""
    vendor, kind = _split_vendor_name(name)
    best: tuple[float, str] | None = None
    for candidate in candidates:
        their_vendor, their_kind = _split_vendor_name(candidate)
        if their_kind != kind:
            continue
        ratio = difflib.SequenceMatcher(None, vendor, their_vendor).ratio()
        if vendor in their_vendor.split("_") or their_vendor in vendor.split("_"):
            ratio = max(ratio, 0.8)
        if ratio >= 0.75 and (best is None or ratio > best[0]):
            best = (ratio, candidate)
    return best[1] if best else None


def _by_provider_id(name: str) -> str | None:
    """The setting of a provider named by its id (GROK_API_KEY: xAI's key is XAI_API_KEY)."""
    vendor, kind = _split_vendor_name(name)
    fields = PROVIDER_SETTINGS.get(vendor.lower())
    if fields is None:
        return None
    found = fields.credential if kind == "key" else fields.base_url
    return found.upper() if found else None


def _split_vendor_name(name: str) -> tuple[str, str]:
    """("REPLICATE", "key") for REPLICATE_API_TOKEN; ("XAI", "host") for XAI_BASE_URL."""
    found = _VENDOR_NAME.match(name)
    if found is None:
        return name, ""
    return found.group(1), "host" if found.group(2) == "BASE_URL" else "key"


def set_variable_names(env_file: Path | None = Path(".env")) -> set[str]:
    """The names set in the environment and in the `.env` file settings are read from."""
    names = set(os.environ)
    if env_file is not None and env_file.is_file():
        names.update(dotenv_values(env_file))
    return names
