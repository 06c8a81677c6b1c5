"""Plausibility: figures a schema allows but no real shop produces, refused before they reach
the insights (a door count of 10,000 in one event, an order of 500 lines of 100,000 for 0).

Schemas say what is well formed; these bounds say what is believable, per event and per
message, and are the site's to set (``[plausibility]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Plausibility:
    """The bounds; the defaults are those of the ``[plausibility]`` settings."""

    #: People one ``Door Counted`` event may count, and all of one message's together.
    door_count_max: int = 100
    door_count_per_message_max: int = 2000
    #: Lines of one order, units of one line, units of one order, and one order's total.
    order_lines_max: int = 200
    order_quantity_max: int = 1000
    order_units_max: int = 5000
    order_total_max: float = 1_000_000.0
    #: How many times its lines (price x quantity, less the discount, plus the tax) an order's
    #: total may be, at most, and what share of them at least: shipping, deposits and
    #: promotions fit, a total of 0 for priced lines does not.
    order_total_factor: float = 10.0


def _number(value: object, default: float = 0.0) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )


def _units(properties: Mapping[str, Any]) -> int:
    products = properties.get("products")
    if not isinstance(products, list):
        return 0
    return sum(int(_number(p.get("quantity"), 1)) for p in products if isinstance(p, dict))


def implausible_event(name: str | None, properties: object, bounds: Plausibility) -> str | None:
    """Why one valid ``track`` event's figures are not believable, or None."""
    if not isinstance(properties, dict):
        return None
    if name == "Door Counted":
        count = _number(properties.get("count"))
        if count > bounds.door_count_max:
            return (
                f"count {count:g} in one Door Counted event is over [plausibility] "
                f"door_count_max ({bounds.door_count_max})"
            )
    if name == "Order Completed":
        return _implausible_order(properties, bounds)
    return None


def _implausible_order(properties: Mapping[str, Any], bounds: Plausibility) -> str | None:
    products = properties.get("products")
    lines = [p for p in products if isinstance(p, dict)] if isinstance(products, list) else []
    if len(lines) > bounds.order_lines_max:
        return f"{len(lines)} lines in one order, over [plausibility] order_lines_max"
    for line in lines:
        quantity = _number(line.get("quantity"), 1)
        if quantity > bounds.order_quantity_max:
            return (
                f"quantity {quantity:g} of product {str(line.get('product_id'))[:64]!r} is over "
                f"[plausibility] order_quantity_max ({bounds.order_quantity_max})"
            )
    units = _units(properties)
    if units > bounds.order_units_max:
        return f"{units} units in one order, over [plausibility] order_units_max"
    total = _number(properties.get("total"))
    if total > bounds.order_total_max:
        return (
            f"total {total:g} is over [plausibility] order_total_max ({bounds.order_total_max:g})"
        )
    if lines and all(_number(line.get("price"), -1) >= 0 for line in lines):
        gross = sum(_number(line.get("price")) * _number(line.get("quantity"), 1) for line in lines)
        expected = gross - _number(properties.get("discount")) + _number(properties.get("tax"))
        factor = bounds.order_total_factor
        # One unit of the currency either way, for rounding and for lines worth almost nothing.
        if not expected / factor - 1 <= total <= expected * factor + 1:
            return (
                f"total {total:g} does not match its lines ({gross:g} at their prices, less the "
                f"discount, plus the tax: {expected:g}), beyond [plausibility] "
                f"order_total_factor ({factor:g} times either way)"
            )
    return None


def implausible_message(
    events: Sequence[tuple[str | None, object]], bounds: Plausibility
) -> str | None:
    """Why a message's events taken together are not believable, or None; ``events`` are
    each valid event's name and properties."""
    people = sum(
        _number(p.get("count"))
        for name, p in events
        if name == "Door Counted" and isinstance(p, dict)
    )
    if people > bounds.door_count_per_message_max:
        return (
            f"{people:g} people counted in one message, over [plausibility] "
            f"door_count_per_message_max ({bounds.door_count_per_message_max})"
        )
    return None
