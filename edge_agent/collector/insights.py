"""The summary's use case (``GET /v1/insights``, ``edge-agent-collector summary``): which days
come from the rollup and which from the stored hours.

A summary by day at the rollup's k reads the days the rollup made (`store.rollups`: a venue's
days merge its agents' hours, a site's its own), so a quarter of a thousand sites is some
90,000 rows, not two million hour cells merged on the request. A day the rollup has not
caught up with (an hour of it still queued, a venue day queued) is made from its hours here,
so a summary is never behind what central stored. By hour, or at another k, every day is
made from the hours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date

import orjson

from edge_agent.collector.rollup import DASHBOARD_K
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.summary import DAY_MS, Query, RolledDay, Row
from edge_agent.collector.wire import WireError
from edge_agent.core.localtime import day_bounds, day_of, zone

#: Days made from their hours one query each; past this many, the period's hours are read
#: in one query and those days picked out.
MAX_SEPARATE_DAYS = 100
#: The most rows one summary answers, and hour cells it merges: bounds on one request's
#: memory and time (a quarter of every venue of a large fleet is far more; ask per venue).
MAX_ROWS = 20_000
MAX_CELLS = 50_000
#: How the summary is run on what was read: `summary.summarise`, in a worker process when
#: served (the sketches are read by C++ code).
Summarise = Callable[[Sequence[Row], Query, dict[str, str], Sequence[RolledDay]], dict[str, object]]


def summary_of(store: CentralStore, query: Query, run: Summarise) -> tuple[dict[str, object], int]:
    """The summary ``query`` asks for, and how many stored days and hours it was made of
    (0: central holds nothing for it).

    Raises:
        WireError: 422 more than `MAX_ROWS` rows or `MAX_CELLS` hour cells asked for; 500 a
            stored cell unreadable (from ``run``).
        Unavailable: the database is busy or unreachable.
    """
    by_site = query.site is not None
    zones = (
        {d.site: d.timezone for d in store.described_sites(site=query.site)}
        if by_site
        else store.venue_zones()
    )
    # A local day starts up to 14 hours either side of the UTC day of the same date.
    first_ms, end_ms = query.start_ms - DAY_MS, query.end_ms + DAY_MS
    if query.by != "day" or query.k != DASHBOARD_K:
        _bound(
            "hour cells", store.count_cells(first_ms, end_ms, query.venue, query.site), MAX_CELLS
        )
        rows = _rows(store, first_ms, end_ms, query)
        return run(rows, query, zones, ()), len(rows)
    days = query.start_day.isoformat(), query.end_day.isoformat()
    # Counted before any summary is read: a refused ask costs an index scan, not the rows.
    _bound("rows", store.count_rolled_days(*days, DASHBOARD_K, query.venue, query.site), MAX_ROWS)
    hours, venue_days = store.pending(first_ms, end_ms, query.venue, query.site)
    dirty = {(v, d) for v, d in venue_days} if not by_site else set()
    for site, venue, start_ms in hours:
        group = site if by_site else venue
        dirty.add((group, day_of(start_ms, zone(zones.get(group, "UTC"))).isoformat()))
    rolled = [
        RolledDay(venue, site, day, start_ms, orjson.loads(text))
        for venue, site, day, start_ms, text in store.rolled_days(
            *days, DASHBOARD_K, query.venue, query.site
        )
        if ((site or venue), day) not in dirty
    ]
    wanted = {(g, d) for g, d in dirty if days[0] <= d <= days[1]}
    _bound("rows", len(rolled) + len(wanted), MAX_ROWS)
    rows = _dirty_rows(store, query, wanted, zones, first_ms, end_ms)
    _bound("hour cells", len(rows), MAX_CELLS)
    return run(rows, query, zones, rolled), len(rows) + len(rolled)


def _bound(what: str, n: int, most: int) -> None:
    if n > most:
        raise WireError(
            422,
            f"this summary would take {n} {what}; at most {most} are taken in one: ask for "
            "fewer days, one venue (venue=) or one site (site=); every site's days are in the "
            "export (/v1/export), their figures in /v1/overview and /v1/trend",
        )


def _rows(store: CentralStore, first_ms: int, end_ms: int, query: Query) -> list[Row]:
    return [
        (c.site, c.venue, c.start_ms, c.cell)
        for c in store.insight_cells(first_ms, end_ms, query.venue, query.site)
    ]


def _dirty_rows(
    store: CentralStore,
    query: Query,
    wanted: set[tuple[str, str]],
    zones: dict[str, str],
    first_ms: int,
    end_ms: int,
) -> list[Row]:
    """The stored hours of the ``wanted`` (group, local day) days only."""
    if not wanted:
        return []
    by_site = query.site is not None

    def kept(rows: Sequence[Row]) -> list[Row]:
        out = []
        for row in rows:
            group = row[0] if by_site else row[1]
            day = day_of(row[2], zone(zones.get(group, "UTC"))).isoformat()
            if (group, day) in wanted:
                out.append(row)
        return out

    if len(wanted) > MAX_SEPARATE_DAYS:
        return kept(_rows(store, first_ms, end_ms, query))
    rows: list[Row] = []
    for group, label in sorted(wanted):
        start, end = day_bounds(date.fromisoformat(label), zone(zones.get(group, "UTC")))
        site, venue = (group, query.venue) if by_site else (None, group)
        rows += kept(
            [
                (c.site, c.venue, c.start_ms, c.cell)
                for c in store.insight_cells(start, end, venue, site)
            ]
        )
    return rows
