"""README "Configuration" and "Vendors" are generated from the settings and the vendors'
declarations; this fails when README.md drifts from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_router.cli.config_docs import main, readme_text
from image_router.config.docs import rewrite, settings_tables, vendor_table
from image_router.providers import PROVIDERS

README = Path(__file__).parents[3] / "README.md"


def test_readme_tables_match_the_settings() -> None:
    current = README.read_text(encoding="utf-8")
    assert readme_text(current) == current, (
        "README.md is out of date: run `python -m image_router.cli.config_docs`"
    )


def test_every_variable_is_documented_with_its_default() -> None:
    tables = settings_tables()
    assert "| `LOG_FORMAT` | `json` | log lines as `json`" in tables
    assert "| `PII_KEK_FILE` |  |" in tables
    assert "| `SESSION_TTL_S` | `1209600` |" in tables
    assert "| `AUTO_MIGRATE` | `true` |" in tables


def test_vendor_rows_come_from_the_declarations() -> None:
    table = vendor_table(PROVIDERS.values())
    assert "| `gemini`, `geminiImagen` | `GOOGLE_GEMINI_API_KEY` (comma list" in table
    assert "`XAI_BASE_URL` (`GROK_BASE_URL` still read)" in table
    assert "`FAL_SYNC_BASE_URL`" in table and "`test`" not in table


def test_a_hand_edit_is_found_and_undone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = tmp_path / "README.md"
    current = README.read_text(encoding="utf-8")
    readme.write_text(current.replace("| `LOG_FORMAT` |", "| `LOG_FMT` |"), encoding="utf-8")
    assert main([str(readme), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
    assert main([str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == readme_text(current)


def test_a_readme_without_the_markers_is_refused() -> None:
    with pytest.raises(ValueError, match="no <!-- settings"):
        rewrite("# no markers here\n", {"settings": "x"})
