"""What expires when: raw events and dead letters have a time to live; aggregates do not."""

from __future__ import annotations

from dataclasses import dataclass

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Rows older than these epoch-millisecond times are deleted."""

    events_before_ms: int
    dead_letters_before_ms: int


def cutoffs(now_ms: int, events_days: int, dead_letters_days: int) -> Cutoffs:
    """The retention cut-offs at ``now_ms``: events by their own timestamp, dead letters by
    when they were last received."""
    return Cutoffs(now_ms - events_days * DAY_MS, now_ms - dead_letters_days * DAY_MS)
