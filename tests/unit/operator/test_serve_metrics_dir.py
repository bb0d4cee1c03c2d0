"""`serve --workers N` gives its workers an empty metrics directory of their own."""

from __future__ import annotations

from pathlib import Path

from image_router.cli.serving import prepare_metrics_dir, uvicorn_grace_s


def test_the_operators_directory_is_emptied_of_an_earlier_runs_files(tmp_path: Path) -> None:
    (tmp_path / "counter_123.db").write_bytes(b"stale")
    (tmp_path / "notes.txt").write_text("not ours")
    assert prepare_metrics_dir(str(tmp_path)) == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_without_one_a_private_empty_directory_is_made() -> None:
    first, second = prepare_metrics_dir(None), prepare_metrics_dir(None)
    assert first != second  # one per start, never shared with another server
    assert first.is_dir() and not any(first.iterdir())
    assert first.name.startswith("image-router-metrics-")


def test_uvicorn_waits_past_the_drain_for_the_releases() -> None:
    assert uvicorn_grace_s(30) == 40
    assert uvicorn_grace_s(0.5) == 11
