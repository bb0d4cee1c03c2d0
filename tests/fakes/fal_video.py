"""A video model served by the fake fal's queue API (resumable), as an operator catalog
file (`CATALOG_PATHS`): the durable-job tests run it in-process and against real servers."""

from __future__ import annotations

from pathlib import Path

FAL_VIDEO = "e2e/fal-video"
FAL_VIDEO_PRICE = 500  # credits: $0.05


def fal_video_toml(model_id: str, usd: str) -> str:
    """An operator catalog entry (docs/catalog.md) for a fixed-price video model routed to
    the fake fal's queue API, `fal-ai/fake-video/text-to-video` (the soak uses it too)."""
    return f"""
[[model]]
id = "{model_id}"
modality = "video"
release_date = "2026-01-01"
sizes = ["1280x720"]
seconds = [5]
default_seconds = 5

  [[model.routes]]
  provider = "fal"
  upstream = "fal-ai/fake-video/text-to-video"
  price = {{ rule = "fixed", usd = "{usd}" }}
"""


FAL_VIDEO_CATALOG = fal_video_toml(FAL_VIDEO, "0.05")


def fal_video_catalog(folder: Path) -> Path:
    """The catalog file, written in `folder`."""
    catalog = folder / "fal-video.toml"
    catalog.write_text(FAL_VIDEO_CATALOG)
    return catalog
