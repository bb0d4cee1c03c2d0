"""What `serve` says about vendors before it serves."""

from __future__ import annotations

from image_router.cli.startup import variable_warnings, vendor_report
from image_router.config import Settings


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_no_vendor_says_how_to_enable_one() -> None:
    first, hint = vendor_report(_settings())
    assert first.startswith("No vendor is configured;")
    assert "models enabled (the free test models)" in first
    assert "OPENAI_API_KEY=" in hint and "catalog check" in hint


def test_configured_vendors_and_enabled_models_are_counted() -> None:
    alone = vendor_report(_settings(enable_test_models=False))[0]
    [line] = vendor_report(
        _settings(together_api_key="t", openrouter_api_key="o", enable_test_models=False)
    )
    assert line.startswith("Vendors configured: openrouter, together;")
    enabled, total = (int(w) for w in line.split("; ")[1].split()[:3:2])
    # Together and OpenRouter serve models of the packaged catalog (FLUX, Gemini).
    assert enabled >= 6 and total > enabled
    assert alone.startswith("No vendor is configured; 0 of")


def test_misnamed_variables_become_warning_lines() -> None:
    assert variable_warnings(["GROK_API_KEY", "PATH"]) == [
        "warning: GROK_API_KEY is set but not read; did you mean XAI_API_KEY?"
    ]
