"""Rolling stored hour cells up into each site's days (`store.rollups`), in the background.

The collector's serve process runs `worker`: every few seconds it takes the queued
hours, finds their site-local days, recomputes each day from its stored cells in the
sandbox (the sketches are read by C++ code) and saves them. A day that cannot be read is
logged and left queued, so the worker never loses a day and never stops for one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge_agent.collector import summary
from edge_agent.collector.background import Worker
from edge_agent.collector.sandbox import Sandbox
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.rollups import QueuedDay, SiteDay
from edge_agent.core.localtime import day_bounds, day_of, zone

log = logging.getLogger(__name__)

#: Hours taken off the queue per pass: a pass stays short however long the backlog.
BATCH_HOURS = 2000
#: Days read per call into the sandbox: few calls, and a crash isolates a small group.
DAYS_PER_CALL = 50
#: The least number of distinct visitors behind a figure the dashboard shows (as the
#: summary's default).
DASHBOARD_K = 5


@dataclass(frozen=True, slots=True)
class Pass:
    """What one pass did: days rolled up, days that failed, hours still queued."""

    days: int
    failed: int
    queued: int


def days_of(queued: list[tuple[str, str, str, int, int]]) -> list[QueuedDay]:
    """The distinct site-local days the queued hours fall in."""
    days: dict[tuple[str, str], QueuedDay] = {}
    for site, venue, tz_name, start_ms, _ in queued:
        tz = zone(tz_name)
        day = day_of(start_ms, tz)
        start, end = day_bounds(day, tz)
        days.setdefault(
            (site, day.isoformat()), QueuedDay(site, venue, tz_name, day.isoformat(), start, end)
        )
    return list(days.values())


def roll_up(store: CentralStore, sandbox: Sandbox, k: int = DASHBOARD_K) -> Pass:
    """One pass over the queue: up to `BATCH_HOURS` hours, their days recomputed and saved.

    Raises:
        Unavailable: the database is busy or unreachable.
    """
    queued = store.queued_hours(BATCH_HOURS)
    days = days_of(queued)
    saved: list[SiteDay] = []
    failed = 0
    for start in range(0, len(days), DAYS_PER_CALL):
        chunk = days[start : start + DAYS_PER_CALL]
        hours = [store.cells_between(d.site, d.start_ms, d.end_ms) for d in chunk]
        figures: list[dict[str, object] | None]
        try:
            figures = list(sandbox.call(summary.roll_days, hours, k))
        # Whatever the sketch library raises on a day (a crash, or an error it throws on a
        # stored image), that day must not hold back the others: each alone, to find it.
        except Exception:
            figures = []
            for day, its_hours in zip(chunk, hours, strict=True):
                try:
                    figures.append(sandbox.call(summary.roll_day, its_hours, k))
                except Exception as exc:
                    log.error(
                        "the day %s of site %s cannot be rolled up: %s", day.day, day.site, exc
                    )
                    figures.append(None)
        for day, figure in zip(chunk, figures, strict=True):
            if figure is None:
                failed += 1
            else:
                saved.append(_site_day(day, k, figure))
    done_days = {(d.site, d.day) for d in saved}
    done = [
        (site, start_ms, queued_ms)
        for site, _, tz_name, start_ms, queued_ms in queued
        if (site, day_of(start_ms, zone(tz_name)).isoformat()) in done_days
    ]
    store.save_days(saved, done)
    return Pass(len(saved), failed, store.queue_depth())


def _site_day(day: QueuedDay, k: int, figures: dict[str, object]) -> SiteDay:
    detail = figures["detail"]
    assert isinstance(detail, dict)
    return SiteDay(
        site=day.site,
        day=day.day,
        venue=day.venue,
        timezone=day.timezone,
        start_ms=day.start_ms,
        end_ms=day.end_ms,
        k=k,
        hours=int(str(figures["hours"])),
        suppressed_hours=int(str(figures["suppressed_hours"])),
        suppressed=bool(figures["suppressed"]),
        sums={name: float(str(figures[name])) for name in summary.DAY_SUMS},
        currency=str(figures["currency"]),
        detail=detail,
    )


def worker(store: CentralStore, sandbox: Sandbox, every_s: float = 5.0) -> Worker:
    """The serve process's rollup thread. A backlog is worked through without waiting; a
    pass with a failed day waits for the next period rather than spinning on it."""

    def one_pass() -> bool:
        result = roll_up(store, sandbox)
        return bool(result.queued and result.days and not result.failed)

    return Worker("rolling up days", one_pass, every_s)
