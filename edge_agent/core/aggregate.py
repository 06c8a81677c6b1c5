"""Hourly insight cells from stored events, mergeable across hours and across agents.

Definitions (one cell = one site, one period of whole hours, UTC):
- **footfall in/out**: the sum of ``count`` of ``Door Counted`` events by ``direction``.
- **visits**: distinct ``anonymousId`` values seen in the period (a visit is one anonymousId:
  devices keep it for one visit). **visitors**: distinct people: the pseudonym for a visit
  linked to a person who granted ``analytics``, otherwise the visit itself. **identified
  visits**: visits linked to a person. All three are HLL sketches, so they merge across hours
  and agents without counting a visit twice.
- **dwell per zone**: seconds from a ``Zone Entered`` to the next ``Zone Exited`` of the same
  visit and zone, counted in the hour of the exit (so a visit spanning an hour boundary counts
  once, when it ends; the caller passes the zone events of the preceding hours). An exit without an
  enter is counted in ``unmatched_exits`` and has no dwell; an enter without an exit yet has
  none either. KLL sketch per zone (count, median, p90).
- **paths**: consecutive zones a visit entered, ``"A>B"``, frequent-items sketch.
- **orders, revenue, items**: count, sum of ``total``, sum of product quantities of ``Order
  Completed``; **basket value and size**: KLL sketches of ``total`` and of item quantities per
  order. Money is never summed across currencies (`edge_agent.core.money`): revenue and basket
  value are in the cell's ``currency`` (the site's, or when it has not said, that of the
  hour's first order); an order in another currency that no configured rate converts is an
  **unpriced order**, its total added to ``other_revenue`` of its currency.
  **conversion** = orders / footfall in (the people the doors counted in: the same denominator
  as the "visitors in" a screen shows); **visit conversion** = orders / visits (the visits the
  devices tracked).
- **top products, categories**: frequent-items sketches weighted by quantity.
- **NPS** = 100 * (promoters 9-10 - detractors 0-6) / answers; **CES** = mean of answers.
- **identified share** = identified visits / visits.
- **occupancy** (end of hour) = footfall in - footfall out summed over the day's released
  hours up to and including this one, never below zero; a day's **peak occupancy** is the
  largest of those. Worked out at release (`release`), from sums, so it merges exactly.
- **data quality**: **duplicates** = redelivered or re-sent events (same messageId) in the
  hour of their timestamp; **dead letters** = rejected messages by reason, in the hour they
  were received (a rejected message may carry no usable time); a redelivery counts again.
A late event is folded in by recomputing its hour from the stored events (cells are not
updated in place): the job recomputes an hour when events with ``stored_ms`` after its last
computation arrive for it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import cast

import datasketches as ds

from edge_agent.core.money import UNSAID, Money, is_code

HOUR_MS = 3600 * 1000
#: How far back an hour looks for the enters of its exits; a longer stay counts as unmatched.
DWELL_LOOKBACK_HOURS = 2
#: One order's most revenue a differentially private release attributes to it.
REVENUE_BOUND = 10_000.0
HLL_LG_K = 12
KLL_K = 200
FREQUENT_LG_MAX = 8
TOP = 10
#: Keys of an hour's data-quality counts as the store keeps them.
DUPLICATES_KIND = "duplicates"
DEAD_LETTER_KIND = "dead_letter/"


@dataclass(frozen=True, slots=True)
class Fact:
    """One stored event as aggregation sees it: no raw id, only what the metrics need."""

    ts_ms: int
    name: str | None
    visit: str | None
    visitor: str | None
    identified: bool
    properties: Mapping[str, object]


def _hll() -> ds.hll_sketch:
    return ds.hll_sketch(HLL_LG_K)


def _kll() -> ds.kll_doubles_sketch:
    return ds.kll_doubles_sketch(KLL_K)


def _frequent() -> ds.frequent_strings_sketch:
    return ds.frequent_strings_sketch(FREQUENT_LG_MAX)


@dataclass
class Cell:
    """The sums, counts and sketches of one period; `merge` combines two periods or agents."""

    start_ms: int
    hours: int = 1
    footfall_in: int = 0
    footfall_out: int = 0
    orders: int = 0
    revenue: float = 0.0
    #: Revenue with each order clamped to REVENUE_BOUND: what a noised release may use.
    revenue_clamped: float = 0.0
    #: The currency of revenue and basket value; "" before any order when the site has not
    #: said its own.
    currency: str = ""
    #: Orders in a currency other than ``currency``: counted in ``orders``, not in revenue.
    unpriced_orders: int = 0
    #: Their totals, per currency.
    other_revenue: dict[str, float] = field(default_factory=dict)
    items: int = 0
    unmatched_exits: int = 0
    nps_answers: int = 0
    promoters: int = 0
    detractors: int = 0
    ces_answers: int = 0
    ces_sum: int = 0
    duplicates: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    visits: ds.hll_sketch = field(default_factory=_hll)
    visitors: ds.hll_sketch = field(default_factory=_hll)
    identified_visits: ds.hll_sketch = field(default_factory=_hll)
    basket_value: ds.kll_doubles_sketch = field(default_factory=_kll)
    basket_size: ds.kll_doubles_sketch = field(default_factory=_kll)
    dwell: dict[str, ds.kll_doubles_sketch] = field(default_factory=dict)
    zone_visits: dict[str, ds.hll_sketch] = field(default_factory=dict)
    paths: ds.frequent_strings_sketch = field(default_factory=_frequent)
    products: ds.frequent_strings_sketch = field(default_factory=_frequent)
    categories: ds.frequent_strings_sketch = field(default_factory=_frequent)

    # --- figures -----------------------------------------------------------------------------

    def zone_visitors(self, zone: str) -> float:
        """Distinct visitors that entered ``zone`` in this period."""
        hll = self.zone_visits.get(zone)
        return 0.0 if hll is None else float(hll.get_estimate())

    def sums(self) -> dict[str, float]:
        """The figures that add up across periods and sites: counts and totals as kept,
        distinct counts as estimates (a sum of days' distinct visitors counts a person once
        per day)."""
        return {
            "footfall_in": self.footfall_in,
            "footfall_out": self.footfall_out,
            "visits": round(self.visits.get_estimate()),
            "visitors": round(self.visitors.get_estimate()),
            "identified_visits": round(self.identified_visits.get_estimate()),
            "orders": self.orders,
            "unpriced_orders": self.unpriced_orders,
            "revenue": round(self.revenue, 2),
            "items": self.items,
            "nps_answers": self.nps_answers,
            "promoters": self.promoters,
            "detractors": self.detractors,
            "ces_answers": self.ces_answers,
            "ces_sum": self.ces_sum,
            "duplicates": self.duplicates,
            "dead_letters": sum(self.dead_letters.values()),
        }

    def figures(self, k: int = 1) -> dict[str, object]:
        """The cell as plain numbers (estimates for sketches), for printing and release.

        A zone seen by fewer than ``k`` distinct visitors has its dwell marked suppressed.
        """
        visits = self.visits.get_estimate()
        return {
            "start_ms": self.start_ms,
            "hours": self.hours,
            "footfall_in": self.footfall_in,
            "footfall_out": self.footfall_out,
            "visits": round(visits),
            "visitors": round(self.visitors.get_estimate()),
            "identified_share": _ratio(self.identified_visits.get_estimate(), visits),
            "orders": self.orders,
            "revenue": round(self.revenue, 2),
            "revenue_clamped": round(self.revenue_clamped, 2),
            "currency": self.currency or None,
            "unpriced_orders": self.unpriced_orders,
            "other_revenue": {c: round(v, 2) for c, v in sorted(self.other_revenue.items())},
            "conversion": _ratio(self.orders, self.footfall_in),
            "visit_conversion": _ratio(self.orders, visits),
            "basket_value_mean": _ratio(self.revenue, self.orders - self.unpriced_orders),
            "basket_value_median": _quantile(self.basket_value, 0.5),
            "basket_size_mean": _ratio(self.items, self.orders),
            "basket_size_median": _quantile(self.basket_size, 0.5),
            "dwell_s": {
                zone: (
                    {
                        "count": sketch.n,
                        "median": _quantile(sketch, 0.5),
                        "p90": _quantile(sketch, 0.9),
                    }
                    if self.zone_visitors(zone) >= k
                    else {"suppressed": True}
                )
                for zone, sketch in sorted(self.dwell.items())
            },
            "unmatched_exits": self.unmatched_exits,
            "top_paths": _top(self.paths),
            "top_products": _top(self.products),
            "top_categories": _top(self.categories),
            "nps": _ratio(100 * (self.promoters - self.detractors), self.nps_answers),
            "nps_answers": self.nps_answers,
            "ces": _ratio(self.ces_sum, self.ces_answers),
            "ces_answers": self.ces_answers,
            "duplicates": self.duplicates,
            "dead_letters": sum(self.dead_letters.values()),
            "dead_letters_by_reason": dict(sorted(self.dead_letters.items())),
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 4) if denominator else None


def _quantile(sketch: ds.kll_doubles_sketch, rank: float) -> float | None:
    return None if sketch.is_empty() else round(sketch.get_quantile(rank, True), 3)


def _top(sketch: ds.frequent_strings_sketch) -> list[tuple[str, int]]:
    rows = sketch.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
    # Ties in order of name, so the same data always prints the same list.
    ranked = sorted(
        ((item, int(estimate)) for item, estimate, *_ in rows), key=lambda r: (-r[1], r[0])
    )
    return ranked[:TOP]


def hour_of(ts_ms: int) -> int:
    """The start of the UTC hour holding ``ts_ms``."""
    return ts_ms - ts_ms % HOUR_MS


def hours_affected(ts_ms: int, name: str | None) -> list[int]:
    """The hours whose cells an event can change: its own, and for a zone event also the
    following ones whose dwell and paths may pair with it."""
    own = hour_of(ts_ms)
    if name in ("Zone Entered", "Zone Exited"):
        return [own + n * HOUR_MS for n in range(DWELL_LOOKBACK_HOURS + 1)]
    return [own]


def compute_hour(
    start_ms: int,
    facts: Iterable[Fact],
    earlier_zones: Iterable[Fact] = (),
    hours: int = 1,
    quality: Mapping[str, int] | None = None,
    money: Money = UNSAID,
) -> Cell:
    """The cell of the period starting at ``start_ms`` from its events (any order).

    Args:
        start_ms: the period's start (UTC, whole hour).
        facts: the events whose timestamp falls in the period.
        earlier_zones: ``Zone Entered``/``Zone Exited`` events of the preceding hours, so that
            a visit that spans the hour boundary gets its dwell and path.
        hours: how many hours the period spans (1 for an hour cell).
        quality: the period's data-quality counts, keyed ``duplicates`` and
            ``dead_letter/<reason>``.
        money: the site's currency and exchange rates.
    """
    cell = Cell(start_ms, hours, currency=money.currency)
    for kind, count in (quality or {}).items():
        if kind == DUPLICATES_KIND:
            cell.duplicates += count
        elif kind.startswith(DEAD_LETTER_KIND) and count:
            reason = kind.removeprefix(DEAD_LETTER_KIND)
            cell.dead_letters[reason] = cell.dead_letters.get(reason, 0) + count
    ordered = sorted(facts, key=lambda f: f.ts_ms)
    open_zones: dict[tuple[str, str], int] = {}
    last_zone: dict[str, str] = {}
    for fact in sorted(earlier_zones, key=lambda f: f.ts_ms):
        zone = str(fact.properties.get("zone"))
        if not fact.visit:
            continue
        # Replayed only to know which zones are still open and where each visit was last.
        if fact.name == "Zone Entered":
            open_zones[(fact.visit, zone)] = fact.ts_ms
            last_zone[fact.visit] = zone
        elif fact.name == "Zone Exited":
            open_zones.pop((fact.visit, zone), None)
    for fact in ordered:
        _fold(cell, fact, open_zones, last_zone, money)
    return cell


def _fold(
    cell: Cell,
    fact: Fact,
    open_zones: dict[tuple[str, str], int],
    last_zone: dict[str, str],
    money: Money,
) -> None:
    p = fact.properties
    if fact.visit:
        cell.visits.update(fact.visit)
        cell.visitors.update(fact.visitor or fact.visit)
        if fact.identified:
            cell.identified_visits.update(fact.visit)
    if fact.name == "Door Counted":
        count = int(p.get("count", 0))  # type: ignore[call-overload]
        if p.get("direction") == "in":
            cell.footfall_in += count
        else:
            cell.footfall_out += count
    elif fact.name == "Zone Entered" and fact.visit:
        zone = str(p.get("zone"))
        cell.zone_visits.setdefault(zone, _hll()).update(fact.visitor or fact.visit)
        open_zones[(fact.visit, zone)] = fact.ts_ms
        previous = last_zone.get(fact.visit)
        if previous is not None and previous != zone:
            cell.paths.update(f"{previous}>{zone}")
        last_zone[fact.visit] = zone
    elif fact.name == "Zone Exited" and fact.visit:
        zone = str(p.get("zone"))
        entered = open_zones.pop((fact.visit, zone), None)
        if entered is None:
            cell.unmatched_exits += 1
        else:
            cell.dwell.setdefault(zone, _kll()).update((fact.ts_ms - entered) / 1000)
    elif fact.name == "Order Completed":
        total = float(p.get("total", 0.0))  # type: ignore[arg-type]
        products = p.get("products")
        lines = products if isinstance(products, list) else []
        quantity = 0
        for line in lines:
            q = int(line.get("quantity", 1))
            quantity += q
            cell.products.update(str(line.get("product_id")), q)
            if line.get("category"):
                cell.categories.update(str(line["category"]), q)
        cell.orders += 1
        cell.items += quantity
        cell.basket_size.update(float(quantity))
        currency = str(p.get("currency", ""))
        cell.currency = cell.currency or currency
        priced = money.priced(total, currency, cell.currency)
        if priced is None:
            cell.unpriced_orders += 1
            cell.other_revenue[currency] = cell.other_revenue.get(currency, 0.0) + total
        else:
            cell.revenue += priced
            cell.revenue_clamped += min(priced, REVENUE_BOUND)
            cell.basket_value.update(priced)
    elif fact.name == "Feedback Submitted":
        nps = p.get("nps")
        if isinstance(nps, int):
            cell.nps_answers += 1
            cell.promoters += nps >= 9
            cell.detractors += nps <= 6
        ces = p.get("ces")
        if isinstance(ces, int):
            cell.ces_answers += 1
            cell.ces_sum += ces


def merge(cells: Iterable[Cell]) -> Cell:
    """One cell from several: the same hour from several agents, or hours into a day.

    The result starts at the earliest start and spans to the end of the latest cell. Counts and
    sums add exactly; distinct counts and quantiles merge as sketches, within their error bounds.
    Revenue is in the currency most of the priced orders were in; a cell in another currency
    adds its revenue to ``other_revenue`` and its orders to the unpriced ones.
    """
    cells = list(cells)
    if not cells:
        raise ValueError("merge needs at least one cell")
    start = min(c.start_ms for c in cells)
    end = max(c.start_ms + c.hours * HOUR_MS for c in cells)
    out = Cell(start, hours=(end - start) // HOUR_MS, currency=_main_currency(cells))
    unions = {name: ds.hll_union(HLL_LG_K) for name in ("visits", "visitors", "identified_visits")}
    zone_unions: dict[str, ds.hll_union] = {}
    for c in cells:
        foreign = c.currency not in ("", out.currency)
        for name in SUMS:
            if not (foreign and name in _PRICED):
                setattr(out, name, getattr(out, name) + getattr(c, name))
        for currency, amount in c.other_revenue.items():
            out.other_revenue[currency] = out.other_revenue.get(currency, 0.0) + amount
        if foreign and c.orders > c.unpriced_orders:
            out.unpriced_orders += c.orders - c.unpriced_orders
            out.other_revenue[c.currency] = out.other_revenue.get(c.currency, 0.0) + c.revenue
        elif not foreign:
            out.basket_value.merge(c.basket_value)
        for name, union in unions.items():
            union.update(getattr(c, name))
        out.basket_size.merge(c.basket_size)
        for zone, sketch in c.dwell.items():
            out.dwell.setdefault(zone, _kll()).merge(sketch)
        for zone, hll in c.zone_visits.items():
            zone_unions.setdefault(zone, ds.hll_union(HLL_LG_K)).update(hll)
        for reason, count in c.dead_letters.items():
            out.dead_letters[reason] = out.dead_letters.get(reason, 0) + count
        out.paths.merge(c.paths)
        out.products.merge(c.products)
        out.categories.merge(c.categories)
    for name, union in unions.items():
        setattr(out, name, union.get_result())
    out.zone_visits = {zone: union.get_result() for zone, union in zone_unions.items()}
    return out


def _main_currency(cells: list[Cell]) -> str:
    priced: dict[str, int] = {}
    for c in cells:
        if c.currency:
            priced[c.currency] = priced.get(c.currency, 0) + c.orders - c.unpriced_orders
    # Ties go to the first code in alphabetical order, so a merge never depends on cell order.
    return min(priced, key=lambda code: (-priced[code], code)) if priced else ""


#: The cell's figures that add up exactly when cells merge.
SUMS = (
    "footfall_in",
    "footfall_out",
    "orders",
    "revenue",
    "revenue_clamped",
    "unpriced_orders",
    "items",
    "unmatched_exits",
    "nps_answers",
    "promoters",
    "detractors",
    "ces_answers",
    "ces_sum",
    "duplicates",
)


#: The sums that are money in the cell's currency.
_PRICED = frozenset({"revenue", "revenue_clamped"})


# --- release: k-suppression ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Release:
    """A period as it may leave the site or be shown: see `release`.

    Attributes:
        k: the least number of distinct visitors behind each released figure.
        hours: each hour asked for, in time order: its figures with ``occupancy``, or only
            ``start_ms``, ``hours``, ``suppressed`` and ``reason`` when it is suppressed.
        total: the released hours merged, with ``occupancy`` and ``occupancy_peak``; None when
            every hour is suppressed.
        suppressed_hours: how many hours the total leaves out.
    """

    k: int
    hours: list[dict[str, object]]
    total: dict[str, object] | None
    suppressed_hours: int

    def document(self) -> dict[str, object]:
        """The release as a JSON-ready object (what the insights command and API print)."""
        return {
            "k": self.k,
            "hours": self.hours,
            "total": self.total,
            "suppressed_hours": self.suppressed_hours,
        }


def release(hours: Iterable[Cell], k: int, earlier: Iterable[Cell] = ()) -> Release:
    """What may leave the site (or a screen) for a period: its hours, and their total.

    An hour seen by fewer than ``k`` distinct visitors is released only as suppressed (its
    start and a reason; never silently absent). The period's total is merged from the released
    hours only, so subtracting the released hours from the total reveals nothing of a
    suppressed one; how many hours were left out is stated next to it. Within any released
    figure, a zone seen by fewer than ``k`` visitors has its dwell suppressed. Occupancy runs
    over released hours only, for the same reason.

    Args:
        hours: the hour cells asked for.
        k: the least number of distinct visitors a released cell comes from.
        earlier: the same day's hours before those asked for: where occupancy starts from.
    """
    occupancy = 0
    for cell in sorted(earlier, key=lambda c: c.start_ms):
        if releasable(cell, k):
            occupancy = max(0, occupancy + cell.footfall_in - cell.footfall_out)
    released: list[dict[str, object]] = []
    kept: list[Cell] = []
    peak: int | None = None
    for cell in sorted(hours, key=lambda c: c.start_ms):
        if not releasable(cell, k):
            released.append(
                {
                    "start_ms": cell.start_ms,
                    "hours": cell.hours,
                    "suppressed": True,
                    "reason": f"fewer than {k} distinct visitors",
                }
            )
            continue
        kept.append(cell)
        occupancy = max(0, occupancy + cell.footfall_in - cell.footfall_out)
        peak = occupancy if peak is None else max(peak, occupancy)
        released.append({**cell.figures(k), "occupancy": occupancy})
    total = (
        {**merge(kept).figures(k), "occupancy": occupancy, "occupancy_peak": peak} if kept else None
    )
    return Release(k, released, total, len(released) - len(kept))


def for_central(cell: Cell, k: int) -> dict[str, object]:
    """The form of an hour cell that may leave the site: its storage form (so central can
    merge it) when at least ``k`` distinct visitors were seen, else only a suppressed marker;
    zones seen by fewer than ``k`` lose their dwell and visitor sketches, and are named."""
    if not releasable(cell, k):
        return {
            "start_ms": cell.start_ms,
            "hours": cell.hours,
            "suppressed": True,
            "reason": f"fewer than {k} distinct visitors",
        }
    document = to_document(cell)
    small = sorted(z for z in cell.zone_visits if cell.zone_visitors(z) < k)
    if small:
        for key in ("dwell", "zone_visits"):
            sketches = cast("dict[str, str]", document[key])
            document[key] = {z: v for z, v in sketches.items() if z not in small}
        document["suppressed_zones"] = small
    return document


def releasable(cell: Cell, k: int) -> bool:
    """Whether ``cell`` comes from at least ``k`` distinct visitors, so it may be shown."""
    return bool(cell.visitors.get_estimate() >= k)


# --- storage form -------------------------------------------------------------------------

_ADDED = frozenset({"duplicates", "unpriced_orders"})
_SKETCHES = (
    "visits",
    "visitors",
    "identified_visits",
    "basket_value",
    "basket_size",
    "paths",
    "products",
    "categories",
)
_KINDS = {
    "visits": ds.hll_sketch,
    "visitors": ds.hll_sketch,
    "identified_visits": ds.hll_sketch,
    "basket_value": ds.kll_doubles_sketch,
    "basket_size": ds.kll_doubles_sketch,
    "paths": ds.frequent_strings_sketch,
    "products": ds.frequent_strings_sketch,
    "categories": ds.frequent_strings_sketch,
}


def _bytes(sketch: object) -> bytes:
    if isinstance(sketch, ds.hll_sketch):
        return bytes(sketch.serialize_compact())
    return bytes(sketch.serialize())  # type: ignore[attr-defined]


def to_document(cell: Cell) -> dict[str, object]:
    """A cell as JSON-ready values (sketches as base64): how cells are stored and synced."""
    return {
        "start_ms": cell.start_ms,
        "hours": cell.hours,
        **{name: getattr(cell, name) for name in SUMS},
        **{name: base64.b64encode(_bytes(getattr(cell, name))).decode() for name in _SKETCHES},
        "dwell": {z: base64.b64encode(_bytes(s)).decode() for z, s in cell.dwell.items()},
        "zone_visits": {
            z: base64.b64encode(_bytes(s)).decode() for z, s in cell.zone_visits.items()
        },
        "dead_letters": cell.dead_letters,
        "currency": cell.currency,
        "other_revenue": cell.other_revenue,
    }


def from_document(document: Mapping[str, object]) -> Cell:
    """The cell a `to_document` value describes.

    Raises:
        ValueError: the document is not a stored cell.
    """
    try:
        cell = Cell(int(document["start_ms"]), int(document["hours"]))  # type: ignore[call-overload]
        for name in SUMS:
            # Figures added after the first stored cells read as zero in those.
            setattr(cell, name, document[name] if name not in _ADDED else document.get(name, 0))
        for name, kind in _KINDS.items():
            setattr(cell, name, kind.deserialize(base64.b64decode(str(document[name]))))
        dwell = document["dwell"]
        zones = document["zone_visits"]
        dead_letters = document.get("dead_letters", {})
        if not isinstance(dead_letters, dict):
            raise TypeError("dead_letters must be an object")
        cell.dead_letters = {str(r): int(n) for r, n in dead_letters.items()}
        cell.currency, cell.other_revenue = _money_of(document)
        if not isinstance(dwell, dict) or not isinstance(zones, dict):
            raise TypeError("dwell and zone_visits must be objects")
        cell.dwell = {
            z: ds.kll_doubles_sketch.deserialize(base64.b64decode(v)) for z, v in dwell.items()
        }
        cell.zone_visits = {
            z: ds.hll_sketch.deserialize(base64.b64decode(v)) for z, v in zones.items()
        }
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"not a stored insight cell: {exc}") from exc
    return cell


def _money_of(document: Mapping[str, object]) -> tuple[str, dict[str, float]]:
    # Cells stored before currencies were kept apart say neither.
    currency = document.get("currency", "")
    other = document.get("other_revenue", {})
    if not isinstance(currency, str) or not (currency == "" or is_code(currency)):
        raise TypeError(f"currency {currency!r} is not an ISO 4217 code")
    if not isinstance(other, dict):
        raise TypeError("other_revenue must be an object")
    amounts: dict[str, float] = {}
    for code, amount in other.items():
        if not is_code(code):
            raise TypeError(f"other_revenue: {code!r} is not an ISO 4217 code")
        if not isinstance(amount, int | float) or isinstance(amount, bool):
            raise TypeError(f"other_revenue.{code}: {amount!r} is not a number")
        amounts[code] = float(amount)
    return currency, amounts
