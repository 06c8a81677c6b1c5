"""The central team's figures from rolled-up days (`store.rollups`): a period's overview with
its change against the period before, sites side by side with a ranking, and trends.

Pure functions: no I/O. Every figure is a sum of site-local days, or a ratio of such sums,
so a month is its days added up and no suppressed hour is ever in a figure. Money is never
added across currencies: revenue is a figure per currency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from edge_agent.collector.store.rollups import DaySums, SiteDay
from edge_agent.collector.wire import WireError

#: The figures of a period, in the order a table shows them.
FIGURES: tuple[str, ...] = (
    "footfall",
    "visits",
    "conversion",
    "orders",
    "revenue",
    "nps",
    "ces",
    "identified_share",
)
#: Figures that are ratios: their change is a difference, not a percentage.
RATIOS = frozenset({"conversion", "nps", "ces", "identified_share"})
MAX_DAYS = 366


@dataclass(frozen=True, slots=True)
class Period:
    """Site-local days from ``first`` to ``last``, inclusive."""

    first: date
    last: date

    @property
    def days(self) -> int:
        """How many days it spans."""
        return (self.last - self.first).days + 1

    def before(self) -> Period:
        """The period of the same length just before it."""
        return Period(self.first - timedelta(days=self.days), self.first - timedelta(days=1))

    def labels(self) -> tuple[str, str]:
        """Its first and last day as ISO dates (how days are stored)."""
        return self.first.isoformat(), self.last.isoformat()


def period(start: str | None, end: str | None, today: date, default_days: int = 7) -> Period:
    """A checked period; by default the ``default_days`` up to ``today``.

    Raises:
        WireError: 422 naming the parameter that is not a day or out of range.
    """
    last = _day(end, "to") if end else today
    first = _day(start, "from") if start else last - timedelta(days=default_days - 1)
    if first > last:
        raise WireError(422, f"from {first} is after to {last}")
    if (last - first).days >= MAX_DAYS:
        raise WireError(422, f"from..to spans more than {MAX_DAYS} days: ask for fewer")
    return Period(first, last)


def _day(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise WireError(422, f"{name}: {text!r} is not a day YYYY-MM-DD") from exc


@dataclass
class Totals:
    """Sums of days, kept per currency for money, and what they leave out."""

    days: int = 0
    suppressed_days: int = 0
    suppressed_hours: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    revenue: dict[str, float] = field(default_factory=dict)

    def add(
        self,
        days: int,
        suppressed_days: int,
        suppressed_hours: int,
        currency: str,
        sums: Mapping[str, float],
    ) -> None:
        """Add days of one currency."""
        self.days += days
        self.suppressed_days += suppressed_days
        self.suppressed_hours += suppressed_hours
        for name, value in sums.items():
            if name != "revenue":
                self.sums[name] = self.sums.get(name, 0.0) + value
        if sums.get("revenue") or currency:
            code = currency or "unknown"
            self.revenue[code] = self.revenue.get(code, 0.0) + sums.get("revenue", 0.0)

    def absorb(self, other: Totals) -> None:
        """Add ``other``'s days to these."""
        self.days += other.days
        self.suppressed_days += other.suppressed_days
        self.suppressed_hours += other.suppressed_hours
        for name, value in other.sums.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
        for code, value in other.revenue.items():
            self.revenue[code] = self.revenue.get(code, 0.0) + value

    def figures(self) -> dict[str, object]:
        """The period's figures (`FIGURES`): None where there is nothing to divide by, and
        every one None when no day was released (none reported, or all suppressed: a count
        of 0 would read as a closed shop); ``revenue`` is ``{currency: amount}``."""
        s = self.sums
        if self.days == self.suppressed_days:
            return {name: ({} if name == "revenue" else None) for name in FIGURES}
        return {
            "footfall": int(s.get("footfall_in", 0)),
            "visits": int(s.get("visits", 0)),
            "conversion": _ratio(s.get("orders", 0), s.get("footfall_in", 0)),
            "orders": int(s.get("orders", 0)),
            "revenue": {c: round(v, 2) for c, v in sorted(self.revenue.items()) if v},
            "nps": _ratio(
                100 * (s.get("promoters", 0) - s.get("detractors", 0)), s.get("nps_answers", 0), 1
            ),
            "ces": _ratio(s.get("ces_sum", 0), s.get("ces_answers", 0), 2),
            "identified_share": _ratio(s.get("identified_visits", 0), s.get("visits", 0)),
        }

    def coverage(self) -> dict[str, int]:
        """What the figures leave out: days wholly suppressed and suppressed hours."""
        return {
            "days": self.days,
            "suppressed_days": self.suppressed_days,
            "suppressed_hours": self.suppressed_hours,
        }


def _ratio(numerator: float, denominator: float, digits: int = 4) -> float | None:
    return round(numerator / denominator, digits) if denominator else None


def totals(rows: Iterable[DaySums]) -> dict[str, Totals]:
    """Rows of `RollupStore.sums_by` added up per key (site, day or venue)."""
    out: dict[str, Totals] = {}
    for row in rows:
        out.setdefault(row.key, Totals()).add(
            row.days, row.suppressed_days, row.suppressed_hours, row.currency, row.sums
        )
    return out


def grand_total(rows: Iterable[DaySums]) -> Totals:
    """Every row added up into one."""
    total = Totals()
    for row in rows:
        total.add(row.days, row.suppressed_days, row.suppressed_hours, row.currency, row.sums)
    return total


def change(now: Mapping[str, object], before: Mapping[str, object]) -> dict[str, object]:
    """Each figure's change against the period before: relative (0.12 = +12%) for counts,
    the difference for ratios, per currency for revenue; None when there is no earlier
    figure to compare with."""
    out: dict[str, object] = {}
    for name in FIGURES:
        new, old = now.get(name), before.get(name)
        if name == "revenue":
            assert isinstance(new, Mapping)
            assert isinstance(old, Mapping)
            out[name] = {code: _relative(new.get(code, 0.0), old.get(code)) for code in new}
        elif name in RATIOS:
            out[name] = (
                round(new - old, 4)
                if isinstance(new, int | float) and isinstance(old, int | float)
                else None
            )
        else:
            out[name] = _relative(new, old)
    return out


def _relative(new: object, old: object) -> float | None:
    if not isinstance(new, int | float) or not isinstance(old, int | float) or not old:
        return None
    return round((new - old) / old, 4)


def overview(
    now: Sequence[DaySums], before: Sequence[DaySums], sites: int, span: Period
) -> dict[str, object]:
    """A period across the fleet (or a venue): its figures, the change against the period
    before, how many sites reported and what the figures leave out."""
    current, earlier = grand_total(now), grand_total(before)
    figures, previous = current.figures(), earlier.figures()
    return {
        "from": span.first.isoformat(),
        "to": span.last.isoformat(),
        "previous": {"from": span.before().first.isoformat(), "to": span.before().last.isoformat()},
        "sites": sites,
        "sites_reporting": len({row.key for row in now}),
        "figures": figures,
        "previous_figures": previous,
        "change": change(figures, previous),
        "coverage": current.coverage(),
    }


def comparison(
    now: Sequence[DaySums],
    before: Sequence[DaySums],
    names: Mapping[str, Mapping[str, object]],
    sort: str,
    descending: bool = True,
) -> list[dict[str, object]]:
    """Sites side by side for a period, ranked by ``sort`` (a `FIGURES` name; revenue ranks by
    the site's largest currency): each with its figures, change, coverage and ``marked`` when
    some of its hours were suppressed (fewer than k visitors), so its figures are partial.
    Sites without a figure to rank by come last; ties go to the site id.

    Raises:
        WireError: 422 when ``sort`` is not a figure.
    """
    if sort not in FIGURES:
        raise WireError(422, f"sort: unknown {sort!r}; known: {', '.join(FIGURES)}")
    current, earlier = totals(now), totals(before)
    rows = []
    for site, described in names.items():
        totals_now = current.get(site, Totals())
        figures = totals_now.figures()
        coverage = totals_now.coverage()
        rows.append(
            {
                "site": site,
                **described,
                "figures": figures,
                "change": change(figures, earlier.get(site, Totals()).figures()),
                "coverage": coverage,
                "marked": bool(coverage["suppressed_days"] or coverage["suppressed_hours"]),
                "reporting": site in current,
            }
        )

    def key(row: dict[str, object]) -> tuple[int, float, str]:
        value = _rank_value(row["figures"], sort)
        sign = -1 if descending else 1
        return (value is None, 0.0 if value is None else sign * value, str(row["site"]))

    rows.sort(key=key)
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank if _rank_value(row["figures"], sort) is not None else None
    return rows


def _rank_value(figures: object, sort: str) -> float | None:
    assert isinstance(figures, Mapping)
    value = figures.get(sort)
    if isinstance(value, Mapping):
        return max((float(v) for v in value.values()), default=None)
    return None if value is None else float(value)


def trend(rows: Sequence[DaySums], span: Period, by: str) -> list[dict[str, object]]:
    """The figures per day or per week (weeks start on Monday) over ``span``: every day or
    week of the period is a point, and one with nothing reported has ``figures`` None, so a
    chart draws a gap rather than a zero.

    Raises:
        WireError: 422 when ``by`` is not day or week.
    """
    if by not in ("day", "week"):
        raise WireError(422, f"by: {by!r} is not day or week")
    per_day = totals(rows)
    buckets: dict[date, Totals | None] = {}
    day = span.first
    while day <= span.last:
        start = day - timedelta(days=day.weekday()) if by == "week" else day
        got = per_day.get(day.isoformat())
        bucket = buckets.setdefault(start, None)
        if got is not None:
            if bucket is None:
                bucket = buckets[start] = Totals()
            bucket.absorb(got)
        day += timedelta(days=1)
    return [
        {
            "period": start.isoformat(),
            "figures": None if bucket is None else bucket.figures(),
            "coverage": None if bucket is None else bucket.coverage(),
        }
        for start, bucket in sorted(buckets.items())
    ]


def site_days_table(days: Sequence[SiteDay]) -> list[dict[str, object]]:
    """A site's days as rows (its data-quality figures included), for its page."""
    out = []
    for day in days:
        t = Totals()
        t.add(1, int(day.suppressed), day.suppressed_hours, day.currency, day.sums)
        out.append(
            {
                "day": day.day,
                "hours": day.hours,
                "suppressed": day.suppressed,
                "suppressed_hours": day.suppressed_hours,
                "figures": t.figures(),
                "duplicates": int(day.sums.get("duplicates", 0)),
                "dead_letters": int(day.sums.get("dead_letters", 0)),
                "detail": day.detail,
            }
        )
    return out


WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def heat_map(hours: Sequence[Mapping[str, object]], tz: ZoneInfo) -> dict[str, object]:
    """The mean door count per local weekday and hour (``cells[weekday][hour]``, Monday
    first) over hours with a figure; None where there is none (closed, or suppressed)."""
    sums = [[0.0] * 24 for _ in WEEKDAYS]
    counts = [[0] * 24 for _ in WEEKDAYS]
    for hour in hours:
        footfall = hour.get("footfall_in")
        if not isinstance(footfall, int | float):
            continue
        local = datetime.fromtimestamp(int(str(hour["start_ms"])) / 1000, tz)
        sums[local.weekday()][local.hour] += footfall
        counts[local.weekday()][local.hour] += 1
    return {
        "weekdays": list(WEEKDAYS),
        "cells": [
            [round(s / n, 1) if n else None for s, n in zip(row, ns, strict=True)]
            for row, ns in zip(sums, counts, strict=True)
        ],
    }
