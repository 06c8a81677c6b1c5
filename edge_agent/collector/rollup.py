"""Rolling stored hour cells up into each site's days (`store.rollups`), in the background.

The collector's serve process runs `worker`: every few seconds it takes the queued
hours, finds their site-local days, recomputes each day from its stored cells in the
sandbox (the sketches are read by C++ code) and saves them; then the venue days those days
are part of, from all the venue's agents' hours (a visitor two agents saw counted once). A
day that cannot be read is logged and left queued, so the worker never loses a day and
never stops for one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, cast

from edge_agent.collector import summary
from edge_agent.collector.background import Worker
from edge_agent.collector.sandbox import Sandbox
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.rollups import QueuedDay, SiteDay, VenueDay
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
    """One pass over the queues: up to `BATCH_HOURS` hours, their days recomputed and saved,
    then the venue days those are part of (`roll_venues`).

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
        figures = _each(sandbox, summary.roll_days, summary.roll_day, hours, k, chunk)
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
    venues = store.venues()
    zones = {venue: tz for venue, (tz, _) in venues.items()}
    # A venue of one site in the site's zone has the site's days: copied, not made again.
    alone = [d for d in saved if venues.get(d.venue, ("", 0)) == (d.timezone, 1)]
    copied = {(d.site, d.day) for d in alone}
    store.save_days(
        saved,
        done,
        [v for d in saved if (d.site, d.day) not in copied for v in _venue_days(d, zones)],
        [
            VenueDay(d.venue, d.day, d.timezone, d.start_ms, d.end_ms, k, d.summary or {})
            for d in alone
        ],
    )
    failed += roll_venues(store, sandbox, zones, k)
    return Pass(len(saved), failed, store.queue_depth())


def _venue_days(day: SiteDay, zones: Mapping[str, str]) -> list[tuple[str, str]]:
    """The venue days (in the venue's zone) a site's day overlaps."""
    tz = zone(zones.get(day.venue, day.timezone))
    first, last = day_of(day.start_ms, tz), day_of(day.end_ms - 1, tz)
    return [
        (day.venue, (first + timedelta(days=n)).isoformat()) for n in range((last - first).days + 1)
    ]


def roll_venues(
    store: CentralStore, sandbox: Sandbox, zones: Mapping[str, str], k: int = DASHBOARD_K
) -> int:
    """Recompute up to `BATCH_HOURS` queued venue days from their agents' hour cells; returns
    how many failed (left queued).

    Raises:
        Unavailable: the database is busy or unreachable.
    """
    queued = store.queued_venue_days(BATCH_HOURS)
    made: list[VenueDay] = []
    failed = 0
    for start in range(0, len(queued), DAYS_PER_CALL):
        chunk = queued[start : start + DAYS_PER_CALL]
        bounds = []
        for venue, label, _ in chunk:
            tz_name = zones.get(venue, "UTC")
            bounds.append((tz_name, *day_bounds(date.fromisoformat(label), zone(tz_name))))
        hours = [
            [(c.site, c.start_ms, c.cell) for c in store.insight_cells(first, end, venue, None)]
            for (venue, _, _), (_, first, end) in zip(chunk, bounds, strict=True)
        ]
        summaries = _each(sandbox, summary.day_summaries, summary.day_summary, hours, k, chunk)
        for (venue, label, _), (tz_name, first, end), found in zip(
            chunk, bounds, summaries, strict=True
        ):
            if found is None:
                failed += 1
            else:
                made.append(VenueDay(venue, label, tz_name, first, end, k, found))
    made_keys = {(d.venue, d.day) for d in made}
    store.save_venue_days(made, [q for q in queued if (q[0], q[1]) in made_keys])
    return failed


def _each(
    sandbox: Sandbox,
    many: Callable[[Sequence[Any], int], list[dict[str, object]]],
    one: Callable[[Any, int], dict[str, object]],
    inputs: Sequence[Any],
    k: int,
    what: Sequence[object],
) -> list[dict[str, object] | None]:
    """``many(inputs, k)`` in the sandbox; if that fails, ``one`` of each input alone, so
    that whatever the sketch library raises on one day (a crash, or an error it throws on a
    stored image) does not hold back the others. A day that fails alone is logged, None."""
    try:
        return list(sandbox.call(many, inputs, k))
    except Exception:
        out: list[dict[str, object] | None] = []
        for item, described in zip(inputs, what, strict=True):
            try:
                out.append(sandbox.call(one, item, k))
            except Exception as exc:
                log.error("the day %s cannot be rolled up: %s", described, exc)
                out.append(None)
        return out


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
        summary=cast("dict[str, object]", figures["summary"]),
    )


def worker(store: CentralStore, sandbox: Sandbox, every_s: float = 5.0) -> Worker:
    """The serve process's rollup thread. A backlog is worked through without waiting; a
    pass with a failed day waits for the next period rather than spinning on it."""

    def one_pass() -> bool:
        result = roll_up(store, sandbox)
        return bool(result.queued and result.days and not result.failed)

    return Worker("rolling up days", one_pass, every_s)
