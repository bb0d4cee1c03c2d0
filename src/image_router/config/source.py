"""Flat names in, groups out: every setting keeps its one environment variable (HOST, not
SERVING__HOST), and code and tests may still pass flat field names (`Settings(host=...)`).

A set variable no group reads, named like a vendor setting (`VENDOR_VARIABLE`), is kept
for the vendors (`VendorSettings.values`): which of them a vendor reads is declared beside
its adapter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from image_router.config.group import env_names

#: The group that keeps the variables no other group reads, and its field.
VENDORS = "vendors"
_VENDOR_VALUES = "values"

#: The names a vendor's variables may have (a test holds every declaration to it), so
#: the vendors' values do not collect the whole environment (PATH, HOME...).
VENDOR_VARIABLE = re.compile(r"^[A-Z][A-Z0-9_]*_(KEY|TOKEN|URL|ID|LOCATION)$")


def setting_groups(settings_cls: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """The settings' groups by attribute name (every field of `settings_cls` is one)."""
    groups = {}
    for name, info in settings_cls.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            groups[name] = info.annotation
    return groups


@cache
def flat_index(settings_cls: type[BaseModel]) -> Mapping[str, tuple[str, str]]:
    """(group, field) by lower-case field name and by lower-case environment name."""
    index: dict[str, tuple[str, str]] = {}
    for group, model in setting_groups(settings_cls).items():
        if group == VENDORS:
            continue
        for name, info in model.model_fields.items():
            for key in (name, *env_names(name, info)):
                index.setdefault(key.lower(), (group, name))
    return index


def regroup(settings_cls: type[BaseModel], data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` with each flat setting moved into its group (a flat value wins over the same
    field already in its group: it came from a source of higher priority); other names
    go to the vendors' values."""
    groups = setting_groups(settings_cls)
    index = flat_index(settings_cls)
    nested: dict[str, Any] = {}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        (nested if key in groups else flat)[key] = value
    for key, value in flat.items():
        found = index.get(key.lower())
        if found is not None:
            group, name = found
            _group_dict(nested, group)[name] = value
        elif value is not None and VENDOR_VARIABLE.match(key.upper()):
            vendors = _group_dict(nested, VENDORS)
            vendors[_VENDOR_VALUES] = {**vendors.get(_VENDOR_VALUES, {}), key.upper(): value}
    return nested


def _group_dict(nested: dict[str, Any], group: str) -> dict[str, Any]:
    """The group's values as a dict to add to (a group given as an object is copied)."""
    current = nested.get(group)
    if isinstance(current, BaseModel):
        current = current.model_dump(exclude_unset=True)
    values: dict[str, Any] = dict(current or {})
    nested[group] = values
    return values


class FlatEnvironment(PydanticBaseSettingsSource):
    """Reads the environment variables (and `.env` lines) by their flat names.

    `layers` are name → value mappings, lowest priority first, with names in any case.
    """

    def __init__(self, settings_cls: type[BaseSettings], *layers: Mapping[str, str | None]) -> None:
        super().__init__(settings_cls)
        self.layers = layers

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: `__call__` reads every field at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        flat: dict[str, str] = {}
        for layer in self.layers:
            flat.update({k.lower(): v for k, v in layer.items() if v is not None})
        return _by_env_priority(self.settings_cls, flat)


def _by_env_priority(settings_cls: type[BaseModel], flat: Mapping[str, str]) -> dict[str, Any]:
    """Like `regroup`, but a field read from several names (an earlier name kept as an
    alias) takes the first name set, in the order the field lists them."""
    groups = setting_groups(settings_cls)
    nested: dict[str, Any] = {}
    claimed: set[str] = set()
    for group, model in groups.items():
        if group == VENDORS:
            continue
        for name, info in model.model_fields.items():
            names = [n.lower() for n in env_names(name, info)]
            claimed.update(names)
            found = next((n for n in names if n in flat), None)
            if found is not None:
                nested.setdefault(group, {})[name] = flat[found]
    values = {
        k.upper(): v
        for k, v in flat.items()
        if k not in claimed and VENDOR_VARIABLE.match(k.upper())
    }
    if values:
        nested[VENDORS] = {_VENDOR_VALUES: values}
    return nested
