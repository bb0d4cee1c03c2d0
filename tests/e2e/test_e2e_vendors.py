"""Every vendor end to end: the real server process, every vendor's host pointed at its fake
over loopback, one generation per vendor (and one video per video vendor) through the
public API — charged the right price, output stored, request logged.

Vendors are discovered from the fakes' `CONTRACT_CASES`, so a new provider is covered here
as soon as it has a fake. Vendors that no catalog model uses first (or at all) are reached
through an operator catalog file (`CATALOG_PATHS`), which also exercises overrides.
"""

from __future__ import annotations

import io
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Mount

from image_router.catalog.loader import load_catalog
from image_router.catalog.pricing import PriceFacts, quote
from image_router.catalog.spec import ModelSpec
from image_router.kit.money import usd_to_credits
from image_router.providers import PROVIDERS
from tests.e2e.conftest import BIN, base_env, free_port, start_server
from tests.fakes.contract import ContractCase, discover_cases
from tests.fakes.upstream import FakeVendor, serve_in_thread

pytestmark = pytest.mark.e2e

# One case per registered provider (a vendor may declare several contract cases).
CASES = list({c.id: c for c in reversed(discover_cases()) if c.id in PROVIDERS}.values())


@dataclass(frozen=True)
class Target:
    case: ContractCase
    model: str
    modality: str


def _first_route_model(provider: str, modality: str) -> str | None:
    for spec in load_catalog().models.values():
        first = spec.routes[0].provider == provider
        if spec.modality == modality and first and not spec.free and _quotable(spec):
            return spec.id
    return None


def _quotable(spec: ModelSpec) -> bool:
    facts = PriceFacts(
        size=_size(spec),
        quality="auto",
        image_count=0,
        prompt_chars=10,
        seconds=spec.default_seconds,
    )
    try:
        quote(spec.routes[0].price, facts)
    except ValueError:
        return False
    return True


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 90, 160)).save(out, "PNG")
    return out.getvalue()


def _size(spec: ModelSpec) -> str:
    sizes = [s for s in (spec.sizes or ()) if s != "auto"]
    return sizes[0] if sizes else "auto"


def _targets() -> list[Target]:
    """One image and one video target per vendor that offers the modality.

    A vendor no shipped model routes to first gets an operator model whose upstream is the
    one its contract case of that modality uses.
    """
    targets = []
    cases = [c for c in discover_cases() if c.id in PROVIDERS]
    for provider_id in dict.fromkeys(c.id for c in cases):
        for modality in ("image", "video"):
            case = next(
                (c for c in cases if c.id == provider_id and c.job.modality == modality), None
            )
            model = _first_route_model(provider_id, modality)
            if model is None and case is not None:
                model = f"e2e/{provider_id}-{modality}"
            if model is not None:
                any_case = case or next(c for c in cases if c.id == provider_id)
                targets.append(Target(any_case, model, modality))
    return targets


TARGETS = _targets()


def _operator_catalog(path: Path) -> Path:
    """Models for vendors the shipped catalog never routes to first."""
    lines = []
    for target in TARGETS:
        if not target.model.startswith("e2e/"):
            continue
        lines += [
            "[[model]]",
            f'id = "{target.model}"',
            f'modality = "{target.modality}"',
            'release_date = "2026-01-01"',
        ]
        if target.modality == "video":
            seconds = int(target.case.job.seconds or 5)
            lines += [f"seconds = [{seconds}]", f"default_seconds = {seconds}"]
        lines += [
            "[[model.routes]]",
            f'provider = "{target.case.id}"',
            f'upstream = "{target.case.target.upstream}"',
            'price = { rule = "fixed", usd = "0.01" }',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


@dataclass
class Deployment:
    url: str
    data_dir: Path
    key: str
    fakes: dict[str, FakeVendor]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    fakes = {case.id: case.make_fake() for case in CASES}
    app = Starlette(routes=[Mount(f"/{pid}", app=fake.app) for pid, fake in fakes.items()])
    with serve_in_thread(app) as root:
        data_dir = tmp_path_factory.mktemp("vendors")
        env = base_env(data_dir, f"{root}/openai")
        env["CATALOG_PATHS"] = str(_operator_catalog(data_dir / "operator.toml"))
        env["POLL_INTERVAL_S"] = "0.01"
        for case in CASES:
            fake_root = f"{root}/{case.id}"
            declared = PROVIDERS[case.id]
            env[declared.key_env] = case.credential
            env[declared.base_url_env[0]] = fake_root + case.base_path
            for name, value in case.extra.items():
                if name in declared.extra_env:
                    env[declared.extra_env[name]] = value.replace("{root}", fake_root)
        port = free_port()
        process, key = start_server(env, port)
        assert key is not None
        try:
            yield Deployment(f"http://127.0.0.1:{port}", data_dir, key, fakes)
        finally:
            process.terminate()
            process.wait(timeout=15)
            if process.stdout:
                process.stdout.close()


def _grant(deployment: Deployment, usd: str) -> None:
    env = base_env(deployment.data_dir, "http://unused")
    subprocess.run(
        [str(BIN), "credits", "grant", "admin@localhost", usd, "--reason", "e2e"],
        env=env,
        check=True,
        capture_output=True,
    )


def _balance(deployment: Deployment) -> int:
    with sqlite3.connect(deployment.data_dir / "image-router.db") as db:
        return int(db.execute("SELECT balance FROM accounts WHERE role = 'admin'").fetchone()[0])


def _row(deployment: Deployment, gid_hint: str) -> tuple[str, str, int, str]:
    with sqlite3.connect(deployment.data_dir / "image-router.db") as db:
        row = db.execute(
            "SELECT status, provider, cost, output_urls FROM generations WHERE model = ? "
            "ORDER BY created_at DESC LIMIT 1",
            (gid_hint,),
        ).fetchone()
    return row[0], row[1], int(row[2]), row[3]


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: f"{t.case.id}-{t.modality}")
def test_vendor_generates_through_the_public_api(deployment: Deployment, target: Target) -> None:
    _grant(deployment, "20")
    before = _balance(deployment)
    spec = load_catalog([deployment.data_dir / "operator.toml"]).get(target.model)
    assert spec is not None
    path = (
        "/v1/openai/videos/generations"
        if target.modality == "video"
        else ("/v1/openai/images/generations")
    )
    fields = {"model": target.model, "prompt": "a calm lake", "size": _size(spec)}
    # Some models only edit (e.g. wavespeed/ghibli): send an image wherever one is taken.
    files = {"image": ("in.png", _png(), "image/png")} if spec.routes[0].image_input else None
    response = httpx.post(
        deployment.url + path,
        headers={"Authorization": f"Bearer {deployment.key}"},
        data=fields,
        files=files,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    url = answer["data"][0]["url"]
    stored = httpx.get(url)
    assert stored.status_code == 200
    assert stored.headers["content-type"].startswith(target.modality)
    status, provider, cost, output_urls = _row(deployment, target.model)
    assert (status, provider) == ("success", target.case.id)
    assert url in output_urls
    charged = before - _balance(deployment)
    assert charged == cost == usd_to_credits(Decimal(str(answer["cost"])))
    facts = PriceFacts(
        size=_size(spec),
        quality="auto",
        image_count=1 if files else 0,
        prompt_chars=11,
        seconds=spec.default_seconds,
    )
    assert 0 < cost <= usd_to_credits(quote(spec.routes[0].price, facts))


def test_a_client_that_hangs_up_and_cancels_the_job_gets_the_vendor_job_cancelled(
    deployment: Deployment,
) -> None:
    """fal keeps the job queued; the client gives up: the job runs on (docs/jobs.md) until
    the client cancels it, which cancels it at fal and releases the hold."""
    _grant(deployment, "1")
    before = _balance(deployment)
    fal = deployment.fakes["fal"]
    fal.polls_before_done = 1_000_000  # type: ignore[attr-defined]
    auth = {"Authorization": f"Bearer {deployment.key}"}
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(
                deployment.url + "/v1/openai/images/generations",
                headers=auth,
                json={"model": "recraft-ai/recraft-v3", "prompt": "never finishes"},
                timeout=1.0,
            )
        time.sleep(0.5)
        assert not fal.cancelled  # type: ignore[attr-defined]  # a hang-up cancels nothing
        running = {"status": "running"}
        [job] = httpx.get(deployment.url + "/v1/jobs", params=running, headers=auth).json()["data"]
        assert job["model"] == "recraft-ai/recraft-v3"
        cancelled = httpx.post(f"{deployment.url}/v1/jobs/{job['id']}/cancel", headers=auth)
        assert cancelled.json()["status"] == "cancelled"
        deadline = time.monotonic() + 5
        while not fal.cancelled:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "fal never saw a cancel request"
            time.sleep(0.05)
        while _balance(deployment) != before:
            assert time.monotonic() < deadline, "the hold was not released"
            time.sleep(0.05)
    finally:
        fal.polls_before_done = 2  # type: ignore[attr-defined]
