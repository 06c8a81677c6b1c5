"""Summaries over the stored hour cells of many sites, and the check of an incoming cell.

The sketches are read by C++ code that a crafted cell can crash, so `check_cells` and
`summarise` are meant to run in a worker process (`edge_agent.collector.sandbox`); this module
imports nothing else of the collector so a worker starts light. Merging and suppression are
`edge_agent.core.aggregate`'s: the same hour of several agents of a venue is merged, then the
day's hours are released with `release` (cells seen by fewer than k visitors suppressed).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import cast

import orjson

from edge_agent.collector.wire import WireError
from edge_agent.core.aggregate import (
    HOUR_MS,
    Cell,
    from_document,
    merge,
    releasable,
    release,
    to_document,
)
from edge_agent.core.cellcheck import CellLimits, bounds_problem, figures_problem
from edge_agent.core.localtime import day_bounds, day_of, zone

DAY_MS = 24 * HOUR_MS
MAX_DAYS = 366
#: A stored cell as a summary reads it: site, venue, start_ms, JSON document (None: suppressed).
Row = tuple[str, str, int, str | None]
# The period itself is given by each row's own columns.
_NOT_FIGURES = frozenset({"start_ms", "hours", "suppressed", "reason"})
_HEAD = (
    "venue",
    "site",
    "period",
    "start_ms",
    "sites",
    "suppressed",
    "reason",
    "suppressed_hours",
    "suppressed_cells",
    # Beside whatever figures are chosen, since revenue means nothing without it.
    "currency",
)
#: Figures whose name a summary row already has for its group: the row shows them as these.
_AS_COLUMN = {"venue": "venue_figures"}
#: The figures a summary can be restricted to, as `release` names them (or `_AS_COLUMN`).
METRICS: tuple[str, ...] = tuple(
    column
    for column in (_AS_COLUMN.get(name, name) for name in release([Cell(0)], 0).total or {})
    if column not in {*_NOT_FIGURES, *_HEAD}
)


@dataclass(frozen=True, slots=True)
class Query:
    """What to summarise: a venue and/or a site, whole UTC days, by day or hour."""

    start_day: date
    end_day: date
    by: str
    k: int
    venue: str | None = None
    site: str | None = None
    metrics: tuple[str, ...] = ()

    @property
    def start_ms(self) -> int:
        """The first millisecond of ``start_day``."""
        return _day_ms(self.start_day)

    @property
    def end_ms(self) -> int:
        """The millisecond after ``end_day``."""
        return _day_ms(self.end_day) + DAY_MS


def _day_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def _parse_day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise WireError(422, f"{name}: {text!r} is not a day YYYY-MM-DD") from exc


def make_query(
    *,
    start: str | None,
    end: str | None,
    by: str,
    k: int,
    venue: str | None,
    site: str | None,
    metrics: Sequence[str],
    today: date,
) -> Query:
    """A checked `Query`; by default the 7 days up to ``today``.

    Raises:
        WireError: 422 naming the parameter that is out of range.
    """
    end_day = _parse_day(end, "to") if end else today
    start_day = _parse_day(start, "from") if start else end_day - timedelta(days=6)
    if start_day > end_day:
        raise WireError(422, f"from {start_day} is after to {end_day}")
    if (end_day - start_day).days >= MAX_DAYS:
        raise WireError(422, f"from..to spans more than {MAX_DAYS} days: ask for fewer")
    if by not in ("day", "hour"):
        raise WireError(422, f"by: {by!r} is not day or hour")
    if k < 1:
        raise WireError(422, f"k: {k} is below 1")
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise WireError(422, f"metric: unknown {', '.join(unknown)}; known: {', '.join(METRICS)}")
    return Query(start_day, end_day, by, k, venue, site, tuple(dict.fromkeys(metrics)))


def check_cells(
    documents: Sequence[Mapping[str, object]], limits: CellLimits
) -> list[dict[str, object] | str]:
    """Each document read, merged and written back by the sketch library (what central stores),
    or the reason it cannot be read or is not believable (`edge_agent.core.cellcheck`)."""
    out: list[dict[str, object] | str] = []
    for document in documents:
        if problem := bounds_problem(document, limits):
            out.append(problem)
            continue
        try:
            cell = from_document(document)
            merge([cell, cell]).figures()
            problem = figures_problem(cell, limits)
            out.append(to_document(cell) if problem is None else problem)
        # Whatever a malformed document makes the library raise, it is refused, not stored.
        except Exception as exc:
            out.append(f"not a readable insight cell: {exc}")
    return out


@dataclass
class _Hour:
    start_ms: int
    cells: list[Cell] = field(default_factory=list)
    sites: set[str] = field(default_factory=set)
    suppressed: int = 0

    def merged(self) -> Cell:
        # An hour every agent suppressed is an empty cell, which `release` suppresses in turn.
        return merge(self.cells) if self.cells else Cell(self.start_ms)


@dataclass(frozen=True, slots=True)
class RolledDay:
    """A group's day as the rollup keeps it (`day_summary`): the venue, the site when the
    summary is by site, the group's local day, when it starts, and its summary."""

    venue: str
    site: str | None
    day: str
    start_ms: int
    summary: Mapping[str, object]


def day_summary(hours: Sequence[tuple[str, int, str | None]], k: int) -> dict[str, object]:
    """One group's day from its stored hour cells (site, start, document or None when the
    site suppressed it): the same hour of several agents merged, the day's hours released
    (`release`), and what a summary row says of them: ``total`` (None when every hour is
    suppressed), ``suppressed_hours`` (below ``k`` here), ``suppressed_cells`` (by the
    sites) and how many ``sites`` sent one."""
    by_start = _hours(hours)
    released = release([h.merged() for h in by_start.values()], k)
    return {
        "total": released.total,
        "suppressed_hours": released.suppressed_hours,
        "suppressed_cells": sum(h.suppressed for h in by_start.values()),
        "sites": len(set().union(*(h.sites for h in by_start.values()))),
    }


def day_summaries(
    days: Sequence[Sequence[tuple[str, int, str | None]]], k: int
) -> list[dict[str, object]]:
    """`day_summary` of each day: many days per call into a worker process."""
    return [day_summary(hours, k) for hours in days]


def _hours(rows: Sequence[tuple[str, int, str | None]]) -> dict[int, _Hour]:
    by_start: dict[int, _Hour] = {}
    for site, start_ms, document in sorted(rows, key=lambda r: r[1]):
        hour = by_start.setdefault(start_ms, _Hour(start_ms))
        hour.sites.add(site)
        if document is None:
            hour.suppressed += 1
        else:
            hour.cells.append(from_document(orjson.loads(document)))
    return by_start


def summarise(
    rows: Sequence[Row],
    query: Query,
    zones: Mapping[str, str] | None = None,
    rolled: Sequence[RolledDay] = (),
) -> dict[str, object]:
    """Rows per group (the venue, or the site when the query names one) and day or hour,
    each with its figures (`METRICS`) unless suppressed.

    A day is the group's own, in ``zones[group]`` (UTC when not given), and the query's days
    are those local days. The same hour of several sites is merged first; a day is released
    from its merged hours, so a suppressed hour is counted, never shown; ``suppressed_cells``
    counts the stored cells that their site had already suppressed. Days the rollup already
    summarised come in ``rolled``; ``rows`` then hold the hours of the other days.
    """
    zones = zones or {}
    groups: dict[tuple[str, str | None], list[tuple[str, int, str | None]]] = {}
    for site, venue, start_ms, document in rows:
        groups.setdefault((venue, site if query.site is not None else None), []).append(
            (site, start_ms, document)
        )
    out: list[dict[str, object]] = [
        _row({"venue": r.venue, "site": r.site}, r.day, r.start_ms, r.summary, query.k)
        for r in rolled
        if query.start_day.isoformat() <= r.day <= query.end_day.isoformat()
    ]
    for (group_venue, group_site), hours in groups.items():
        tz = zone(zones.get(group_site or group_venue, "UTC"))
        days: dict[date, list[tuple[str, int, str | None]]] = {}
        for hour in hours:
            days.setdefault(day_of(hour[1], tz), []).append(hour)
        common = {"venue": group_venue, "site": group_site}
        for day, day_hours in days.items():
            if not query.start_day <= day <= query.end_day:
                continue
            if query.by == "hour":
                out += _hour_rows(common, day_hours, query.k)
            else:
                summary = day_summary(day_hours, query.k)
                start = day_bounds(day, tz)[0]
                out.append(_row(common, day.isoformat(), start, summary, query.k))
    out.sort(key=lambda r: (str(r["venue"]), str(r["site"] or ""), cast("int", r["start_ms"])))
    return {
        "by": query.by,
        "k": query.k,
        "start_day": query.start_day.isoformat(),
        "end_day": query.end_day.isoformat(),
        "venue": query.venue,
        "site": query.site,
        "metrics": list(query.metrics) or None,
        "rows": [_select(row, query.metrics) for row in out],
    }


def _hour_rows(
    common: Mapping[str, object], hours: Sequence[tuple[str, int, str | None]], k: int
) -> list[dict[str, object]]:
    """A day's hours, each released on its own (occupancy running through the day)."""
    by_start = _hours(hours)
    released = release([h.merged() for h in by_start.values()], k)
    rows = []
    for hour, figures in zip(by_start.values(), released.hours, strict=True):
        suppressed = "suppressed" in figures
        summary = {
            "total": None if suppressed else figures,
            "suppressed_hours": int(suppressed),
            "suppressed_cells": hour.suppressed,
            "sites": len(hour.sites),
        }
        label = datetime.fromtimestamp(hour.start_ms / 1000, UTC).strftime(_HOUR)
        rows.append(_row(common, label, hour.start_ms, summary, k))
    return rows


def _all_suppressed(k: int) -> dict[str, object]:
    return {"suppressed": True, "reason": f"every hour seen by fewer than {k} distinct visitors"}


_HOUR = "%Y-%m-%dT%H:00Z"


def _row(
    common: Mapping[str, object],
    period: str,
    start_ms: int,
    summary: Mapping[str, object],
    k: int,
) -> dict[str, object]:
    total = cast("Mapping[str, object] | None", summary["total"])
    released = total if total is not None else _all_suppressed(k)
    suppressed = bool(released.get("suppressed", False))
    row = {
        **common,
        "period": period,
        "start_ms": start_ms,
        "sites": summary["sites"],
        "suppressed": suppressed,
        "reason": released.get("reason") if suppressed else None,
        "suppressed_hours": summary["suppressed_hours"],
        "suppressed_cells": summary["suppressed_cells"],
    }
    if not suppressed:
        row.update(
            (_AS_COLUMN.get(name, name), value)
            for name, value in released.items()
            if name not in _NOT_FIGURES
        )
    return row


def _select(row: dict[str, object], metrics: tuple[str, ...]) -> dict[str, object]:
    if not metrics:
        return row
    return {name: value for name, value in row.items() if name in _HEAD or name in metrics}


#: What a spreadsheet takes for the start of a formula (OWASP, CSV injection).
_FORMULA_START = ("=", "+", "-", "@")
_CONTROLS = dict.fromkeys(range(32), " ")


def spreadsheet_safe(value: object) -> object:
    """A CSV field an analyst's spreadsheet shows as text: control characters become spaces,
    and a string that would start a formula (``=HYPERLINK(...)`` in a product id or zone name
    a site sent) gets a leading ``'``, as OWASP recommends. Numbers stay numbers, negative
    ones included; a truth value is ``true`` or ``false``, as BI tools read it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        return value
    # A line break or tab inside a field would start another line or cell in some readers.
    text = value.translate(_CONTROLS)
    return "'" + text if text.lstrip().startswith(_FORMULA_START) else text


def to_csv(summary: Mapping[str, object]) -> str:
    """A summary as CSV: one line per row (see `table_csv`)."""
    return table_csv(cast("list[dict[str, object]]", summary["rows"]), _HEAD)


def table_csv(rows: Sequence[Mapping[str, object]], head: Sequence[str] = ()) -> str:
    """Rows as CSV: ``head`` first, then every other column in order of appearance; nested
    figures flattened to dotted columns (``dwell_s.dairy.median``) and lists to
    ``name=count;...``; every text, column names included, made `spreadsheet_safe`."""
    flat_rows: list[dict[str, object]] = []
    columns: dict[str, None] = dict.fromkeys(head)
    for row in rows:
        flat: dict[str, object] = {}
        _flatten("", row, flat)
        safe = {str(spreadsheet_safe(k)): spreadsheet_safe(v) for k, v in flat.items()}
        columns.update(dict.fromkeys(safe))
        flat_rows.append(safe)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat_rows)
    return out.getvalue()


def _flatten(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, Mapping):
        for name, inner in value.items():
            _flatten(f"{prefix}.{name}" if prefix else str(name), inner, out)
    elif isinstance(value, list | tuple):
        out[prefix] = ";".join(
            "=".join(str(part) for part in entry) if isinstance(entry, list | tuple) else str(entry)
            for entry in value
        )
    else:
        out[prefix] = value


#: The figures of a rolled-up day that add up across days and sites (`store.rollups`).
DAY_SUMS = (
    "footfall_in",
    "footfall_out",
    "visits",
    "visitors",
    "identified_visits",
    "orders",
    "unpriced_orders",
    "revenue",
    "items",
    "nps_answers",
    "promoters",
    "detractors",
    "ces_answers",
    "ces_sum",
    "duplicates",
    "dead_letters",
)
#: What a rolled-up day keeps beside its sums, for the site page and the exports.
DAY_DETAIL = (
    "other_revenue",
    "occupancy_peak",
    "basket_value_median",
    "basket_size_median",
    "dwell_s",
    "top_paths",
    "top_products",
    "top_categories",
    "dead_letters_by_reason",
)


def roll_day(hours: Sequence[tuple[int, str | None]], k: int) -> dict[str, object]:
    """A site's day from its stored hour cells (start, JSON document or None when the site
    suppressed it): ``hours`` and ``suppressed_hours`` (by the site or below ``k`` here),
    ``suppressed`` when none is left, the `DAY_SUMS`, ``currency``, the `DAY_DETAIL`, and
    ``summary``, the day as a summary row shows it (`day_summary`).

    Sums of a day released from its hours add up across days: what the dashboard shows for
    a month is the sum of its days, never a figure of a suppressed hour.
    """
    by_start = _hours([("", start, doc) for start, doc in hours])
    cells = [h.merged() for h in by_start.values() if h.cells]
    released = release(cells, k)
    total = released.total
    site_suppressed = sum(doc is None for _, doc in hours)
    day: dict[str, object] = {
        "hours": len(hours),
        "suppressed_hours": released.suppressed_hours + site_suppressed,
        "suppressed": total is None,
        "summary": {
            "total": total,
            "suppressed_hours": released.suppressed_hours
            + sum(1 for h in by_start.values() if not h.cells),
            "suppressed_cells": site_suppressed,
            "sites": 1 if hours else 0,
        },
    }
    if total is None:
        return {**day, **dict.fromkeys(DAY_SUMS, 0), "currency": "", "detail": {}}
    sums = merge(c for c in cells if releasable(c, k)).sums()
    return {
        **day,
        **{name: sums[name] for name in DAY_SUMS},
        "currency": total["currency"] or "",
        "detail": {name: total[name] for name in DAY_DETAIL},
    }


def roll_days(days: Sequence[Sequence[tuple[int, str | None]]], k: int) -> list[dict[str, object]]:
    """`roll_day` of each day: many days per call into a worker process."""
    return [roll_day(hours, k) for hours in days]


def place_period(rows: Sequence[tuple[int, str | None]], k: int) -> dict[str, object]:
    """A site's or a venue's stored hours over a period (start, document or None when its
    site suppressed it; a venue has one per agent and hour, merged first, so a visitor two
    agents saw counts once): ``hours``, each hour's start with its door count and visitors
    (None when suppressed, at the sites or below ``k`` here), ``total``, the released hours
    merged (visitors, zones' dwell, paths, top products), None when every hour is
    suppressed."""
    by_hour: dict[int, _Hour] = {}
    for start, document in rows:
        hour = by_hour.setdefault(start, _Hour(start))
        if document is None:
            hour.suppressed += 1
        else:
            hour.cells.append(from_document(orjson.loads(document)))
    merged = {start: hour.merged() for start, hour in by_hour.items() if hour.cells}
    released = release(merged.values(), k)
    by_start = {cast("int", h["start_ms"]): h for h in released.hours}
    hours: list[dict[str, object]] = []
    for start in sorted(by_hour):
        figures = by_start.get(start)
        shown = figures is not None and "suppressed" not in figures
        hours.append(
            {
                "start_ms": start,
                "footfall_in": figures["footfall_in"] if shown and figures else None,
                "visitors": figures["visitors"] if shown and figures else None,
            }
        )
    return {
        "hours": hours,
        "total": released.total,
        "suppressed_hours": released.suppressed_hours,
    }
