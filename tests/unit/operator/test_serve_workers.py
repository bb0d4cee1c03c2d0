"""`image-router serve --workers`: a number or `auto`; SQLite keeps one writer."""

from __future__ import annotations

import pytest
import typer

from image_router.cli.main import worker_count


def test_auto_is_one_worker_per_core_on_postgresql() -> None:
    assert worker_count("auto", sqlite=False, cores=4) == 4
    assert worker_count("AUTO", sqlite=False, cores=1) == 1


def test_auto_is_one_worker_on_sqlite() -> None:
    assert worker_count("auto", sqlite=True, cores=8) == 1


def test_a_number_is_taken_as_it_is() -> None:
    assert worker_count("3", sqlite=False, cores=2) == 3
    assert worker_count("1", sqlite=True, cores=2) == 1


@pytest.mark.parametrize(
    ("asked", "sqlite", "says"),
    [
        ("2", True, "needs PostgreSQL"),
        ("0", False, "at least 1"),
        ("many", False, "a number or 'auto'"),
    ],
)
def test_refused(asked: str, sqlite: bool, says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as refused:
        worker_count(asked, sqlite=sqlite, cores=2)
    assert refused.value.exit_code == 1
    assert says in capsys.readouterr().err
