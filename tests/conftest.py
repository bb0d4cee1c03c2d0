"""Shared fixtures: databases (SQLite and the real PostgreSQL), the gateway wired to fakes.

Every vendor call of an in-process gateway goes to the fakes of `tests/fakes` through one
`httpx.ASGITransport` (each fake mounted under `/<vendor>`): nothing is patched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import select, text
from starlette.applications import Starlette
from starlette.routing import Mount

from image_router.account import service as accounts
from image_router.account.personal_data import Vault
from image_router.app import create_app
from image_router.config import Settings
from image_router.db.key_store import KeyStore
from image_router.db.migrate import upgrade_sync
from image_router.db.session import unit_of_work
from image_router.db.tables import Generation
from image_router.kit.crypto import new_key
from image_router.kit.money import usd_to_credits
from image_router.ledger import service as ledger
from image_router.providers import PROVIDERS
from image_router.resources import Resources, build_resources
from image_router.usage import service as usage
from tests.fakes.contract import discover_cases
from tests.fakes.openai import FakeOpenAI
from tests.fakes.stripe import FakeStripe
from tests.fakes.upstream import FakeVendor

PG_ADMIN = os.environ.get("TEST_PG_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = (
    "generation_jobs",
    "generations",
    "ledger_entries",
    "api_keys",
    "topups",
    "stripe_events",
    "web_sessions",
    "password_resets",
    "banned_networks",
    "consents",
    "webhook_messages",
    "audit_log",
    "jobs",
    "export_archives",
    "data_subject_requests",
    "idempotency_keys",
    "webhook_deliveries",
    "webhook_endpoints",
    "webhook_secrets",
    "accounts",
)


def _pg_url(name: str) -> str:
    base = PG_ADMIN.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0]
    return f"{base}/{name}"


async def _recreate_pg(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per test session; each test gets a copy."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade_sync(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_database(worker_id: str) -> str:
    """One migrated PostgreSQL database per xdist worker."""
    # A prefix of its own keeps concurrent test runs on one machine from dropping each
    # other's databases.
    name = f"{os.environ.get('TEST_PG_DB_PREFIX', 'ir_test')}_{worker_id}"
    asyncio.run(_recreate_pg(name))
    upgrade_sync(_pg_url(name))
    return _pg_url(name)


async def _truncate(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {', '.join(TABLES)} CASCADE"))
    await engine.dispose()


def _database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copy(template, tmp_path / "gateway.db")
        return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    url: str = request.getfixturevalue("pg_database")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh SQLite database (the embedded default)."""
    return _database("sqlite", request, tmp_path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database of each kind: the test runs on SQLite and on PostgreSQL."""
    return _database(request.param, request, tmp_path)


def processing_row(
    generation_id: str,
    account_id: str,
    held: int,
    deadline_at: datetime,
    *,
    model: str = "test/test",
    provider: str = "test",
    quality: str | None = None,
    input_types: list[str] | None = None,
) -> usage.NewGeneration:
    """The usage row a request's hold opens, for tests that take or leave holds by hand."""
    return usage.NewGeneration(
        id=generation_id,
        account_id=account_id,
        api_key_id=None,
        via_web_token=False,
        modality="image",
        model=model,
        provider=provider,
        prompt_enc=None,
        content_expires_at=None,
        size="auto",
        quality=quality,
        seconds=None,
        input_types=input_types or [],
        held=held,
        ip=None,
        deadline_at=deadline_at,
    )


# ----------------------------------------------------------------------------- gateway


@dataclass
class Gateway:
    client: httpx.AsyncClient
    res: Resources
    openai: FakeOpenAI
    fakes: dict[str, FakeVendor] = field(default_factory=dict)

    async def account(
        self, usd: str = "0", *, email: str | None = None, key_name: str = "test key"
    ) -> tuple[str, str]:
        """A new account with `usd` of credit; returns (account id, API key)."""
        async with unit_of_work(self.res.engine) as conn:
            account = await accounts.create_account(
                conn, self.res.vault, email or f"user-{os.urandom(4).hex()}@example.com"
            )
            _, key = await accounts.create_key(conn, account.id, key_name)
            if usd != "0":
                await ledger.grant(conn, account.id, usd_to_credits(usd), reason="test")
        return account.id, key

    async def balance(self, account_id: str) -> int:
        async with unit_of_work(self.res.engine) as conn:
            return await ledger.balance(conn, account_id)

    async def ledger_sum(self, account_id: str) -> int:
        async with unit_of_work(self.res.engine) as conn:
            return await ledger.entries_sum(conn, account_id)

    async def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        async with unit_of_work(self.res.engine) as conn:
            return [dict(r._mapping) for r in (await conn.execute(text(sql), params)).all()]

    async def execute(self, sql: str, **params: Any) -> None:
        async with unit_of_work(self.res.engine) as conn:
            await conn.execute(text(sql), params)

    async def generations(self) -> list[dict[str, Any]]:
        """Usage rows, oldest first, with JSON columns decoded and the sealed prompt opened
        (as "prompt"; None when it was not stored)."""
        async with unit_of_work(self.res.engine) as conn:
            result = await conn.execute(select(Generation).order_by(Generation.created_at))
            rows = [dict(r._mapping) for r in result.all()]
            for row in rows:
                row["prompt"] = await self.res.vault.open(row["account_id"], row["prompt_enc"])
            return rows

    async def post(self, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return await self.client.post(path, headers=headers, **kwargs)


def vault_for_tests(folder: Path) -> Vault:
    """A vault with fresh keys and its own key store (a SQLite file in `folder`)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Vault(new_key(), new_key(), KeyStore(f"sqlite+aiosqlite:///{folder / 'keys.db'}"))


def gateway_settings(db: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": db,
        "public_url": "http://gateway.test",
        "auto_migrate": False,
        "openai_api_key": FakeOpenAI().api_key,
        "openai_base_url": "http://fakes/openai/v1",
        "heartbeat_after_s": 20.0,
        "storage_url": None,
        # The per-account limiter would refuse the concurrency suites (6/s at $1); the
        # limits tests opt in.
        "rate_limits_enabled": False,
        # Website tokens without the proof of work; the human-check tests opt in.
        "human_check": "off",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def fakes_transport(
    openai: FakeOpenAI, others: dict[str, FakeVendor] | None = None
) -> httpx.ASGITransport:
    """OpenAI's fake under `/openai`, and each of `others` under `/<name>`."""
    mounts = [Mount(f"/{name}", app=fake.app) for name, fake in (others or {}).items()]
    return httpx.ASGITransport(app=Starlette(routes=[*mounts, Mount("/openai", app=openai.app)]))


@pytest.fixture
def gateway_overrides() -> dict[str, Any]:
    """Override settings for the `gateway` fixture (parametrize or redefine in a module)."""
    return {}


async def _gateway(
    db: str, tmp_path: Path, overrides: dict[str, Any], fakes: dict[str, FakeVendor] | None = None
) -> AsyncIterator[Gateway]:
    openai = FakeOpenAI()
    fakes = fakes or {}
    settings = gateway_settings(db, tmp_path / "data", **overrides)
    res = build_resources(settings, http_transport=fakes_transport(openai, fakes))
    app = create_app(settings, resources=res)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
        ) as client,
    ):
        yield Gateway(client=client, res=res, openai=openai, fakes=dict(fakes))


@pytest.fixture
async def gateway(
    db_url: str, tmp_path: Path, gateway_overrides: dict[str, Any]
) -> AsyncIterator[Gateway]:
    """The gateway in-process on SQLite, vendors served by fakes."""
    async for gw in _gateway(db_url, tmp_path, gateway_overrides):
        yield gw


def vendor_settings(root: str) -> dict[str, Any]:
    """Settings that point every vendor with a fake at its fake under `root/<vendor>`."""
    values: dict[str, Any] = {"poll_interval_s": 0.0}
    for case in discover_cases():
        declared = PROVIDERS[case.id]
        values[declared.key_env] = case.credential
        values[declared.base_url_env[0]] = f"{root}/{case.id}{case.base_path}"
        for name, value in case.extra.items():
            if name in declared.extra_env:
                values[declared.extra_env[name]] = value.replace("{root}", f"{root}/{case.id}")
    return values


@pytest.fixture
async def vendors_gateway(
    db_url: str, tmp_path: Path, gateway_overrides: dict[str, Any]
) -> AsyncIterator[Gateway]:
    """The gateway on SQLite with every vendor configured, each served by its fake."""
    async for gw in _vendors_gateway(db_url, tmp_path, gateway_overrides):
        yield gw


@pytest.fixture
async def any_vendors_gateway(
    any_db_url: str, tmp_path: Path, gateway_overrides: dict[str, Any]
) -> AsyncIterator[Gateway]:
    """`vendors_gateway` on SQLite and on PostgreSQL."""
    async for gw in _vendors_gateway(any_db_url, tmp_path, gateway_overrides):
        yield gw


async def _vendors_gateway(
    db_url: str, tmp_path: Path, gateway_overrides: dict[str, Any]
) -> AsyncIterator[Gateway]:
    fakes = {case.id: case.make_fake() for case in reversed(discover_cases())}
    transport = httpx.ASGITransport(
        app=Starlette(routes=[Mount(f"/{pid}", app=fake.app) for pid, fake in fakes.items()])
    )
    settings = gateway_settings(
        db_url, tmp_path / "data", **(vendor_settings("http://fakes") | gateway_overrides)
    )
    res = build_resources(settings, http_transport=transport)
    app = create_app(settings, resources=res)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway.test"
        ) as client,
    ):
        openai = fakes["openai"]
        assert isinstance(openai, FakeOpenAI)
        yield Gateway(client=client, res=res, openai=openai, fakes=fakes)


@pytest.fixture
def pg_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh PostgreSQL database (for what only PostgreSQL has)."""
    return _database("postgres", request, tmp_path)


@pytest.fixture
async def pg_gateway(
    pg_db_url: str, tmp_path: Path, gateway_overrides: dict[str, Any]
) -> AsyncIterator[Gateway]:
    """The gateway on PostgreSQL only (mark the test `postgres`)."""
    async for gw in _gateway(pg_db_url, tmp_path, gateway_overrides):
        yield gw


@pytest.fixture
async def any_gateway(
    any_db_url: str, tmp_path: Path, gateway_overrides: dict[str, Any]
) -> AsyncIterator[Gateway]:
    """The gateway on SQLite and on PostgreSQL."""
    async for gw in _gateway(any_db_url, tmp_path, gateway_overrides):
        yield gw


STRIPE_WEBHOOK_SECRET = "whsec_test_gateway_0123456789abcdef"


def stripe_settings(root: str) -> dict[str, Any]:
    """Settings for Stripe payments with the fake Stripe served under `root/stripe`."""
    return {
        "payments_provider": "stripe",
        "stripe_secret_key": FakeStripe().secret_key,
        "stripe_webhook_secret": STRIPE_WEBHOOK_SECRET,
        "stripe_api_base": f"{root}/stripe",
        "site_url": "http://site.test",
    }


@pytest.fixture
async def stripe_gateway(
    any_db_url: str, tmp_path: Path, gateway_overrides: dict[str, Any]
) -> AsyncIterator[Gateway]:
    """The gateway on SQLite and on PostgreSQL with Stripe payments; `fakes["stripe"]`."""
    overrides = stripe_settings("http://fakes") | gateway_overrides
    async for gw in _gateway(any_db_url, tmp_path, overrides, {"stripe": FakeStripe()}):
        yield gw
