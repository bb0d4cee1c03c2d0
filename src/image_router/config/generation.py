"""How a generation runs (deadlines, holds, the catalog) and how it reaches vendors
(timeouts, retries, circuit breakers, polling)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from image_router.config.group import Group


class GenerationSettings(Group):
    image_deadline_s: float = Field(
        default=300.0,
        description="overall deadline of an image generation, seconds; past it the hold "
        "is released",
    )
    video_deadline_s: float = Field(
        default=1200.0, description="overall deadline of a video generation, seconds"
    )
    heartbeat_after_s: float = Field(
        default=20.0,
        description="seconds after which a slow generation switches to keep-alive mode",
    )
    heartbeat_interval_s: float = Field(
        default=3.0, description="seconds between the spaces written in keep-alive mode"
    )
    idempotency_wait_s: float = Field(
        default=10.0,
        ge=0,
        description="how long a request repeating the `Idempotency-Key` of one still running "
        "waits for its answer before 409 `idempotency_key_in_progress`, seconds",
    )
    hold_reconcile_interval_s: float = Field(
        default=60.0,
        description="seconds between each worker's release of holds left by dead workers",
    )
    hold_grace_s: float = Field(
        default=60.0,
        description="seconds past its deadline a hold is left to its own request before "
        "it is released",
    )
    job_lease_s: float = Field(
        default=30.0,
        gt=0,
        description="a durable job's lease, seconds: the process waiting on it renews it; "
        "once it lapses (the process died) another process resumes the job "
        "([docs/jobs.md](docs/jobs.md))",
    )
    job_resume_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="seconds between each worker's job resumer passes (lease renewals, "
        "claims of jobs whose lease lapsed); keep it well under `JOB_LEASE_S`",
    )
    catalog_paths: list[Path] = Field(
        default_factory=list,
        description="extra catalog TOML files, comma-separated; later files override models "
        "by id ([docs/catalog.md](docs/catalog.md))",
    )
    list_all_models: bool = Field(
        default=False, description="list models whose vendor is not configured"
    )
    enable_test_models: bool = Field(
        default=True, description="offer the free `test/test` and `ir/test-video`"
    )
    models_page_hide_unavailable: bool = Field(
        default=False,
        description="leave models whose vendor is not configured out of `/models` and "
        '`/pricing`; shown as "not available on this server" by default',
    )
    pricing_url: str | None = Field(
        default=None,
        description="the pricing page named in insufficient-credit and free-tier messages; "
        "unset: this server's `/pricing` (`PUBLIC_URL`)",
    )

    @field_validator("catalog_paths", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(p) for p in value.replace(";", ",").split(",") if p.strip()]
        return value


class RoutingSettings(Group):
    attempt_timeout_s: float | None = Field(
        default=None,
        description="timeout of one vendor attempt, seconds; the next route is tried after "
        "it; unset: the deadline",
    )
    retry_backoff_s: float = Field(
        default=0.2,
        description="back-off before trying the same vendor again after it rate-limited us, "
        "seconds (doubles, capped at 2 s, jittered)",
    )
    circuit_failure_threshold: int = Field(
        default=5, description="consecutive failures that open a route's circuit"
    )
    circuit_cooldown_s: float = Field(
        default=30.0, description="seconds a route's circuit stays open before one probe"
    )
    poll_interval_s: float = Field(
        default=2.0,
        description="polling interval for asynchronous vendors, seconds; a failed status "
        "check is retried (back-off from twice this, capped at 16 s, jittered; 5 failures in "
        "a row give the job up and cancel it at the vendor)",
    )
    upstream_connect_timeout_s: float = Field(
        default=10.0, description="connect timeout of the vendor HTTP client, seconds"
    )
    upstream_max_connections: int = Field(
        default=4096, description="connection pool size of the vendor HTTP client"
    )
    # Off, output URLs on private addresses other than the serving vendor's own configured
    # host are refused: a vendor (or a proxy in its place) cannot make us fetch internals.
    allow_private_upstreams: bool = Field(
        default=False,
        description="fetch vendor output URLs from private addresses (loopback, RFC 1918, "
        "link-local) other than the serving vendor's own base-URL host, and deliver webhooks "
        "to them; off, such outputs are refused and not charged, such webhook URLs refused "
        "([docs/security.md](docs/security.md))",
    )
