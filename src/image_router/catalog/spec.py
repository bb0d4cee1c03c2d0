"""The model catalog as the gateway sees it: models, their ordered routes, aliases.

Entries come from TOML data files (`catalog/data/*.toml`, see `docs/catalog.md`) and are
validated by `load_catalog`; every object here is immutable once loaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from image_router.catalog.pricing import PriceRule
from image_router.kit.sizes import SideBounds, parse_size

QUALITIES = ("auto", "low", "medium", "high")
Modality = Literal["image", "video"]


class CatalogError(ValueError):
    """A catalog entry is invalid. The message starts with the offending model id."""


@dataclass(frozen=True)
class QualityMap:
    """How a route turns the request's `quality` into a vendor option.

    `values` maps a quality to the value of `param`; a quality without an entry uses the
    `medium` entry (the reference's `steps[q] ?? steps.medium`). A value of None means
    "do not send the option". `refuse` holds the qualities the route rejects, with the
    message the client sees. `param = "model"` switches the upstream model instead.
    """

    param: str
    values: Mapping[str, Any]
    refuse: Mapping[str, str]

    def value_for(self, quality: str) -> tuple[bool, Any]:
        """(found, value) for a quality, falling back to the `medium` entry."""
        if quality in self.values:
            return True, self.values[quality]
        if "medium" in self.values:
            return True, self.values["medium"]
        return False, None


@dataclass(frozen=True)
class RouteCondition:
    """When a route goes ahead of the catalog order (`prefer_when`, the reference's
    `selectProvider`, spec §7.1). Every condition given must hold; None = not checked."""

    images: bool | None = None  # the request has (true) or has no (false) input image
    sizes: frozenset[str] | None = None  # the request's size is one of these ("auto" too)

    def holds(self, *, has_images: bool, size: str) -> bool:
        if self.images is not None and self.images != has_images:
            return False
        return self.sizes is None or size in self.sizes


@dataclass(frozen=True)
class Route:
    """One way to serve a model: a provider, its upstream model name and price."""

    provider: str
    upstream: str
    price: PriceRule
    image_input: str | None
    max_images: int
    mask: bool
    quality: QualityMap | None
    options: Mapping[str, Any]
    prefer_when: RouteCondition | None = None

    def resolve(self, quality: str) -> dict[str, Any]:
        """Route options with the quality mapping applied.

        A quality mapped to None keeps its key with the value None (= do not send). When
        the mapping switches models the new name is under the key "upstream".
        """
        resolved = dict(self.options)
        if self.quality is None:
            return resolved
        found, value = self.quality.value_for(quality)
        if not found:
            return resolved
        if self.quality.param == "model":
            if value is not None:
                resolved["upstream"] = value
        else:
            resolved[self.quality.param] = value
        return resolved

    def refusal(self, quality: str) -> str | None:
        """The message this route answers for a quality it does not serve, if any."""
        if self.quality is None:
            return None
        return self.quality.refuse.get(quality)


@dataclass(frozen=True)
class ModelSpec:
    id: str
    modality: Modality
    release_date: str | None
    sizes: tuple[str, ...] | None
    seconds: tuple[float, ...] | None
    default_seconds: float | None
    routes: tuple[Route, ...]
    # The model's own side bounds (`min_side`, `max_side`, `side_step`); None = only the
    # listed sizes when it has a list, else the global `SideBounds()`.
    side_bounds: SideBounds | None = None
    # Most images one request may ask for (`n`); only models whose every route makes n
    # images in one vendor call have more than 1.
    max_n: int = 1

    @property
    def free(self) -> bool:
        return self.id.endswith(":free")

    @property
    def default_route(self) -> Route:
        return self.routes[0]

    def inputs(self) -> dict[str, Any]:
        """Capability flags as the reference publishes them: from the first route."""
        first = self.routes[0]
        flags: dict[str, Any] = {
            "image": first.image_input is not None,
            "mask": first.mask,
            "quality": first.quality is not None,
            "size": list(self.sizes) if self.sizes is not None else ["custom"],
        }
        if self.modality == "video":
            flags["seconds"] = list(self.seconds) if self.seconds is not None else ["auto"]
        return flags

    def size_refusal(self, size: str) -> str | None:
        """Why this model cannot take a normalised size, or None when it can.

        "auto" is always taken (each adapter has a default). A listed size is taken; an
        unlisted one only when the model declares side bounds that admit it. A model
        without a list takes what its bounds (or the global ones) admit.
        """
        dims = parse_size(size)
        if dims is None or (self.sizes is not None and size in self.sizes):
            return None
        bounds = self.side_bounds
        if bounds is None and self.sizes is None:
            bounds = SideBounds()
        if bounds is not None and bounds.admits(*dims):
            return None
        if self.sizes is None:
            assert bounds is not None
            return f"'size' {size} is not supported by '{self.id}': {bounds.describe()}"
        listed = ", ".join(s for s in self.sizes if s != "auto")
        message = f"'size' {size} is not supported by '{self.id}'. Supported sizes: auto, {listed}"
        if bounds is not None:
            message += f"; or any size with {bounds.describe()}"
        return message

    def resolve_seconds(self, requested: float | str | None) -> float | None:
        """Seconds a video job runs: "auto"/None or an unlisted value → the default."""
        if self.seconds is None:
            return None
        if requested is None or requested == "auto":
            return self.default_seconds
        try:
            number = float(requested)
        except ValueError:
            return self.default_seconds
        return number if number in self.seconds else self.default_seconds


@dataclass(frozen=True)
class Catalog:
    models: Mapping[str, ModelSpec]  # registry order: images, then videos
    aliases: Mapping[str, str]
    retired: Mapping[str, str]  # retired id -> the exact message the client gets

    def resolve(self, name: str) -> str:
        """The real id behind an alias; any other name unchanged."""
        return self.aliases.get(name, name)

    def get(self, model_id: str) -> ModelSpec | None:
        return self.models.get(model_id)

    def of_modality(self, modality: Modality) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.modality == modality]
