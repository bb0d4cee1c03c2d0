"""Fallback routes priced above their model's first route, and `catalog check` listing them."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from image_router.catalog.fallbacks import dearer_fallbacks
from image_router.catalog.loader import load_catalog
from image_router.cli import app

# The models issue #10 found with a fallback dearer than the first route's hold.
ISSUE_MODELS = {
    "bria/remove-background": "deepinfra",
    "stabilityai/sdxl-turbo": "runware",
    "leonardoai/lucid-origin": "nanogpt",
    "google/imagen-3": "vertex",
    "google/gemini-2.5-flash": "runware",
    "Tongyi-MAI/Z-Image-Turbo": "replicate",
    "qwen/qwen-image": "fal",
    "tencent/hunyuan-image-3": "replicate",
    "google/veo-3.1-fast": "vertex",
}

CATALOG = """
[[model]]
id = "ops/by-length"
modality = "video"
release_date = "2026-01-01"
seconds = [4, 8]
default_seconds = 4

  [[model.routes]]
  provider = "test"
  upstream = "a"
  price.rule = "per_second"
  price.usd = "0.15"
  price.range = { min = "0.6", average = "0.9", max = "1.2" }

  [[model.routes]]
  provider = "test"
  upstream = "dearer-for-short-videos"
  price = { rule = "fixed", usd = "1.0" }

  [[model.routes]]
  provider = "test"
  upstream = "never-dearer"
  price = { rule = "fixed", usd = "0.6" }
"""


def test_the_packaged_catalog_lists_the_dearer_fallbacks() -> None:
    catalog = load_catalog([])
    found = {
        spec.id: {d.route.provider for d in dearer_fallbacks(spec)}
        for spec in catalog.models.values()
    }
    for model, provider in ISSUE_MODELS.items():
        assert provider in found[model], model
    assert found["openai/dall-e-3"] == set()


def test_a_route_is_dearer_when_it_is_for_some_request(tmp_path: Path) -> None:
    path = tmp_path / "ops.toml"
    path.write_text(CATALOG, encoding="utf-8")
    [found] = dearer_fallbacks(load_catalog([path]).models["ops/by-length"])
    # 4 s at $0.15 holds $0.60 on the first route; 8 s ($1.20) would cover the fallback.
    assert found.route.upstream == "dearer-for-short-videos"
    assert (found.usd, found.first_usd) == (Decimal("1.0"), Decimal("0.60"))


def test_catalog_check_lists_them_before_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["catalog", "check"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].endswith("models enabled")
    assert (
        "    google/veo-3.1-fast → vertex veo-3.1-fast-generate-preview: up to $1.2 where the "
        "first route holds $0.6"
    ) in lines
    assert any(line.endswith("only when the account can pay the difference):") for line in lines)
