"""The served app hides what its start-up built from the garbage collector (`gc.freeze`),
so a full collection under load does not walk the catalog and the libraries' structures,
and collects its young generation less often; an app built in a test does neither (it
would keep every test's objects forever)."""

from __future__ import annotations

import gc
from pathlib import Path

from image_router.app import YOUNG_COLLECTION_THRESHOLD, create_app
from tests.conftest import gateway_settings


async def test_the_served_app_freezes_its_start_up_heap(db_url: str, tmp_path: Path) -> None:
    gc.unfreeze()
    thresholds = gc.get_threshold()
    app = create_app(gateway_settings(db_url, tmp_path / "data"), freeze_heap=True)
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000  # the app, the catalog, the libraries
            # Young collections far less often; the older generations' ratios kept.
            assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def test_an_app_built_in_a_test_does_not(db_url: str, tmp_path: Path) -> None:
    gc.unfreeze()
    app = create_app(gateway_settings(db_url, tmp_path / "data"))
    thresholds = gc.get_threshold()
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == thresholds
