"""`Settings`: every setting, grouped by concern, each read from its own environment
variable (or `.env` line). README "Configuration" is generated from the fields'
descriptions (`image_router.cli.config_docs`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from image_router.config.auth import AuthSettings, MailSettings
from image_router.config.clerk import ClerkSettings
from image_router.config.generation import GenerationSettings, RoutingSettings
from image_router.config.legal import LegalSettings
from image_router.config.limits import LimitsSettings
from image_router.config.payments import PaymentSettings
from image_router.config.privacy import PrivacySettings, RetentionSettings
from image_router.config.serving import ObservabilitySettings, ServingSettings
from image_router.config.source import FlatEnvironment, regroup
from image_router.config.storage import StorageSettings
from image_router.config.vendors import VendorSettings
from image_router.config.webhooks import WebhookSettings


class Settings(BaseSettings):
    """The whole configuration. The composition root hands each use case its own group."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    serving: ServingSettings = Field(
        default_factory=ServingSettings, description="Serving: where the server listens"
    )
    storage: StorageSettings = Field(
        default_factory=StorageSettings,
        description="Storage: the database, the key store, outputs, Redis",
    )
    generation: GenerationSettings = Field(
        default_factory=GenerationSettings,
        description="Generation: deadlines, holds and the catalog",
    )
    routing: RoutingSettings = Field(
        default_factory=RoutingSettings,
        description="Routing: how vendors are called, retried and polled",
    )
    limits: LimitsSettings = Field(
        default_factory=LimitsSettings,
        description="Limits: rate limits, the free tier, bans, client addresses",
    )
    auth: AuthSettings = Field(
        default_factory=AuthSettings, description="Sign-in: accounts, sessions, website tokens"
    )
    clerk: ClerkSettings = Field(
        default_factory=ClerkSettings, description="Clerk: sign-in with `AUTH_PROVIDER=clerk`"
    )
    mail: MailSettings = Field(
        default_factory=MailSettings, description="Mail: the e-mails the gateway sends"
    )
    payments: PaymentSettings = Field(
        default_factory=PaymentSettings, description="Payments: Stripe top-ups"
    )
    privacy: PrivacySettings = Field(
        default_factory=PrivacySettings,
        description="Privacy: keys protecting personal data, exports, background jobs",
    )
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="Retention: how long data is kept"
    )
    legal: LegalSettings = Field(
        default_factory=LegalSettings, description="Legal: policies, contacts, consent"
    )
    observability: ObservabilitySettings = Field(
        default_factory=ObservabilitySettings, description="Logging: level and format"
    )
    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings,
        description="Webhooks: delivering generation events to the accounts' endpoints",
    )
    vendors: VendorSettings = Field(
        default_factory=VendorSettings, description="Vendors: keys, hosts, options"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over `.env`, and keyword arguments over both, as before.
        dotenv = (
            dotenv_settings.env_vars if isinstance(dotenv_settings, DotEnvSettingsSource) else {}
        )
        env = env_settings.env_vars if isinstance(env_settings, EnvSettingsSource) else {}
        return init_settings, FlatEnvironment(settings_cls, dotenv, env)

    @model_validator(mode="before")
    @classmethod
    def _regroup(cls, data: Any) -> Any:
        return regroup(cls, data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _check_clerk(self) -> Settings:
        if self.auth.auth_provider == "clerk":
            missing = self.clerk.missing()
            if missing:
                raise ValueError(f"AUTH_PROVIDER=clerk needs {', '.join(missing)}")
        return self
