"""Regenerate README "Configuration" and "Vendors" from the settings' descriptions and
the vendors' declarations: `python -m image_router.cli.config_docs [README.md]`; with
`--check`, only say whether it is up to date (exit 1 when not)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from image_router.config.docs import generated_sections, rewrite
from image_router.providers import PROVIDERS


def readme_text(current: str) -> str:
    """`current` (a README) with the generated sections brought up to date."""
    return rewrite(current, generated_sections(PROVIDERS.values()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image_router.cli.config_docs")
    parser.add_argument("readme", nargs="?", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true", help="only check; exit 1 on drift")
    args = parser.parse_args(argv)
    current = args.readme.read_text(encoding="utf-8")
    wanted = readme_text(current)
    if wanted == current:
        return 0
    if args.check:
        sys.stderr.write(
            f"{args.readme} is out of date: run python -m image_router.cli.config_docs\n"
        )
        return 1
    args.readme.write_text(wanted, encoding="utf-8")
    sys.stdout.write(f"{args.readme} updated\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
