"""Bar charts drawn on the server as SVG (the spend charts of `/usage` and `/billing`).

No chart library and no script: a handful of rectangles in a viewBox that scales with its
box, coloured by the design tokens (so it follows light and dark), with a `<title>` and a
`<desc>` for assistive technology and, next to it in the page, the same numbers as a table.
The amounts are credits as the ledger and the usage log hold them; this module only scales
bar heights and writes labels with `kit/money.format_usd`.
"""

from __future__ import annotations

from dataclasses import dataclass

from image_router.kit.money import format_usd

WIDTH = 600
HEIGHT = 160
TOP = 8  # room above the tallest bar
BASE = HEIGHT - 20  # the axis; the first and last labels sit below it


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # "2025-06-01: $1.2000 (3 requests)", the bar's tooltip
    amount: str  # "$1.2000"


@dataclass(frozen=True)
class Chart:
    title: str
    description: str  # one sentence: the range and the total
    bars: list[Bar]
    width: int
    height: int
    base: int
    first_label: str
    last_label: str
    peak: str  # the tallest bar's amount, written at the top left
    empty: bool


def bar_chart(title: str, points: list[tuple[str, int, str]], *, unit: str = "day") -> Chart:
    """A chart of `points` — (label, credits, extra words for the tooltip) — oldest first."""
    peak = max((credits for _, credits, _ in points), default=0)
    slot = WIDTH / max(len(points), 1)
    gap = min(2.0, slot * 0.2)
    bars = []
    for i, (label, credits, extra) in enumerate(points):
        height = 0.0 if peak <= 0 else (BASE - TOP) * max(credits, 0) / peak
        if credits > 0:
            height = max(height, 1.0)  # a small amount stays visible
        amount = f"${format_usd(credits)}"
        bars.append(
            Bar(
                x=round(i * slot + gap / 2, 2),
                y=round(BASE - height, 2),
                width=round(slot - gap, 2),
                height=round(height, 2),
                label=f"{label}: {amount}" + (f" ({extra})" if extra else ""),
                amount=amount,
            )
        )
    total = sum(credits for _, credits, _ in points)
    first = points[0][0] if points else ""
    last = points[-1][0] if points else ""
    description = (
        f"Spend per {unit} from {first} to {last}: ${format_usd(total)} in total, "
        f"at most ${format_usd(peak)} in one {unit}."
    )
    return Chart(
        title=title,
        description=description,
        bars=bars,
        width=WIDTH,
        height=HEIGHT,
        base=BASE,
        first_label=first,
        last_label=last,
        peak=f"${format_usd(peak)}",
        empty=peak <= 0,
    )
