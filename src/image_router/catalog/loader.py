"""Read catalog TOML files into validated `Catalog` objects (schema: docs/catalog.md).

Every failure raises `CatalogError` whose message starts with the model id (or the file
for file-level problems), so a bad entry stops start-up with a precise reason.
"""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from image_router.catalog import pricing
from image_router.catalog.pricing import WILDCARD, PriceRange, PriceRule
from image_router.catalog.spec import (
    QUALITIES,
    Catalog,
    CatalogError,
    Modality,
    ModelSpec,
    QualityMap,
    Route,
    RouteCondition,
)
from image_router.kit.sizes import (
    MAX_SIDE,
    MIN_SIDE,
    SideBounds,
    is_size,
    normalise_size,
    parse_size,
)

PACKAGED_FILES = ("images.toml", "videos.toml", "aliases.toml")
_FILE_KEYS = {"modality", "model", "aliases", "retired", "unregistered_alias_targets"}
_MODEL_KEYS = {
    "id",
    "modality",
    "release_date",
    "sizes",
    "seconds",
    "default_seconds",
    "routes",
    "min_side",
    "max_side",
    "side_step",
    "max_n",
}
_ROUTE_KEYS = {"provider", "upstream", "price", "image_input", "max_images", "mask"}
_ROUTE_KEYS |= {"quality", "options", "prefer_when"}
_CONDITION_KEYS = {"images", "size"}
_QUALITY_KEYS = {"param", "values", "passthrough", "omit", "refuse"}
_MAX_IMAGES = {"image": 16, "video": 1}
# OpenAI's own ceiling for `n`; no vendor of the catalog makes more in one call.
MAX_N = 10


class _Invalid(ValueError):
    """A reason, raised deep inside parsing and prefixed with the model id above."""


def load_catalog(
    extra_paths: Sequence[Path] = (),
    *,
    image_inputs: Mapping[str, frozenset[str]] | None = None,
) -> Catalog:
    documents: list[tuple[str, dict[str, Any]]] = []
    data = resources.files("image_router.catalog") / "data"
    for name in PACKAGED_FILES:
        documents.append((name, _read_toml(name, data.joinpath(name).read_bytes())))
    for path in extra_paths:
        documents.append((str(path), _read_toml(str(path), Path(path).read_bytes())))

    models: dict[str, ModelSpec] = {}
    aliases: dict[str, str] = {}
    retired: dict[str, str] = {}
    unregistered: set[str] = set()
    for source, document in documents:
        for model in _parse_models(source, document, image_inputs):
            models[model.id] = model  # a later file replaces the entry, keeping its place
        aliases.update(_string_table(source, document, "aliases"))
        retired.update(_string_table(source, document, "retired"))
        unregistered.update(_string_list(source, document, "unregistered_alias_targets"))

    ordered = [m for m in models.values() if m.modality == "image"]
    ordered += [m for m in models.values() if m.modality == "video"]
    _check_names(models, aliases, retired, unregistered)
    return Catalog(
        models=MappingProxyType({m.id: m for m in ordered}),
        aliases=MappingProxyType(aliases),
        retired=MappingProxyType(retired),
    )


def _read_toml(source: str, raw: bytes) -> dict[str, Any]:
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{source}: not valid TOML: {exc}") from exc
    unknown = set(document) - _FILE_KEYS
    if unknown:
        raise CatalogError(f"{source}: unknown top-level keys {sorted(unknown)}")
    return document


def _parse_models(
    source: str,
    document: dict[str, Any],
    image_inputs: Mapping[str, frozenset[str]] | None,
) -> list[ModelSpec]:
    entries = document.get("model", [])
    if not isinstance(entries, list):
        raise CatalogError(f"{source}: 'model' must be an array of tables ([[model]])")
    seen: set[str] = set()
    parsed = []
    for entry in entries:
        model_id = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(model_id, str) or not model_id:
            raise CatalogError(f"{source}: a [[model]] entry has no 'id'")
        if model_id in seen:
            raise CatalogError(f"{model_id}: duplicate id in {source}")
        seen.add(model_id)
        try:
            model = _model(entry, document.get("modality"))
            _check_image_inputs(model, image_inputs)
        except _Invalid as exc:
            raise CatalogError(f"{model_id}: {exc}") from exc
        parsed.append(model)
    return parsed


def _model(entry: dict[str, Any], file_modality: Any) -> ModelSpec:
    _no_unknown_keys("model", entry, _MODEL_KEYS)
    modality = entry.get("modality", file_modality)
    if modality is None:
        raise _Invalid('no modality: set modality = "image" or "video" (entry or file)')
    if modality not in ("image", "video"):
        raise _Invalid(f"unknown modality {modality!r} (expected 'image' or 'video')")
    release = entry.get("release_date")
    if release is not None and not isinstance(release, str):
        raise _Invalid("'release_date' must be a string such as \"2025-04-23\"")
    sizes = entry.get("sizes")
    if sizes is not None:
        if not isinstance(sizes, list) or not sizes:
            raise _Invalid("'sizes' must be a non-empty list of strings")
        for size in sizes:
            if not isinstance(size, str) or not is_size(size):
                raise _Invalid(f"size {size!r} is not 'auto' or WIDTHxHEIGHT")
    seconds, default_seconds = _seconds(entry, modality)
    bounds = _side_bounds(entry, sizes)
    max_n = entry.get("max_n", 1)
    if not isinstance(max_n, int) or isinstance(max_n, bool) or not 1 <= max_n <= MAX_N:
        raise _Invalid(f"'max_n' must be a whole number from 1 to {MAX_N}")
    if modality == "video" and max_n != 1:
        raise _Invalid("video models make one video per request: no 'max_n'")
    routes = entry.get("routes")
    if not isinstance(routes, list) or not routes:
        raise _Invalid("needs at least one [[model.routes]] entry")
    parsed = tuple(_route(route, modality, i) for i, route in enumerate(routes, 1))
    _check_conditions(parsed, sizes)
    return ModelSpec(
        id=entry["id"],
        modality=modality,
        release_date=release,
        sizes=tuple(sizes) if sizes is not None else None,
        seconds=seconds,
        default_seconds=default_seconds,
        routes=parsed,
        side_bounds=bounds,
        max_n=max_n,
    )


def _side_bounds(entry: dict[str, Any], sizes: list[str] | None) -> SideBounds | None:
    """The model's own `min_side` / `max_side` / `side_step`, if it sets any."""
    keys = ("min_side", "max_side", "side_step")
    if not any(key in entry for key in keys):
        return None
    for key in keys:
        value = entry.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _Invalid(f"'{key}' must be a whole number of pixels, at least 1")
    bounds = SideBounds(
        min=entry.get("min_side", MIN_SIDE),
        max=entry.get("max_side", MAX_SIDE),
        step=entry.get("side_step", 1),
    )
    if bounds.min > bounds.max:
        raise _Invalid(f"'min_side' {bounds.min} is above 'max_side' {bounds.max}")
    # A listed size the vendor's own bounds refuse is a size nobody can get.
    for size in sizes or ():
        dims = parse_size(size)
        if dims is not None and not bounds.admits(*dims):
            raise _Invalid(f"size {size!r} is outside the model's bounds ({bounds.describe()})")
    return bounds


def _seconds(
    entry: dict[str, Any], modality: Modality
) -> tuple[tuple[float, ...] | None, float | None]:
    seconds, default = entry.get("seconds"), entry.get("default_seconds")
    if modality == "image":
        if seconds is not None or default is not None:
            raise _Invalid("image models take no 'seconds' / 'default_seconds'")
        return None, None
    if not isinstance(seconds, list) or not seconds:
        raise _Invalid("video models need a non-empty 'seconds' list")
    if not all(_is_number(s) and s > 0 for s in seconds):
        raise _Invalid("'seconds' must hold positive numbers")
    if not _is_number(default) or default not in seconds:
        raise _Invalid("'default_seconds' must be one of 'seconds'")
    assert isinstance(default, int | float)
    return tuple(float(s) for s in seconds), float(default)


def _route(table: Any, modality: Modality, number: int) -> Route:
    try:
        if not isinstance(table, dict):
            raise _Invalid("must be a table")
        _no_unknown_keys("route", table, _ROUTE_KEYS)
        provider, upstream = table.get("provider"), table.get("upstream")
        if not isinstance(provider, str) or not provider:
            raise _Invalid("'provider' is required")
        if not isinstance(upstream, str) or not upstream:
            raise _Invalid("'upstream' is required")
        image_input = table.get("image_input")
        if image_input is not None and (not isinstance(image_input, str) or not image_input):
            raise _Invalid("'image_input' must be a non-empty string")
        max_images = table.get("max_images", _MAX_IMAGES[modality] if image_input else 0)
        if not isinstance(max_images, int) or isinstance(max_images, bool) or max_images < 0:
            raise _Invalid("'max_images' must be a whole number")
        if image_input is not None and max_images < 1:
            raise _Invalid("'max_images' must be at least 1 when the route takes images")
        mask = table.get("mask", False)
        if not isinstance(mask, bool):
            raise _Invalid("'mask' must be true or false")
        options = table.get("options", {})
        if not isinstance(options, dict):
            raise _Invalid("'options' must be a table")
        quality = table.get("quality")
        prefer_when = table.get("prefer_when")
        return Route(
            provider=provider,
            upstream=upstream,
            price=parse_price(table.get("price")),
            image_input=image_input,
            max_images=max_images,
            mask=mask,
            quality=None if quality is None else _quality(quality),
            options=MappingProxyType(options),
            prefer_when=None if prefer_when is None else _condition(prefer_when),
        )
    except _Invalid as exc:
        raise _Invalid(f"route {number}: {exc}") from exc


def _condition(table: Any) -> RouteCondition:
    if not isinstance(table, dict) or not table:
        raise _Invalid("'prefer_when' must be a table such as { images = true, size = [\"auto\"] }")
    _no_unknown_keys("prefer_when", table, _CONDITION_KEYS)
    images = table.get("images")
    if images is not None and not isinstance(images, bool):
        raise _Invalid("prefer_when 'images' must be true or false")
    sizes = table.get("size")
    if sizes is not None and (
        not isinstance(sizes, list)
        or not sizes
        or not all(isinstance(s, str) and is_size(s) for s in sizes)
    ):
        raise _Invalid("prefer_when 'size' must list 'auto' or WIDTHxHEIGHT sizes")
    return RouteCondition(
        images=images,
        sizes=None if sizes is None else frozenset(normalise_size(s) for s in sizes),
    )


def _check_conditions(routes: tuple[Route, ...], sizes: list[str] | None) -> None:
    """A condition on a size the model never accepts could never hold: a typo."""
    for number, route in enumerate(routes, 1):
        condition = route.prefer_when
        if condition is None or condition.sizes is None or sizes is None:
            continue
        unknown = sorted(condition.sizes - {"auto", *(normalise_size(s) for s in sizes)})
        if unknown:
            raise _Invalid(
                f"route {number}: prefer_when size {unknown} is not in the model's sizes"
            )


def _quality(table: Any) -> QualityMap:
    if not isinstance(table, dict):
        raise _Invalid("'quality' must be a table")
    _no_unknown_keys("quality", table, _QUALITY_KEYS)
    param = table.get("param")
    if not isinstance(param, str) or not param:
        raise _Invalid("quality 'param' is required")
    values, refuse, omit = (
        table.get("values", {}),
        table.get("refuse", {}),
        table.get("omit", []),
    )
    if not isinstance(values, dict) or not isinstance(refuse, dict) or not isinstance(omit, list):
        raise _Invalid("quality 'values'/'refuse' must be tables and 'omit' a list")
    if table.get("passthrough", False) is True:
        values = {q: q for q in QUALITIES} | values
    values = values | {q: None for q in omit if isinstance(q, str)}
    if not all(isinstance(q, str) for q in omit):
        raise _Invalid("quality 'omit' must list qualities")
    for name, keys in (("values", values), ("refuse", refuse)):
        unknown = set(keys) - set(QUALITIES)
        if unknown:
            raise _Invalid(f"quality {name} has unknown keys {sorted(unknown)}")
    if not all(isinstance(m, str) for m in refuse.values()):
        raise _Invalid("quality 'refuse' messages must be strings")
    if param == "model" and not all(isinstance(v, str) for v in values.values()):
        raise _Invalid("quality 'model' values must be upstream model names")
    return QualityMap(param=param, values=MappingProxyType(values), refuse=MappingProxyType(refuse))


# ------------------------------------------------------------------------ price rules


def parse_price(table: Any) -> PriceRule:
    """Build a price rule from its TOML table. USD amounts are strings, never floats."""
    if not isinstance(table, dict):
        raise _Invalid('\'price\' must be a table such as { rule = "fixed", usd = "0.04" }')
    name = table.get("rule")
    cls = pricing.RULE_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise _Invalid(f"unknown price rule {name!r}; known: {sorted(pricing.RULE_CLASSES)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _no_unknown_keys(f"price rule '{name}'", table, set(fields))
    values: dict[str, Any] = {}
    for field_name, field in fields.items():
        if field_name in table:
            values[field_name] = _convert(
                f"{name}.{field_name}", hints[field_name], table[field_name]
            )
        elif field.default is dataclasses.MISSING:
            raise _Invalid(f"price rule '{name}' needs '{field_name}'")
    rule: PriceRule = cls(**values)
    _check_rule(rule)
    return rule


def _convert(where: str, hint: Any, raw: Any) -> Any:
    if typing.get_origin(hint) is typing.Literal:
        if raw not in typing.get_args(hint):
            raise _Invalid(f"{where} must be one of {list(typing.get_args(hint))}")
        return raw
    if hint in (Decimal, Decimal | None):
        return _usd(where, raw)
    if hint == PriceRange | None:
        if not isinstance(raw, dict) or set(raw) != {"min", "average", "max"}:
            raise _Invalid(f'{where} must be {{ min = "…", average = "…", max = "…" }}')
        found = PriceRange(**{k: _usd(f"{where}.{k}", v) for k, v in raw.items()})
        if found.min > found.max:
            raise _Invalid(f"{where}: min {found.min} is above max {found.max}")
        return found
    if hint == Mapping[str, Decimal]:
        return _usd_table(where, raw)
    if hint == Mapping[str, Mapping[str, Decimal]]:
        if not isinstance(raw, dict) or not raw:
            raise _Invalid(f"{where} must be a table of tables")
        return MappingProxyType({k: _usd_table(f"{where}.{k}", v) for k, v in raw.items()})
    if hint is str:
        if not isinstance(raw, str):
            raise _Invalid(f"{where} must be a string")
        return raw
    raise AssertionError(f"no converter for {where}: {hint}")


def _usd(where: str, raw: Any) -> Decimal:
    if not isinstance(raw, str):
        raise _Invalid(
            f'{where} must be a USD string such as "0.04", not {type(raw).__name__} {raw!r}'
        )
    try:
        amount = Decimal(raw)
    except InvalidOperation as exc:
        raise _Invalid(f"{where}: {raw!r} is not a number") from exc
    if not amount.is_finite() or amount < 0:
        raise _Invalid(f"{where}: {raw!r} must be a finite amount ≥ 0")
    return amount


def _usd_table(where: str, raw: Any) -> Mapping[str, Decimal]:
    if not isinstance(raw, dict) or not raw:
        raise _Invalid(f"{where} must be a non-empty table of USD strings")
    return MappingProxyType({k: _usd(f"{where}.{k}", v) for k, v in raw.items()})


def _check_rule(rule: PriceRule) -> None:
    name = rule.rule
    match rule:
        case pricing.BySize(usd=table) | pricing.Gemini3(output_usd=table):
            _needs_wildcard(name, table)
            _keys_are_sizes(name, table)
        case pricing.ByQuality(usd=table):
            _needs_wildcard(name, table)
            _keys_in(name, table, {*QUALITIES, WILDCARD})
        case pricing.BySizeAndQuality(usd=tables):
            _needs_wildcard(name, tables)
            _keys_in(name, tables, {*QUALITIES, WILDCARD})
            for table in tables.values():
                _needs_wildcard(name, table)
                _keys_are_sizes(name, table)
        case pricing.HunyuanVideo(usd_per_second=table):
            _keys_are_sizes(name, table)
        case pricing.GrokVideo(usd_per_second=table):
            if set(table) != {"480p", "720p"}:
                raise _Invalid(f"price rule '{name}' needs usd_per_second for '480p' and '720p'")
        case pricing.FalMegapixels(auto_size=size):
            if parse_size(size) is None or not is_size(size):
                raise _Invalid(f"price rule '{name}': auto_size must be WIDTHxHEIGHT")
    if not isinstance(rule, pricing.Fixed | pricing.PerOutput):
        if rule.range is not None and rule.value is not None:
            raise _Invalid(f"price rule '{name}' takes a range or a value, not both")
        if rule.range is None and rule.value is None and pricing.computed_range(rule) is None:
            raise _Invalid(f"price rule '{name}' needs a published range or value")


def _needs_wildcard(name: str, table: Mapping[str, Any]) -> None:
    if WILDCARD not in table:
        raise _Invalid(f"price rule '{name}': every lookup table needs a \"{WILDCARD}\" entry")


def _keys_are_sizes(name: str, table: Mapping[str, Any]) -> None:
    bad = [k for k in table if k != WILDCARD and (k == "auto" or not is_size(k))]
    if bad:
        raise _Invalid(f"price rule '{name}': {bad} are not WIDTHxHEIGHT sizes")


def _keys_in(name: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    bad = sorted(set(table) - allowed)
    if bad:
        raise _Invalid(f"price rule '{name}': unknown keys {bad}")


# ------------------------------------------------------------------------ cross checks


def _check_image_inputs(
    model: ModelSpec, image_inputs: Mapping[str, frozenset[str]] | None
) -> None:
    if image_inputs is None:
        return
    for number, route in enumerate(model.routes, 1):
        accepted = image_inputs.get(route.provider)
        if accepted is None or route.image_input is None or route.image_input in accepted:
            continue
        raise _Invalid(
            f"route {number}: provider '{route.provider}' does not understand "
            f"image_input '{route.image_input}' (it knows {sorted(accepted)})"
        )


def _check_names(
    models: Mapping[str, ModelSpec],
    aliases: Mapping[str, str],
    retired: Mapping[str, str],
    unregistered: set[str],
) -> None:
    for alias, target in aliases.items():
        if alias in models:
            raise CatalogError(f"{alias}: is both a model and an alias")
        if target not in models and target not in unregistered:
            raise CatalogError(
                f"{alias}: alias points to unknown model '{target}' "
                "(list it in unregistered_alias_targets if that is intended)"
            )
    for model_id in retired:
        if model_id in models:
            raise CatalogError(f"{model_id}: is both a live model and retired")


def _string_table(source: str, document: dict[str, Any], key: str) -> dict[str, str]:
    table = document.get(key, {})
    if not isinstance(table, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in table.items()
    ):
        raise CatalogError(f"{source}: [{key}] must map names to non-empty strings")
    return table


def _string_list(source: str, document: dict[str, Any], key: str) -> list[str]:
    items = document.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise CatalogError(f"{source}: '{key}' must be a list of strings")
    return items


def _no_unknown_keys(what: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _Invalid(f"{what} has unknown keys {unknown}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
