"""What an operator trips over in the settings: one name per vendor (old names still read),
a warning naming the right variable for a misspelt one, and the serve host and port."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_router.config import Settings, misnamed_variables, set_variable_names
from image_router.providers import PROVIDERS

GROK, NANOGPT = PROVIDERS["grok"], PROVIDERS["nanogpt"]


def test_xai_base_url_is_read_and_grok_base_url_still_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XAI_BASE_URL", "http://xai.internal/v1")
    assert Settings(_env_file=None).vendors.base_url(GROK) == "http://xai.internal/v1"  # type: ignore[call-arg]

    monkeypatch.delenv("XAI_BASE_URL")
    monkeypatch.setenv("GROK_BASE_URL", "http://old.internal/v1")
    assert Settings(_env_file=None).vendors.base_url(GROK) == "http://old.internal/v1"  # type: ignore[call-arg]


def test_nano_gpt_host_is_named_like_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NANO_GPT_BASE_URL", "http://nano.internal")
    assert Settings(_env_file=None).vendors.base_url(NANOGPT) == "http://nano.internal"  # type: ignore[call-arg]
    monkeypatch.delenv("NANO_GPT_BASE_URL")
    monkeypatch.setenv("NANOGPT_BASE_URL", "http://old-nano.internal")
    assert Settings(_env_file=None).vendors.base_url(NANOGPT) == "http://old-nano.internal"  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("REPLICATE_API_TOKEN", "REPLICATE_API_KEY"),  # the Replicate client's own name
        ("TOGETHERAI_API_KEY", "TOGETHER_API_KEY"),
        ("GROK_API_KEY", "XAI_API_KEY"),  # the provider id, not the vendor's name
        ("GEMINI_API_KEY", "GOOGLE_GEMINI_API_KEY"),
        ("NANOGPT_API_KEY", "NANO_GPT_API_KEY"),
        ("OPENAI_API_BASE_URL", "OPENAI_BASE_URL"),
        ("X_AI_BASE_URL", "XAI_BASE_URL"),
    ],
)
def test_a_misspelt_vendor_variable_is_named_with_the_right_one(name: str, suggestion: str) -> None:
    assert misnamed_variables([name], PROVIDERS.values()) == [
        f"{name} is set but not read; did you mean {suggestion}?"
    ]


def test_real_names_aliases_and_unrelated_variables_are_not_warned_about() -> None:
    names = [
        "XAI_BASE_URL",
        "GROK_BASE_URL",  # the earlier name, still read
        "OPENROUTER_API_KEY",
        "openai_base_url",  # settings are case-insensitive
        "ANTHROPIC_API_KEY",  # resembles no vendor of ours
        "GROQ_API_KEY",
        "PATH",
    ]
    assert misnamed_variables(names, PROVIDERS.values()) == []


def test_names_set_in_the_env_file_count_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("REPLICATE_API_TOKEN=r8_x\n")
    monkeypatch.setenv("TOGETHERAI_API_KEY", "t")
    names = set_variable_names(env_file)
    assert {"REPLICATE_API_TOKEN", "TOGETHERAI_API_KEY"} <= names
    assert len(misnamed_variables(names, PROVIDERS.values())) >= 2


def test_host_and_port_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HOST", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (defaults.serving.host, defaults.serving.port) == ("127.0.0.1", 8000)
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("HOST", "0.0.0.0")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.serving.host, settings.serving.port) == ("0.0.0.0", 9123)
