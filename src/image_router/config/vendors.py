"""Vendor settings. Each vendor adapter declares its own environment variables (its key,
its base URL and earlier names for it, other options) beside its code, as plain class
attributes; this module reads them, so config never imports the adapters and an adapter
never imports config."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, SecretStr


class VendorDeclaration(Protocol):
    """What a vendor adapter class declares about its settings (see providers/)."""

    @property
    def id(self) -> str: ...

    #: The key's variable; "" when the vendor needs none.
    @property
    def key_env(self) -> str: ...

    #: The base URL's variable, then earlier names still read.
    @property
    def base_url_env(self) -> tuple[str, ...]: ...

    #: Other options: the name the adapter reads from its `extra` → the variable.
    @property
    def extra_env(self) -> Mapping[str, str]: ...

    #: A note on a variable, for the README's vendor table.
    @property
    def env_notes(self) -> Mapping[str, str]: ...

    @property
    def default_base_url(self) -> str: ...

    @property
    def api_prefix(self) -> str: ...


class VendorSettings(BaseModel):
    """The values of the variables the vendors declare: every variable set in the
    environment or `.env` that no settings group reads, by upper-case name. Which of them
    matter is known only to the declarations, read when the adapters are built."""

    model_config = ConfigDict(frozen=True)

    values: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="set variables no settings group reads: the vendors' keys, hosts and "
        'options (README "Vendors")',
    )

    def value(self, *names: str) -> str | None:
        """The first of `names` set to a non-empty value."""
        for name in names:
            secret = self.values.get(name.upper())
            if secret is not None and secret.get_secret_value():
                return secret.get_secret_value()
        return None

    def credential(self, vendor: VendorDeclaration) -> str | None:
        return self.value(vendor.key_env) if vendor.key_env else None

    def base_url(self, vendor: VendorDeclaration) -> str | None:
        return self.value(*vendor.base_url_env)

    def extra(self, vendor: VendorDeclaration) -> dict[str, str]:
        """A vendor's other settings (second hosts, project ids...), by the adapter's name."""
        found = {name: self.value(env) for name, env in vendor.extra_env.items()}
        return {name: value for name, value in found.items() if value is not None}


def declared_variables(vendor: VendorDeclaration, *, aliases: bool = True) -> list[str]:
    """The variables a vendor reads, current names first (earlier ones unless `aliases`
    is false)."""
    hosts = vendor.base_url_env if aliases else vendor.base_url_env[:1]
    return [name for name in (vendor.key_env, *hosts, *vendor.extra_env.values()) if name]


#: The shapes of a vendor setting, for spotting a misspelt one (`misnamed_variables`).
_VENDOR_NAME = re.compile(r"^([A-Z0-9_]+?)_(BASE_URL|API_KEY|API_TOKEN)$")


def vendor_variables(
    vendors: Iterable[VendorDeclaration], *, aliases: bool = True
) -> frozenset[str]:
    """Every variable naming a vendor key or host (earlier names included unless
    `aliases` is false)."""
    names = {n for v in vendors for n in declared_variables(v, aliases=aliases)}
    return frozenset(n for n in names if _VENDOR_NAME.match(n))


def misnamed_variables(names: Iterable[str], vendors: Iterable[VendorDeclaration]) -> list[str]:
    """A warning for each set variable shaped like a vendor setting that is not one but
    resembles one, naming that one: a misspelt key or host is otherwise silently ignored
    (and the gateway calls the vendor's real host)."""
    vendors = list(vendors)
    known = vendor_variables(vendors)
    canonical = sorted(vendor_variables(vendors, aliases=False))
    by_id = {vendor.id.upper(): vendor for vendor in vendors}
    warnings = []
    for name in sorted({n.upper() for n in names}):
        if name in known or not _VENDOR_NAME.match(name):
            continue
        match = _by_provider_id(name, by_id) or _closest(name, canonical)
        if match is not None:
            warnings.append(f"{name} is set but not read; did you mean {match}?")
    return warnings


def _closest(name: str, candidates: list[str]) -> str | None:
    """The candidate for the same vendor (a similar or contained name) and the same kind
    of setting (a key, or a host) as `name`, or None."""
    vendor, kind = _split_vendor_name(name)
    best: tuple[float, str] | None = None
    for candidate in candidates:
        their_vendor, their_kind = _split_vendor_name(candidate)
        if their_kind != kind:
            continue
        ratio = difflib.SequenceMatcher(None, vendor, their_vendor).ratio()
        if vendor in their_vendor.split("_") or their_vendor in vendor.split("_"):
            ratio = max(ratio, 0.8)
        if ratio >= 0.75 and (best is None or ratio > best[0]):
            best = (ratio, candidate)
    return best[1] if best else None


def _by_provider_id(name: str, by_id: Mapping[str, VendorDeclaration]) -> str | None:
    """The setting of a provider named by its id (GROK_API_KEY: xAI's key is XAI_API_KEY)."""
    vendor_part, kind = _split_vendor_name(name)
    vendor = by_id.get(vendor_part)
    if vendor is None:
        return None
    found = vendor.key_env if kind == "key" else next(iter(vendor.base_url_env), "")
    return found or None


def _split_vendor_name(name: str) -> tuple[str, str]:
    """("REPLICATE", "key") for REPLICATE_API_TOKEN; ("XAI", "host") for XAI_BASE_URL."""
    found = _VENDOR_NAME.match(name)
    if found is None:
        return name, ""
    return found.group(1), "host" if found.group(2) == "BASE_URL" else "key"


def set_variable_names(env_file: Path | None = Path(".env")) -> set[str]:
    """The names set in the environment and in the `.env` file settings are read from."""
    names = set(os.environ)
    if env_file is not None and env_file.is_file():
        names.update(dotenv_values(env_file))
    return names
