"""Whether an hour cell is one a site could have computed: bounded, non-negative, consistent.

Central checks every cell it receives (a site can send valid sketches claiming 10^12
visitors, negative revenue, 300,000 zones) and the agent checks its own before they leave,
with the same function, so a site's cell is refused alone and for a reason that names the
figure. The bounds are central's to set (``edge-agent-collector serve``); the defaults are
documented in docs/sync-protocol.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import datasketches as ds

from edge_agent.core.aggregate import DWELL_LOOKBACK_HOURS, HOUR_MS, REVENUE_BOUND, SUMS, Cell

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

    #: Zones named in one cell (dwell, visitors, suppressed), and dead-letter reasons.
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
    return None


def figures_problem(cell: Cell, limits: CellLimits) -> str | None:
    """Why a cell's figures cannot come from a real hour of a site, or None."""
    if cell.hours != 1 or cell.start_ms % HOUR_MS:
        return f"start_ms, hours: {cell.start_ms}, {cell.hours} is not one whole UTC hour"
    problem = _counts(cell, limits) or _money(cell, limits) or _answers(cell)
    return problem or _sketches(cell, limits)


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
