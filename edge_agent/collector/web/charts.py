"""Charts of the collector's pages, drawn here as SVG: no script, nothing loaded, and they
print. Pure: figures in, markup out; every text escaped. Colours come from the style sheet
(classes), since the pages' policy allows no inline style."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

WIDTH = 720
HEIGHT = 220
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 14, 34


def number(value: float | None, digits: int = 0) -> str:
    """A figure as people read it: thousands separated, a dash when there is none."""
    if value is None:
        return "\N{EN DASH}"
    return f"{value:,.{digits}f}"


def _nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``."""
    if value <= 0:
        return 1.0
    scale = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 5, 10):
        if step * scale >= value:
            return float(step * scale)
    return float(10 * scale)


def line_chart(
    title: str, points: Sequence[tuple[str, float | None]], digits: int = 0, unit: str = ""
) -> str:
    """A line over ``points`` (label, value) with a break wherever a value is missing, so a
    period with nothing reported is a shaded gap, never a fall to zero; a lone point is a
    dot. The scale runs from 0 (or below it, for a figure such as NPS that can be negative)."""
    shown = [v for _, v in points if v is not None]
    top = _nice_top(max(shown, default=0.0))
    low = -_nice_top(-min(shown)) if shown and min(shown) < 0 else 0.0
    inner_w, inner_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    step = inner_w / max(1, len(points) - 1)

    def x(i: int) -> float:
        return _LEFT + (i * step if len(points) > 1 else inner_w / 2)

    def y(v: float) -> float:
        return _TOP + inner_h * (top - v) / (top - low)

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    # Runs of missing values, shaded first so that the line is drawn over their edges.
    start: int | None = None
    for i, (_, value) in enumerate([*points, ("", 0.0)]):
        if value is None and start is None:
            start = i
        elif value is not None and start is not None:
            left = max(_LEFT, x(start) - step / 2)
            right = min(WIDTH - _RIGHT, x(i - 1) + step / 2)
            parts.append(
                f'<rect class="gap" x="{left:.1f}" y="{_TOP}" width="{max(2.0, right - left):.1f}" '
                f'height="{inner_h}"><title>nothing reported</title></rect>'
            )
            start = None
    shown_digits = digits if top - low < 10 else 0
    for tick in sorted({low, 0.0, (low + top) / 2 if low == 0 else 0.0, top}):
        at = y(tick)
        # A half-way tick of a small scale (0.5 of 1) keeps its digit, never reads as 0 or 1.
        tick_digits = shown_digits if round(tick, shown_digits) == tick else shown_digits + 1
        parts.append(
            f'<line class="grid" x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{at:.1f}" y2="{at:.1f}"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{at + 4:.1f}" text-anchor="end">'
            f"{escape(number(tick, tick_digits))}{escape(unit)}</text>"
        )
    runs: list[list[tuple[float, float]]] = [[]]
    for i, (_, value) in enumerate(points):
        if value is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((x(i), y(value)))
    for run in runs:
        if len(run) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in run)
            parts.append(f'<polyline class="series" points="{path}"/>')
        elif run:
            parts.append(f'<circle class="dot" cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="3"/>')
    if points:
        last = len(points) - 1
        for i in sorted({0, last // 2, last}):
            anchor = "start" if i == 0 and last else "end" if i == last and last else "middle"
            parts.append(
                f'<text class="tick" x="{x(i):.1f}" y="{HEIGHT - 10}" text-anchor="{anchor}">'
                f"{escape(points[i][0])}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def heat_level(value: float | None, top: float) -> str:
    """The class of a heat-map cell: ``h0`` (least) to ``h5`` (most), ``hn`` for none."""
    if value is None:
        return "hn"
    if top <= 0:
        return "h0"
    return f"h{min(5, int(6 * value / top))}"
