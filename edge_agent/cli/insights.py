"""``insights``: a day's released figures as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
import time
from datetime import date
from typing import cast
from zoneinfo import ZoneInfo

from edge_agent.config import Settings
from edge_agent.core.localtime import day_hours, day_of, hour_label, zone

# Column -> its heading in the table.
_FLAT = {
    "footfall_in": "in",
    "footfall_out": "out",
    "occupancy": "occupancy",
    "visits": "visits",
    "visitors": "visitors",
    "identified_share": "identified",
    "orders": "orders",
    "revenue": "revenue",
    "conversion": "conversion",
    "visit_conversion": "visit conv.",
    "basket_value_mean": "basket",
    "basket_size_mean": "items",
    "nps": "nps",
    "ces": "ces",
    "unmatched_exits": "unmatched",
    "duplicates": "duplicates",
    "dead_letters": "dead",
}


def cmd_insights(args: argparse.Namespace, settings: Settings) -> int:
    """Print a day's (or an hour's) released insights."""
    from edge_agent.app import insights

    tz = zone(settings.site.timezone)
    try:
        day = date.fromisoformat(args.day) if args.day else day_of(time.time_ns() // 10**6, tz)
    except ValueError:
        print(f"edge-agent: --day must be YYYY-MM-DD, got {args.day!r}", file=sys.stderr)
        return 2
    released = insights.insights(settings, day, args.hour, args.k or settings.insights.k, args.dp)
    # On the days the clocks change an hour's time repeats or is skipped: say which it is.
    zoned = len(day_hours(day, tz)) != 24
    label = functools.partial(_label, tz=tz, zoned=zoned)
    if args.format == "json":
        print(json.dumps(released, indent=2))
        return 0
    total = cast("dict[str, object] | None", released["total"])
    rows = [
        *cast("list[dict[str, object]]", released["hours"]),
        {**(total or {"suppressed": True}), "start_ms": None},
    ]
    if args.format == "csv":
        out = csv.writer(sys.stdout)
        out.writerow(["hour", "suppressed", *_FLAT, *_MONEY])
        for row in rows:
            out.writerow(
                [
                    label(row),
                    bool(row.get("suppressed")),
                    *(row.get(k, "") for k in _FLAT),
                    row.get("currency") or "",
                    row.get("unpriced_orders", ""),
                    _other(row),
                ]
            )
        return 0
    print(
        f"site {settings.site.id}, {day} ({settings.site.timezone}), "
        f"cells from fewer than {released['k']} visitors suppressed"
    )
    width = 11 if zoned else 7
    print(f"{'hour':<{width}}" + "".join(f"{h:>11}" for h in _FLAT.values()))
    for row in rows:
        if row.get("suppressed"):
            print(f"{label(row):<{width}}  suppressed: {row.get('reason', 'no released hour')}")
        else:
            print(f"{label(row):<{width}}" + "".join(f"{_cell(row.get(k)):>11}" for k in _FLAT))
    if released["open_hour_ms"] is not None:
        print("(the current hour is still open: its figures are partial)")
    if total:
        _print_details(total)
    return 0


#: The CSV's columns after the table's: what the revenue is in, and what it leaves out.
_MONEY = ("currency", "unpriced_orders", "other_revenue")


def _other(row: dict[str, object]) -> str:
    amounts = cast("dict[str, float]", row.get("other_revenue") or {})
    return ";".join(f"{code}={amount:.2f}" for code, amount in amounts.items())


def _print_details(total: dict[str, object]) -> None:
    """The period total's figures that do not fit a column: money, zones, top lists, data
    quality."""
    print(f"\npeak occupancy: {_cell(total.get('occupancy_peak'))}")
    if total.get("currency"):
        print(f"revenue and basket in {total['currency']}")
    amounts = cast("dict[str, float]", total.get("other_revenue") or {})
    if amounts:
        print(
            f"not in the revenue: {total.get('unpriced_orders')} order(s) in other currencies ("
            + ", ".join(f"{code} {amount:,.2f}" for code, amount in amounts.items())
            + "); [site] exchange_rates converts them"
        )
    dwell = cast("dict[str, dict[str, object]]", total.get("dwell_s") or {})
    if dwell:
        print(f"{'zone':<20}{'stays':>8}{'median s':>10}{'p90 s':>10}")
        for zone, figures in dwell.items():
            if figures.get("suppressed"):
                print(f"{zone[:19]:<20}  suppressed")
            else:
                print(
                    f"{zone[:19]:<20}{_cell(figures['count']):>8}"
                    f"{_cell(figures['median']):>10}{_cell(figures['p90']):>10}"
                )
    for key, heading in (
        ("top_paths", "top paths"),
        ("top_products", "top products"),
        ("top_categories", "top categories"),
    ):
        ranked = cast("list[tuple[str, int]]", total.get(key) or [])
        if ranked:
            print(f"{heading}: " + ", ".join(f"{name} ({n})" for name, n in ranked))
    reasons = cast("dict[str, int]", total.get("dead_letters_by_reason") or {})
    if reasons:
        print("dead letters: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))


def _label(row: dict[str, object], *, tz: ZoneInfo, zoned: bool) -> str:
    start = row.get("start_ms")
    return "total" if start is None else hour_label(int(cast("int", start)), tz, zoned=zoned)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
