"""Loading operator catalog files: overrides, and every mistake named by its model id."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from image_router.catalog.loader import load_catalog
from image_router.catalog.pricing import PriceFacts, quote
from image_router.catalog.spec import CatalogError

GOOD_ROUTE = """
  [[model.routes]]
  provider = "test"
  upstream = "test/test"
  price = { rule = "fixed", usd = "0.01" }
"""


def write(tmp_path: Path, text: str, name: str = "extra.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(CatalogError) as caught:
        load_catalog([write(tmp_path, text)])
    return str(caught.value)


def test_override_replaces_an_entry_in_place_and_adds_new_ones(tmp_path: Path) -> None:
    extra = write(
        tmp_path,
        """
modality = "image"

[[model]]
id = "openai/dall-e-3"
release_date = "2030-01-01"

  [[model.routes]]
  provider = "openai"
  upstream = "dall-e-3"
  price = { rule = "fixed", usd = "0.05" }

[[model]]
id = "acme/brand-new"
"""
        + GOOD_ROUTE
        + """
[[model]]
id = "acme/new-video"
modality = "video"
seconds = [2, 4]
default_seconds = 4
"""
        + GOOD_ROUTE
        + """
[aliases]
"acme/new" = "acme/brand-new"
""",
    )
    base = load_catalog()
    catalog = load_catalog([extra])
    ids = list(catalog.models)
    # replaced wholesale, in its original place
    assert ids.index("openai/dall-e-3") == list(base.models).index("openai/dall-e-3")
    dalle3 = catalog.models["openai/dall-e-3"]
    assert dalle3.release_date == "2030-01-01"
    assert dalle3.sizes is None
    assert dalle3.routes[0].quality is None
    facts = PriceFacts(size="auto", quality="high", image_count=0, prompt_chars=1, seconds=None)
    assert quote(dalle3.routes[0].price, facts) == Decimal("0.05")
    # new image models come after the packaged images, new videos after the videos
    assert ids[115] == "acme/brand-new"
    assert ids[-1] == "acme/new-video"
    assert len(ids) == 147
    assert catalog.resolve("acme/new") == "acme/brand-new"
    assert catalog.resolve("gemini-3-pro-image") == "google/gemini-3-pro"


def test_later_override_files_win(tmp_path: Path) -> None:
    first = write(
        tmp_path,
        'modality = "image"\n[[model]]\nid = "acme/x"\nrelease_date = "2001-01-01"\n' + GOOD_ROUTE,
        "a.toml",
    )
    second = write(
        tmp_path,
        'modality = "image"\n[[model]]\nid = "acme/x"\nrelease_date = "2002-02-02"\n' + GOOD_ROUTE,
        "b.toml",
    )
    model = load_catalog([first, second]).models["acme/x"]
    assert model.release_date == "2002-02-02"


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (
            '[[model]]\nid = "acme/x"\n' + GOOD_ROUTE + '[[model]]\nid = "acme/x"\n' + GOOD_ROUTE,
            "acme/x: duplicate id",
        ),
        (
            '[[model]]\nid = "acme/x"\n' + GOOD_ROUTE.replace('usd = "0.01"', "usd = 0.01"),
            "acme/x: route 1: fixed.usd must be a USD string",
        ),
        (
            '[[model]]\nid = "acme/x"\nsizes = ["1024x1024", "big"]\n' + GOOD_ROUTE,
            "acme/x: size 'big' is not 'auto' or WIDTHxHEIGHT",
        ),
        (
            '[[model]]\nid = "acme/x"\n'
            + GOOD_ROUTE
            + '  quality = { param = "steps", values = { ultra = 50 } }\n',
            "acme/x: route 1: quality values has unknown keys ['ultra']",
        ),
        (
            '[[model]]\nid = "acme/x"\n'
            + GOOD_ROUTE
            + '  quality = { param = "steps", refuse = { best = "no" } }\n',
            "acme/x: route 1: quality refuse has unknown keys ['best']",
        ),
        (
            '[[model]]\nid = "acme/v"\nmodality = "video"\n' + GOOD_ROUTE,
            "acme/v: video models need a non-empty 'seconds' list",
        ),
        (
            '[[model]]\nid = "acme/v"\nmodality = "video"\nseconds = [4, 8]\n'
            "default_seconds = 5\n" + GOOD_ROUTE,
            "acme/v: 'default_seconds' must be one of 'seconds'",
        ),
        (
            '[[model]]\nid = "acme/x"\nmodality = "audio"\n' + GOOD_ROUTE,
            "acme/x: unknown modality 'audio'",
        ),
        ('[[model]]\nid = "acme/x"\n', "acme/x: needs at least one [[model.routes]]"),
        (
            '[[model]]\nid = "acme/x"\n' + GOOD_ROUTE.replace('"fixed"', '"per_pixel"'),
            "acme/x: route 1: unknown price rule 'per_pixel'",
        ),
        (
            '[[model]]\nid = "acme/x"\n'
            + GOOD_ROUTE.replace(
                'price = { rule = "fixed", usd = "0.01" }',
                'price = { rule = "upstream_cost", range = '
                '{ min = "0.5", average = "0.1", max = "0.2" } }',
            ),
            "acme/x: route 1: upstream_cost.range: min 0.5 is above max 0.2",
        ),
        (
            '[[model]]\nid = "acme/x"\n'
            + GOOD_ROUTE.replace(
                'price = { rule = "fixed", usd = "0.01" }',
                'price = { rule = "by_size", usd = { "1024x1024" = "0.02" } }',
            ),
            "acme/x: route 1: price rule 'by_size': every lookup table needs a \"*\" entry",
        ),
        (
            '[[model]]\nid = "acme/x"\n'
            + GOOD_ROUTE.replace(
                'price = { rule = "fixed", usd = "0.01" }', 'price = { rule = "upstream_cost" }'
            ),
            "acme/x: route 1: price rule 'upstream_cost' needs a published range or value",
        ),
        (
            '[[model]]\nid = "acme/x"\n' + GOOD_ROUTE.replace('usd = "0.01"', 'usd = "-1"'),
            "acme/x: route 1: fixed.usd: '-1' must be a finite amount",
        ),
        (
            '[[model]]\nid = "acme/x"\n' + GOOD_ROUTE + '  upstrem = "typo"\n',
            "acme/x: route 1: route has unknown keys ['upstrem']",
        ),
        (
            '[[model]]\nid = "acme/x"\nsecond = [5]\n' + GOOD_ROUTE,
            "acme/x: model has unknown keys ['second']",
        ),
        (
            '[[model]]\nid = "acme/x"\n' + GOOD_ROUTE + '  image_input = "x"\n  max_images = 0\n',
            "acme/x: route 1: 'max_images' must be at least 1",
        ),
    ],
)
def test_invalid_entries_name_the_model_and_the_reason(
    tmp_path: Path, entry: str, reason: str
) -> None:
    message = load_error(tmp_path, 'modality = "image"\n' + entry)
    assert message.startswith(reason), message


def test_images_take_no_seconds(tmp_path: Path) -> None:
    message = load_error(
        tmp_path, '[[model]]\nid = "acme/x"\nmodality = "image"\nseconds = [5]\n' + GOOD_ROUTE
    )
    assert message.startswith("acme/x: image models take no 'seconds'")


def test_a_model_needs_a_modality(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[[model]]\nid = "acme/x"\n' + GOOD_ROUTE)
    assert message.startswith("acme/x: no modality")


def test_aliases_must_point_to_a_model(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[aliases]\n"acme/short" = "acme/missing"\n')
    assert message.startswith("acme/short: alias points to unknown model 'acme/missing'")
    allowed = write(
        tmp_path,
        'unregistered_alias_targets = ["acme/missing"]\n[aliases]\n"acme/short" = "acme/missing"\n',
        "allowed.toml",
    )
    assert load_catalog([allowed]).resolve("acme/short") == "acme/missing"


def test_a_retired_id_cannot_be_live(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[retired]\n"openai/dall-e-3" = "gone"\n')
    assert message.startswith("openai/dall-e-3: is both a live model and retired")


def test_an_alias_cannot_shadow_a_model(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[aliases]\n"openai/dall-e-3" = "openai/dall-e-2"\n')
    assert message.startswith("openai/dall-e-3: is both a model and an alias")


def test_unknown_top_level_keys_and_bad_toml_name_the_file(tmp_path: Path) -> None:
    assert "extra.toml: unknown top-level keys ['models']" in load_error(
        tmp_path, "[[models]]\nid = 'x'\n"
    )
    assert "extra.toml: not valid TOML" in load_error(tmp_path, "[[model]\n")


def test_image_inputs_are_checked_for_known_providers_only() -> None:
    everything = {
        "openai": frozenset({"multipart"}),
        "test": frozenset({"passthrough"}),
    }
    catalog = load_catalog(image_inputs=everything)  # runware, fal... are unknown: fine
    assert len(catalog.models) == 145
    with pytest.raises(CatalogError) as caught:
        load_catalog(image_inputs={"openai": frozenset({"json_urls"})})
    assert str(caught.value).startswith(
        "openai/gpt-image-1: route 2: provider 'openai' does not understand image_input 'multipart'"
    )
