r"""Image sizes as clients write them: "auto" or "WIDTHxHEIGHT" (x, X, × or *).

Digits are ASCII only: the reference's JavaScript `\d` is `[0-9]`, while Python's `\d`
would also take full-width and other scripts' digits, which `int()` then quietly reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SIZE = re.compile(r"^\s*([0-9]+)\s*[xX×*]\s*([0-9]+)\s*$")
_STRICT_SIZE = re.compile(r"[0-9]+[xX×*][0-9]+")

#: Side bounds of a model whose catalog entry sets none (docs/catalog.md): below 64 px
#: no vendor draws anything useful, and 4096 is the largest side any custom-size vendor
#: of the catalog takes; a model may widen or narrow this with `min_side` / `max_side`.
MIN_SIDE = 64
MAX_SIDE = 4096
# Longer text is no plausible size; refusing it up front keeps `int()` off thousands of
# digits (Python refuses over 4300 with a ValueError the caller would not expect).
_MAX_TEXT = 32


@dataclass(frozen=True)
class SideBounds:
    """What a concrete size must satisfy: each side in min..max and a multiple of `step`."""

    min: int = MIN_SIDE
    max: int = MAX_SIDE
    step: int = 1

    def admits(self, width: int, height: int) -> bool:
        return all(
            self.min <= side <= self.max and side % self.step == 0 for side in (width, height)
        )

    def describe(self) -> str:
        text = f"each side between {self.min} and {self.max} pixels"
        return text if self.step == 1 else f"{text} and a multiple of {self.step}"


def is_size(text: str) -> bool:
    """The reference's rule: "auto", or digits, a separator, digits, nothing else."""
    if text == "auto":
        return True
    return len(text) <= _MAX_TEXT and _STRICT_SIZE.fullmatch(text) is not None


def parse_size(text: str | None) -> tuple[int, int] | None:
    """(width, height) of a concrete size, None for "auto" or no size."""
    if text is None or text == "auto":
        return None
    match = _SIZE.match(text) if len(text) <= _MAX_TEXT else None
    if match is None:
        raise ValueError(f"'{text}' is not a size")
    return int(match.group(1)), int(match.group(2))


def normalise_size(text: str) -> str:
    """ "1024X768" and "1024×768" both become "1024x768"; "auto" stays."""
    dims = parse_size(text)
    return "auto" if dims is None else f"{dims[0]}x{dims[1]}"
