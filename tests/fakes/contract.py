"""What the shared provider contract suite needs to know about one vendor."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import httpx

import tests.fakes
from image_router.providers.contract import Job, Provider, Target
from tests.fakes.upstream import FakeVendor


@dataclass(frozen=True)
class ContractCase:
    """One provider checked against its fake.

    `base_path` is appended to the fake's root to form the provider's base URL; values of
    `extra` may contain "{root}" (the fake's root URL), for vendors with a second host.
    `polls`: `job` runs as a vendor job whose status the provider polls (the fake's poll
    routes); `cancels`: the vendor can stop such a job, and the fake lists the jobs it was
    asked to stop (`FakeVendor.cancelled_jobs`).
    """

    id: str
    provider: type[Provider]
    make_fake: Callable[[], FakeVendor]
    credential: str
    base_path: str
    job: Job
    target: Target
    refused_job: Job
    extra: Mapping[str, str] = field(default_factory=dict)
    polls: bool = False
    cancels: bool = False

    def build(self, http: httpx.AsyncClient, root: str, credential: str | None = None) -> Provider:
        return self.provider(
            http,
            credential=credential or self.credential,
            base_url=root + self.base_path,
            poll_interval=0.0,
            extra={k: v.replace("{root}", root) for k, v in self.extra.items()},
        )


def discover_cases() -> list[ContractCase]:
    """Every `CONTRACT_CASES` list defined by a module of `tests.fakes`."""
    cases: list[ContractCase] = []
    for module in sorted(pkgutil.iter_modules(tests.fakes.__path__), key=lambda m: m.name):
        loaded = importlib.import_module(f"tests.fakes.{module.name}")
        cases.extend(getattr(loaded, "CONTRACT_CASES", []))
    return cases
