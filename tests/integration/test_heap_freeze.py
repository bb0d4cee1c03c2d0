"""The served app hides what its start-up built from the garbage collector (`gc.freeze`),
so a full collection under load does not walk the catalog and the libraries' structures;
an app built in a test does not (it would keep every test's objects forever)."""

from __future__ import annotations

import gc
from pathlib import Path

from image_router.app import create_app
from tests.conftest import gateway_settings


async def test_the_served_app_freezes_its_start_up_heap(db_url: str, tmp_path: Path) -> None:
    gc.unfreeze()
    app = create_app(gateway_settings(db_url, tmp_path / "data"), freeze_heap=True)
    try:
        async with app.router.lifespan_context(app):
            assert gc.get_freeze_count() > 10_000  # the app, the catalog, the libraries
    finally:
        gc.unfreeze()


async def test_an_app_built_in_a_test_does_not(db_url: str, tmp_path: Path) -> None:
    gc.unfreeze()
    app = create_app(gateway_settings(db_url, tmp_path / "data"))
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() == 0
