"""Whether an hour cell is one a site could have computed: bounded, non-negative, consistent.

Central checks every cell it receives (a site can send valid sketches claiming 10^12
visitors, negative revenue, 300,000 zones) and the agent checks its own before they leave,
with the same function, so a site's cell is refused alone and for a reason that names the
figure. A venue's scans are held to the same: bounded names, at most 12 five-minute slots of
the hour, non-negative counts that add up (slots to each gate's entries, rejection reasons to
its rejections, entrance and halls to the gates'), distinct holders within the scans. The
bounds are central's to set (``edge-agent-collector serve``); the defaults are documented in
docs/sync-protocol.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import datasketches as ds

from edge_agent.core.aggregate import (
    DWELL_LOOKBACK_HOURS,
    HOUR_MS,
    PLACE_KINDS,
    RESULTS,
    REVENUE_BOUND,
    SLOT_MS,
    SLOTS_PER_HOUR,
    SUMS,
    Cell,
    Venue,
)

#: Sketch estimates carry an error (about 1.6% at one standard deviation for the distinct
#: counts): a distinct count may exceed the one it is part of by this much before it is
#: implausible.
_ESTIMATE_ROOM = 1.1
_ESTIMATE_SLACK = 10
#: Sums of money are floats: rounding may move them by this much.
_MONEY_SLACK = 0.01
_MONEY = ("revenue", "revenue_clamped")
_COUNTS = tuple(name for name in SUMS if name not in _MONEY)
_NAMED = ("dwell", "zone_visits", "suppressed_zones", "dead_letters", "other_revenue")
_CES_MAX = 5


@dataclass(frozen=True, slots=True)
class CellLimits:
    """What one hour cell of one site may hold."""

    #: Zones named in one cell (dwell, visitors, suppressed), and dead-letter reasons; a
    #: venue's gates, halls, places, ticket classes, and rejection reasons of all its gates.
    max_zones: int = 1000
    #: Entries of each top list (paths, products, categories).
    max_list_items: int = 1024
    #: Any count of one hour at one site: people through a door, visits, orders, answers.
    max_count: int = 10_000_000
    #: The mean order total of the hour.
    max_order_total: float = 1_000_000.0


def bounds_problem(document: Mapping[str, object], limits: CellLimits) -> str | None:
    """Why a cell document names too many things to be stored, or None; checked before its
    sketches are read, so an oversized cell costs no more than its size."""
    for key in _NAMED:
        value = document.get(key)
        if isinstance(value, dict | list) and len(value) > limits.max_zones:
            return (
                f"{key}: {len(value)} entries; a cell may name at most {limits.max_zones} "
                "(central's --max-zones)"
            )
    return _venue_bounds(document.get("venue"), limits)


def figures_problem(cell: Cell, limits: CellLimits) -> str | None:
    """Why a cell's figures cannot come from a real hour of a site, or None."""
    if cell.hours != 1 or cell.start_ms % HOUR_MS:
        return f"start_ms, hours: {cell.start_ms}, {cell.hours} is not one whole UTC hour"
    problem = _counts(cell, limits) or _money(cell, limits) or _answers(cell)
    return problem or _sketches(cell, limits) or _venue(cell, limits)


def _over(name: str, value: float, limits: CellLimits) -> str | None:
    if value < 0:
        return f"{name}: {value:g} is negative"
    if value > limits.max_count:
        return (
            f"{name}: {value:g} is over the {limits.max_count} one hour of one site may count "
            "(central's --max-count)"
        )
    return None


def _counts(cell: Cell, limits: CellLimits) -> str | None:
    for name in _COUNTS:
        value = getattr(cell, name)
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{name}: {value!r} is not a whole number"
        if problem := _over(name, value, limits):
            return problem
    for reason, count in cell.dead_letters.items():
        if problem := _over(f"dead_letters.{reason[:64]}", count, limits):
            return problem
    if cell.items < 0 or cell.items > cell.orders * 1_000_000:
        return f"items: {cell.items} for {cell.orders} orders"
    return None


def _money(cell: Cell, limits: CellLimits) -> str | None:
    for name in _MONEY:
        value = getattr(cell, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            return f"{name}: {value!r} is not a number"
        if value < 0:
            return f"{name}: {value:g} is negative"
    if cell.unpriced_orders > cell.orders:
        return f"unpriced_orders: {cell.unpriced_orders} is more than the {cell.orders} orders"
    priced = cell.orders - cell.unpriced_orders
    if cell.revenue > priced * limits.max_order_total + _MONEY_SLACK:
        return (
            f"revenue: {cell.revenue:g} for {priced} orders is over "
            f"{limits.max_order_total:g} an order (central's --max-order-total)"
        )
    for code, amount in cell.other_revenue.items():
        if not math.isfinite(amount) or amount < 0:
            return f"other_revenue.{code}: {amount:g} is not a sum of order totals"
    if sum(cell.other_revenue.values()) > (
        cell.unpriced_orders * limits.max_order_total + _MONEY_SLACK
    ):
        return (
            f"other_revenue: {sum(cell.other_revenue.values()):g} for {cell.unpriced_orders} "
            f"orders is over {limits.max_order_total:g} an order (central's --max-order-total)"
        )
    if cell.revenue_clamped > min(cell.revenue, cell.orders * REVENUE_BOUND) + _MONEY_SLACK:
        return f"revenue_clamped: {cell.revenue_clamped:g} is over the revenue it clamps"
    return None


def _answers(cell: Cell) -> str | None:
    if cell.promoters + cell.detractors > cell.nps_answers:
        return (
            f"promoters, detractors: {cell.promoters} + {cell.detractors} is more than the "
            f"{cell.nps_answers} NPS answers"
        )
    if not cell.ces_answers <= cell.ces_sum <= _CES_MAX * cell.ces_answers:
        return f"ces_sum: {cell.ces_sum} is not a sum of {cell.ces_answers} answers from 1 to 5"
    return None


def _distinct(name: str, estimate: float, within: float, of: str) -> str | None:
    if estimate > within * _ESTIMATE_ROOM + _ESTIMATE_SLACK:
        return f"{name}: {estimate:.0f} distinct is more than the {within:.0f} {of}"
    return None


def _sketches(cell: Cell, limits: CellLimits) -> str | None:
    # A visit may count as more than one visitor (its events before and after the visitor
    # said who they are), so visitors are bounded only by the count; identified visits are
    # some of the visits, and a zone's visitors some of the hour's.
    visits = float(cell.visits.get_estimate())
    visitors = float(cell.visitors.get_estimate())
    problem = (
        _over("visits", visits, limits)
        or _over("visitors", visitors, limits)
        or _distinct(
            "identified_visits", float(cell.identified_visits.get_estimate()), visits, "visits"
        )
    )
    if problem:
        return problem
    for zone in cell.zone_visits:
        seen = cell.zone_visitors(zone)
        if problem := _distinct(f"zone_visits.{zone[:64]}", seen, visitors, "visitors"):
            return problem
    for name in ("basket_value", "basket_size"):
        sketch: ds.kll_doubles_sketch = getattr(cell, name)
        if sketch.n > cell.orders:
            return f"{name}: {sketch.n} baskets for {cell.orders} orders"
        if not sketch.is_empty() and sketch.get_min_value() < 0:
            return f"{name}: a basket of {sketch.get_min_value():g} is negative"
    longest = (DWELL_LOOKBACK_HOURS + 1) * HOUR_MS / 1000
    for zone, dwell in cell.dwell.items():
        if problem := _over(f"dwell.{zone[:64]}", dwell.n, limits):
            return problem
        if dwell.is_empty():
            continue
        low, high = dwell.get_min_value(), dwell.get_max_value()
        if not 0 <= low <= high <= longest:
            return f"dwell.{zone[:64]}: {low:g} to {high:g} s is not within 0 to {longest:g} s"
    for name in ("paths", "products", "categories"):
        items: ds.frequent_strings_sketch = getattr(cell, name)
        if items.num_active_items > limits.max_list_items:
            return (
                f"{name}: {items.num_active_items} entries; at most {limits.max_list_items} are "
                "taken (central's --max-list-items)"
            )
        if items.total_weight > limits.max_count * 1000:
            return f"{name}: a weight of {items.total_weight} is implausible"
    return None


def _venue_bounds(venue: object, limits: CellLimits) -> str | None:
    if not isinstance(venue, dict):
        return None
    # The suppressed are some of the gates, halls and places.
    for key, most in (
        ("gates", limits.max_zones),
        ("halls", limits.max_zones),
        ("places", limits.max_zones),
        ("holders_by_class", limits.max_zones),
        ("suppressed", 3 * limits.max_zones),
    ):
        value = venue.get(key)
        if isinstance(value, dict | list) and len(value) > most:
            return (
                f"venue.{key}: {len(value)} entries; a cell may name at most {most} "
                "(central's --max-zones)"
            )
    gates = venue.get("gates")
    slots = [("venue.entrance_slots", venue.get("entrance_slots"))]
    reasons = 0
    if isinstance(gates, dict):
        for name, gate in gates.items():
            if isinstance(gate, dict):
                slots.append((f"venue.gates.{str(name)[:64]}.slots", gate.get("slots")))
                found = gate.get("reasons")
                reasons += len(found) if isinstance(found, dict) else 0
    if reasons > limits.max_zones:
        return (
            f"venue.gates.reasons: {reasons} rejection reasons; a cell may name at most "
            f"{limits.max_zones} (central's --max-zones)"
        )
    for where, value in slots:
        if isinstance(value, dict) and len(value) > SLOTS_PER_HOUR:
            return f"{where}: {len(value)} slots; an hour has {SLOTS_PER_HOUR}"
    return None


def _venue(cell: Cell, limits: CellLimits) -> str | None:
    venue = cell.venue
    counts: list[tuple[str, int]] = [("venue.entrance_exits", venue.entrance_exits)]
    for name, gate in venue.gates.items():
        where = f"venue.gates.{name[:64]}"
        counts += [(f"{where}.{result}", getattr(gate, result)) for result in RESULTS]
        counts += [(f"{where}.reasons.{r[:64]}", n) for r, n in gate.reasons.items()]
        counts += [(f"{where}.slots.{s}", n) for s, n in gate.slots.items()]
    counts += [(f"venue.entrance_slots.{s}", n) for s, n in venue.entrance_slots.items()]
    for name, hall in venue.halls.items():
        counts += [(f"venue.halls.{name[:64]}.entries", hall.entries)]
        counts += [(f"venue.halls.{name[:64]}.exits", hall.exits)]
    counts += [(f"venue.places.{n[:64]}.scans", p.scans) for n, p in venue.places.items()]
    for where, value in counts:
        if problem := _over(where, value, limits):
            return problem
    return _venue_slots(cell) or _venue_sums(venue) or _venue_distinct(venue, limits)


def _venue_slots(cell: Cell) -> str | None:
    venue = cell.venue
    slots = [("venue.entrance_slots", venue.entrance_slots)]
    slots += [(f"venue.gates.{n[:64]}.slots", g.slots) for n, g in venue.gates.items()]
    for where, starts in slots:
        for start in starts:
            if start % SLOT_MS or not cell.start_ms <= start < cell.start_ms + HOUR_MS:
                return f"{where}: {start} is not the start of a 5-minute slot of the hour"
    for name, gate in venue.gates.items():
        if sum(gate.slots.values()) != gate.entries:
            return (
                f"venue.gates.{name[:64]}.slots: {sum(gate.slots.values())} entries for the "
                f"gate's {gate.entries} (accepted + reentry)"
            )
        if sum(gate.reasons.values()) != gate.rejected:
            return (
                f"venue.gates.{name[:64]}.reasons: {sum(gate.reasons.values())} for "
                f"{gate.rejected} rejected"
            )
    return None


def _venue_sums(venue: Venue) -> str | None:
    # Every entry and exit is through the entrance or into a hall, at some gate.
    entries = sum(venue.entrance_slots.values()) + sum(h.entries for h in venue.halls.values())
    gate_entries = sum(g.entries for g in venue.gates.values())
    if entries != gate_entries:
        return f"venue.entrance_slots, venue.halls: {entries} entries for the gates' {gate_entries}"
    exits = venue.entrance_exits + sum(h.exits for h in venue.halls.values())
    gate_exits = sum(g.exit for g in venue.gates.values())
    if exits != gate_exits:
        return f"venue.entrance_exits, venue.halls: {exits} exits for the gates' {gate_exits}"
    for name in venue.places:
        kind = name.partition(":")[0]
        if kind not in PLACE_KINDS or ":" not in name:
            return f"venue.places.{name[:64]}: {kind[:64]!r} is not booth, session or hall"
    return None


def _venue_distinct(venue: Venue, limits: CellLimits) -> str | None:
    accepted = sum(g.accepted for g in venue.gates.values())
    holders = float(venue.holders.get_estimate())
    problem = _over("venue.holders", holders, limits) or _distinct(
        "venue.holders", holders, accepted, "accepted scans"
    )
    for name, hll in venue.holders_by_class.items():
        seen = float(hll.get_estimate())
        problem = problem or _distinct(
            f"venue.holders_by_class.{name[:64]}", seen, holders, "holders"
        )
    for name, gate in venue.gates.items():
        seen = float(gate.holders.get_estimate())
        problem = problem or _distinct(
            f"venue.gates.{name[:64]}.holders", seen, gate.scans, "scans"
        )
    for name, hall in venue.halls.items():
        seen = float(hall.holders.get_estimate())
        within = hall.entries + hall.exits
        problem = problem or _distinct(f"venue.halls.{name[:64]}.holders", seen, within, "scans")
    for name, place in venue.places.items():
        seen = float(place.badges.get_estimate())
        problem = problem or _distinct(
            f"venue.places.{name[:64]}.badges", seen, place.scans, "scans"
        )
    return problem
