"""Settings: the only code that reads the environment.

Every variable is documented in README.md ("Configuration"). Vendor keys keep the names the
reference uses, so a deployment can move over without renaming anything.
"""

from __future__ import annotations

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

    # --- vendors
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None

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
        secret = getattr(self, f"{provider}_api_key", None)
        return secret.get_secret_value() if isinstance(secret, SecretStr) else None

    def base_url(self, provider: str) -> str | None:
        value = getattr(self, f"{provider}_base_url", None)
        return value if isinstance(value, str) and value else None
