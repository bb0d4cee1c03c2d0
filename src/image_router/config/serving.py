"""Where the server listens, the address it is reached at, and what it logs."""

from __future__ import annotations

from pydantic import Field

from image_router.config.group import Group


class ServingSettings(Group):
    host: str = Field(
        default="127.0.0.1",
        description="address `serve` listens on (its `--host` wins) and `providers status` asks",
    )
    port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        description="TCP port `serve` listens on (its `--port` wins) and `providers status` asks",
    )
    public_url: str | None = Field(
        default=None,
        description="base of the URLs of locally stored outputs; unset: `http://HOST:PORT`",
    )
    shutdown_drain_s: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM: seconds the requests in flight may take to finish (no new "
        "connections are accepted, `/ready` answers 503); generations still running then "
        "are cut off, their holds released, and answered 503 `server_shutting_down`",
    )
    ready_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="`/ready`: how long each check (database, Redis, storage) may take "
        "before it counts as failed",
    )


class ObservabilitySettings(Group):
    log_level: str = Field(default="INFO", description="log level: DEBUG, INFO, WARNING, ERROR")
    log_format: str = Field(
        default="json",
        description="log lines as `json` (one object per line) or `text` (for a terminal)",
    )
