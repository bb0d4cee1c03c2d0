"""Where data lives: the database, the key store, generated files, Redis."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from image_router.config.group import Group


class StorageSettings(Group):
    data_dir: Path = Field(
        default=Path("data"), description="SQLite files, key files and local outputs"
    )
    database_url: str | None = Field(
        default=None,
        description="e.g. `postgresql+asyncpg://user:pass@host/db`; unset: SQLite in `DATA_DIR`",
    )
    auto_migrate: bool = Field(
        default=True,
        description="apply migrations at start-up (PostgreSQL: under an advisory lock, "
        "safe with many workers)",
    )
    # Each worker process has two engines on PostgreSQL (the database and, when
    # DATA_KEYS_URL is PostgreSQL, the key store), each holding up to size + overflow
    # connections: workers × hosts × 2 × (size + overflow) must stay within the server's
    # max_connections (100 by default), or go through PgBouncer (docs/deployment.md).
    db_pool_size: int = Field(
        default=20,
        ge=1,
        description="PostgreSQL connections each engine of each worker keeps open (the "
        "database and a PostgreSQL key store are one engine each); SQLite always uses one",
    )
    db_max_overflow: int = Field(
        default=20,
        ge=0,
        description="extra PostgreSQL connections each engine may open under load beyond "
        "`DB_POOL_SIZE` (closed again when returned); keep workers × engines × "
        "(`DB_POOL_SIZE` + `DB_MAX_OVERFLOW`) within the server's `max_connections`",
    )
    # The per-account data keys live apart from the main database, so its backups cannot
    # open erased accounts' data.
    data_keys_url: str | None = Field(
        default=None,
        description="the key store: a database apart from `DATABASE_URL`, so backups of the "
        "main one cannot open erased accounts; unset: SQLite `DATA_DIR/keys/data-keys.db`",
    )
    storage_url: str | None = Field(
        default=None,
        description="where outputs are stored: a directory (`file:///path`) or "
        "`s3://bucket[/prefix]`; unset: `DATA_DIR/outputs`",
    )
    s3_endpoint: str | None = Field(
        default=None,
        description="S3-compatible endpoint (path-style addressing: MinIO, Backblaze B2, R2…)",
    )
    s3_region: str | None = Field(default=None, description="S3 region")
    s3_access_key_id: str | None = Field(default=None, description="S3 access key id")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 secret key")
    s3_custom_public_url: str | None = Field(
        default=None,
        description="public base URL of stored objects (e.g. a CDN); unset: endpoint/bucket",
    )
    redis_url: str | None = Field(
        default=None,
        description="share route health and rate limits between workers and machines; "
        "unset: each process keeps its own",
    )
    redis_namespace: str = Field(
        default="ir", description="prefix of every Redis key, so deployments can share one Redis"
    )
    redis_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="connect and read timeout of every Redis call: past it Redis counts as "
        "down, and rate limits and route health fall back to each process's own state",
    )

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'image-router.db').resolve()}"

    def resolved_data_keys_url(self) -> str:
        if self.data_keys_url:
            return self.data_keys_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'keys' / 'data-keys.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url().startswith("sqlite")
