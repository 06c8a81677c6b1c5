"""Retention cut-offs."""

from __future__ import annotations

from edge_agent.core.retention import DAY_MS, cutoffs


def test_cutoffs_count_back_from_now() -> None:
    now = 100 * DAY_MS
    result = cutoffs(now, events_days=30, dead_letters_days=14)
    assert result.events_before_ms == 70 * DAY_MS
    assert result.dead_letters_before_ms == 86 * DAY_MS
