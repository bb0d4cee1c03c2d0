"""Sizes and `n` a model takes: the catalog's lists, side bounds and `max_n` (docs/catalog.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_router.catalog.loader import load_catalog
from image_router.catalog.spec import Catalog, CatalogError
from image_router.kit.sizes import MAX_SIDE, MIN_SIDE, is_size, parse_size

CATALOG: Catalog = load_catalog()

ROUTE = """
  [[model.routes]]
  provider = "test"
  upstream = "test/test"
  price = { rule = "fixed", usd = "0.01" }
"""


def load(tmp_path: Path, entry: str) -> Catalog:
    path = tmp_path / "extra.toml"
    path.write_text('modality = "image"\n[[model]]\nid = "acme/x"\n' + entry + ROUTE)
    return load_catalog([path])


@pytest.mark.parametrize("text", ["１０２４x１０２４", "1024x١٠٢٤", "0x", "1" * 40 + "x1"])
def test_only_ascii_digits_make_a_size(text: str) -> None:
    assert not is_size(text)
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("openai/dall-e-2", "1536x1024"),
        ("openai/dall-e-2", "1024x1536"),
        ("openai/dall-e-3", "1536x1024"),
        ("zai/glm-image", "512x512"),
        ("zai/glm-image", "1024x768"),
        ("zai/glm-image", "576x1024"),
        ("zai/glm-image", "1040x1040"),  # in range, not a multiple of 32
        ("test/test", "4096x4096"),
        ("test/test", "0x0"),
        ("black-forest-labs/FLUX-1-schnell", "99999x99999"),
        ("black-forest-labs/FLUX-1-schnell", "10000000000000000000000x1"),
        ("black-forest-labs/FLUX-1-schnell", f"{MIN_SIDE - 1}x512"),
        ("black-forest-labs/FLUX-1-schnell", f"512x{MAX_SIDE + 1}"),
        ("tencent/hunyuan-video-1.5", "1920x1080"),
    ],
)
def test_sizes_the_vendor_refuses_are_refused(model: str, size: str) -> None:
    refusal = CATALOG.models[model].size_refusal(size)
    assert refusal is not None and refusal.startswith(f"'size' {size} is not supported by")


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("openai/dall-e-2", "auto"),
        ("openai/dall-e-2", "256x256"),
        ("openai/dall-e-2", "512x512"),
        ("openai/dall-e-3", "1792x1024"),
        ("openai/dall-e-3", "1024x1792"),
        ("zai/glm-image", "1280x1280"),
        ("zai/glm-image", "1088x1120"),  # unlisted, but within Z.ai's bounds
        ("test/test", "16x16"),
        ("test/test", "2048x2048"),
        ("black-forest-labs/FLUX-1-schnell", f"{MIN_SIDE}x{MAX_SIDE}"),
        ("google/gemini-3-pro", "6336x2688"),  # a listed size may exceed the global bounds
    ],
)
def test_sizes_the_vendor_takes_are_taken(model: str, size: str) -> None:
    assert CATALOG.models[model].size_refusal(size) is None


def test_every_listed_size_is_admitted_by_its_own_model() -> None:
    for spec in CATALOG.models.values():
        for size in spec.sizes or ():
            assert spec.size_refusal(size) is None, (spec.id, size)


def test_max_n_comes_from_the_catalog() -> None:
    assert CATALOG.models["openai/dall-e-2"].max_n == 10
    assert CATALOG.models["test/test"].max_n == 4
    assert CATALOG.models["openai/dall-e-3"].max_n == 1
    assert CATALOG.models["ir/test-video"].max_n == 1


def test_model_bounds_are_loaded(tmp_path: Path) -> None:
    spec = load(tmp_path, "min_side = 256\nmax_side = 1024\nside_step = 64\nmax_n = 3\n")
    model = spec.models["acme/x"]
    assert model.max_n == 3
    assert model.size_refusal("512x768") is None
    assert model.size_refusal("512x800") is not None
    assert model.size_refusal("128x512") is not None


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("max_n = 0\n", "acme/x: 'max_n' must be a whole number from 1 to 10"),
        ("max_n = 11\n", "acme/x: 'max_n' must be a whole number from 1 to 10"),
        ("max_n = true\n", "acme/x: 'max_n' must be a whole number from 1 to 10"),
        ("min_side = 0\n", "acme/x: 'min_side' must be a whole number of pixels"),
        ("min_side = 512\nmax_side = 256\n", "acme/x: 'min_side' 512 is above 'max_side' 256"),
        (
            'sizes = ["512x512"]\nmin_side = 1024\n',
            "acme/x: size '512x512' is outside the model's bounds",
        ),
    ],
)
def test_bad_bounds_stop_the_load(tmp_path: Path, entry: str, reason: str) -> None:
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, entry)
    assert str(caught.value).startswith(reason), caught.value


def test_video_models_make_one_video(tmp_path: Path) -> None:
    path = tmp_path / "extra.toml"
    path.write_text(
        'modality = "video"\n[[model]]\nid = "acme/v"\nseconds = [5]\ndefault_seconds = 5\n'
        "max_n = 2\n" + ROUTE.replace("test/test", "ir/test-video")
    )
    with pytest.raises(CatalogError, match="acme/v: video models make one video"):
        load_catalog([path])
