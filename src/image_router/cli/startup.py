"""What `image-router serve` tells the operator before it serves: which vendors are
configured, how many models that enables, how to enable one, and which set variables
look like vendor settings but are not read (a misspelt host silently sends traffic to the
vendor's real host).
"""

from __future__ import annotations

from collections.abc import Iterable

from image_router.catalog.loader import load_catalog
from image_router.catalog.spec import Catalog
from image_router.config import Settings, misnamed_variables
from image_router.providers import PROVIDERS
from image_router.resources import provider_problem


def vendor_report(settings: Settings, catalog: Catalog | None = None) -> list[str]:
    """Lines saying which vendors are configured and how many models are enabled."""
    if catalog is None:
        catalog = load_catalog(
            settings.generation.catalog_paths,
            image_inputs={pid: cls.image_inputs for pid, cls in PROVIDERS.items()},
        )
    usable = {pid for pid in PROVIDERS if provider_problem(settings, pid) is None}
    vendors = sorted(pid for pid in usable if PROVIDERS[pid].needs_credential)
    enabled = sum(
        any(route.provider in usable for route in spec.routes) for spec in catalog.models.values()
    )
    count = f"{enabled} of {len(catalog.models)} models enabled"
    if vendors:
        return [f"Vendors configured: {', '.join(vendors)}; {count}."]
    example = PROVIDERS["openai"].key_env
    return [
        f"No vendor is configured; {count}" + (" (the free test models)." if enabled else "."),
        f"To enable one, set its key (e.g. {example}=...) in the environment or .env and "
        'restart; README "Vendors" lists every vendor, `image-router catalog check` '
        "every model.",
    ]


def variable_warnings(names: Iterable[str]) -> list[str]:
    """One line per set variable that looks like a vendor setting but is not one."""
    return [f"warning: {text}" for text in misnamed_variables(names, PROVIDERS.values())]
