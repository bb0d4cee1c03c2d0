"""Settings: the only code that reads the environment.

Every variable is documented in README.md ("Configuration"). Vendor keys keep the names the
reference uses, so a deployment can move over without renaming anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    # --- serving
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
    catalog_paths: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    list_all_models: bool = False
    enable_test_models: bool = True

    # --- auth
    jwt_secret: SecretStr | None = None
    bootstrap_admin_email: str = "admin@localhost"

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
    nanogpt_base_url: str | None = None
    google_gemini_api_key: SecretStr | None = None  # comma-separated list
    gemini_base_url: str | None = None  # AI Studio: gemini, Imagen and Veo
    google_cloud_project_id: str | None = None
    google_cloud_location: str = "us-central1"
    google_service_account_key: SecretStr | None = None  # base64 of the JSON key
    vertex_base_url: str | None = None
    vertex_token_url: str | None = None
    xai_api_key: SecretStr | None = None
    grok_base_url: str | None = None
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
    "nanogpt": ProviderFields("nano_gpt_api_key"),
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
    "grok": ProviderFields("xai_api_key", "grok_base_url"),
}


def credential_field(provider: str) -> str:
    """The settings field (and, upper-cased, the environment variable) of a vendor's key."""
    known = PROVIDER_SETTINGS.get(provider)
    return known.credential if known else f"{provider}_api_key"
