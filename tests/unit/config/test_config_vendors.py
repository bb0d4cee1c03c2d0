"""Each vendor declares its settings beside its adapter; config reads the values the
declarations name, and the start-up warnings come from the same declarations."""

from __future__ import annotations

import pytest

from image_router.config import Settings, misnamed_variables
from image_router.config.source import VENDOR_VARIABLE
from image_router.config.vendors import declared_variables, vendor_variables
from image_router.providers import PROVIDERS

VENDORS = [cls for cls in PROVIDERS.values() if cls.needs_credential]


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda cls: cls.id)
def test_every_vendor_declares_a_key_and_a_host_named_so_settings_keep_them(vendor: type) -> None:
    assert vendor.key_env and vendor.base_url_env
    for name in declared_variables(vendor):
        # Settings keep only variables of this shape for the vendors (not all of PATH...).
        assert VENDOR_VARIABLE.match(name), name
    assert set(vendor.env_notes) <= set(declared_variables(vendor))


@pytest.mark.parametrize("vendor", VENDORS, ids=lambda cls: cls.id)
def test_each_vendor_gets_exactly_its_declared_values(
    vendor: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in declared_variables(vendor, aliases=False):
        monkeypatch.setenv(name, f"value of {name}")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.vendors.credential(vendor) == f"value of {vendor.key_env}"
    assert settings.vendors.base_url(vendor) == f"value of {vendor.base_url_env[0]}"
    assert settings.vendors.extra(vendor) == {
        option: f"value of {env}" for option, env in vendor.extra_env.items()
    }


def test_the_offline_test_vendor_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_API_KEY", "t")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    test = PROVIDERS["test"]
    assert settings.vendors.credential(test) is None
    assert settings.vendors.base_url(test) is None


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XAI_BASE_URL", "")
    monkeypatch.setenv("GROK_BASE_URL", "http://old.internal")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.vendors.base_url(PROVIDERS["grok"]) == "http://old.internal"
    assert settings.vendors.credential(PROVIDERS["openai"]) is None


def test_warnings_know_every_declared_name_and_only_those() -> None:
    names = vendor_variables(PROVIDERS.values())
    assert {"FAL_SYNC_BASE_URL", "GROK_BASE_URL", "NANOGPT_BASE_URL", "CHUTES_API_TOKEN"} <= names
    assert misnamed_variables(sorted(names), PROVIDERS.values()) == []
    # The provider id stands for the vendor when its variables are named otherwise.
    assert misnamed_variables(["GEMINIIMAGEN_API_KEY"], PROVIDERS.values()) == [
        "GEMINIIMAGEN_API_KEY is set but not read; did you mean GOOGLE_GEMINI_API_KEY?"
    ]
