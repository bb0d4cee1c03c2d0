"""Route conditions (`prefer_when`): validated at load, and the reference's two preferences
(spec §7.1) expressed as catalog data."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_router.catalog.loader import load_catalog
from image_router.catalog.spec import CatalogError, RouteCondition

ROUTES = """
  [[model.routes]]
  provider = "runware"
  upstream = "acme:1@1"
  price = { rule = "fixed", usd = "0.01" }
  image_input = "inputs_reference_images"

  [[model.routes]]
  provider = "grok"
  upstream = "acme-image"
  price = { rule = "fixed", usd = "0.02" }
  image_input = "single_data_uri"
  max_images = 1
"""


def load(tmp_path: Path, condition: str, sizes: str = '["1024x1024"]') -> None:
    path = tmp_path / "extra.toml"
    text = f'modality = "image"\n[[model]]\nid = "acme/x"\nsizes = {sizes}\n{ROUTES}'
    path.write_text(text + f"  prefer_when = {condition}\n", encoding="utf-8")
    load_catalog([path])


def test_a_valid_condition_is_loaded_normalised(tmp_path: Path) -> None:
    path = tmp_path / "extra.toml"
    path.write_text(
        'modality = "image"\n[[model]]\nid = "acme/x"\nsizes = ["1024x1024"]\n'
        + ROUTES
        + '  prefer_when = { images = true, size = ["auto", "1024X1024"] }\n',
        encoding="utf-8",
    )
    spec = load_catalog([path]).models["acme/x"]
    assert spec.routes[0].prefer_when is None
    assert spec.routes[1].prefer_when == RouteCondition(
        images=True, sizes=frozenset({"auto", "1024x1024"})
    )


@pytest.mark.parametrize(
    ("condition", "reason"),
    [
        ("{ image = true }", "acme/x: route 2: prefer_when has unknown keys ['image']"),
        ("{ images = 1 }", "acme/x: route 2: prefer_when 'images' must be true or false"),
        ('{ size = "auto" }', "acme/x: route 2: prefer_when 'size' must list"),
        ('{ size = ["big"] }', "acme/x: route 2: prefer_when 'size' must list"),
        ("{}", "acme/x: route 2: 'prefer_when' must be a table"),
        ('"always"', "acme/x: route 2: 'prefer_when' must be a table"),
        (
            '{ size = ["720x480"] }',
            "acme/x: route 2: prefer_when size ['720x480'] is not in the model's sizes",
        ),
    ],
)
def test_a_bad_condition_stops_the_load_naming_model_and_route(
    tmp_path: Path, condition: str, reason: str
) -> None:
    with pytest.raises(CatalogError) as caught:
        load(tmp_path, condition)
    assert str(caught.value).startswith(reason), caught.value


def test_a_condition_holds_only_when_every_part_does() -> None:
    both = RouteCondition(images=True, sizes=frozenset({"auto"}))
    assert both.holds(has_images=True, size="auto")
    assert not both.holds(has_images=False, size="auto")
    assert not both.holds(has_images=True, size="1024x1024")
    assert RouteCondition(sizes=frozenset({"720x480"})).holds(has_images=True, size="720x480")


def test_the_packaged_catalog_carries_the_references_grok_preferences() -> None:
    catalog = load_catalog()
    image = catalog.models["xAI/grok-imagine-image"]
    assert [r.prefer_when for r in image.routes] == [
        None,
        RouteCondition(images=True, sizes=frozenset({"auto"})),
    ]
    assert image.routes[1].provider == "grok"
    video = catalog.models["xAI/grok-imagine-video"]
    assert [r.prefer_when for r in video.routes] == [
        None,
        RouteCondition(sizes=frozenset({"720x480"})),
    ]
    assert video.routes[1].provider == "grok"
