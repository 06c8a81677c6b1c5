"""The dashboard's SVG charts, read as text: what a person sees on the scale and in the gaps."""

from __future__ import annotations

import re

from edge_agent.collector.web.charts import line_chart


def _scale(svg: str) -> list[str]:
    """The labels of the value scale, bottom up: those right-aligned left of the plot."""
    ticks = re.findall(r'<text class="tick" x="(\d+)"[^>]*text-anchor="end">([^<]*)</text>', svg)
    return [label for x, label in ticks if x == ticks[0][0]]


def test_a_flat_zero_line_has_a_scale_that_reads_in_order() -> None:
    svg = line_chart("Dead letters per day", [("11-27", 0.0), ("11-28", 0.0), ("11-29", 0.0)])
    assert _scale(svg) == ["0", "0.5", "1"]


def test_a_missing_day_is_a_gap_not_a_fall_to_zero() -> None:
    svg = line_chart("Footfall", [("a", 10.0), ("b", None), ("c", 30.0)])
    assert svg.count('<rect class="gap"') == 1
    assert _scale(svg)[0] == "0"
