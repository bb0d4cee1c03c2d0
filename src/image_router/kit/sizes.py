"""Image sizes as clients write them: "auto" or "WIDTHxHEIGHT" (x, X, × or *)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+)\s*[xX×*]\s*(\d+)\s*$")


def is_size(text: str) -> bool:
    """The reference's rule: "auto", or digits, a separator, digits, nothing else."""
    return text == "auto" or re.fullmatch(r"\d+[xX×*]\d+", text) is not None


def parse_size(text: str | None) -> tuple[int, int] | None:
    """(width, height) of a concrete size, None for "auto" or no size."""
    if text is None or text == "auto":
        return None
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"'{text}' is not a size")
    return int(match.group(1)), int(match.group(2))


def normalise_size(text: str) -> str:
    """ "1024X768" and "1024×768" both become "1024x768"; "auto" stays."""
    dims = parse_size(text)
    return "auto" if dims is None else f"{dims[0]}x{dims[1]}"
