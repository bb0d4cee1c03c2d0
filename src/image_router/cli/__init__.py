"""The operator's command line: one module per command group; `main` is the entry point."""

from image_router.cli.main import app, main

__all__ = ["app", "main"]
