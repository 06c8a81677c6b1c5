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
- **venue** (event venues; None for a cell without a ticket or badge scan): see `Venue`.
A late event is folded in by recomputing its hour from the stored events (cells are not
updated in place): the job recomputes an hour when events with ``stored_ms`` after its last
computation arrive for it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar, cast

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
_K = TypeVar("_K")


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


#: Entries are counted per slot of this length, keyed by the slot's start: hours then merge
#: into days exactly, and rates and fill times come out the same for any merged period.
SLOT_MS = 5 * 60 * 1000
SLOTS_PER_HOUR = HOUR_MS // SLOT_MS
RESULTS = ("accepted", "rejected", "reentry", "exit")
PLACE_KINDS = ("booth", "session", "hall")
#: The name a gate or place takes when its scanner did not say one.
UNKNOWN = "unknown"
UNSPECIFIED = "unspecified"
#: The shares of the day's entries whose fill time is worked out.
FILL_SHARES = (50, 90)


@dataclass
class Gate:
    """One gate's ticket scans in a period."""

    accepted: int = 0
    rejected: int = 0
    reentry: int = 0
    exit: int = 0
    #: Rejected scans by ``reason``; they add up to ``rejected``.
    reasons: dict[str, int] = field(default_factory=dict)
    #: Entries (accepted and re-entries) per slot, keyed by the slot's start (ms).
    slots: dict[int, int] = field(default_factory=dict)
    #: Distinct tickets scanned here, whatever the result: the people its figures come from.
    holders: ds.hll_sketch = field(default_factory=_hll)

    @property
    def entries(self) -> int:
        """Accepted scans and re-entries: the people who came in through this gate."""
        return self.accepted + self.reentry

    @property
    def scans(self) -> int:
        """Every scan at this gate."""
        return self.accepted + self.rejected + self.reentry + self.exit


@dataclass
class Hall:
    """The entries and exits through the gates that lead into one hall."""

    entries: int = 0
    exits: int = 0
    #: Distinct tickets of those entries and exits.
    holders: ds.hll_sketch = field(default_factory=_hll)


@dataclass
class Place:
    """The badge scans at one booth, session or hall (`Venue.places`)."""

    scans: int = 0
    badges: ds.hll_sketch = field(default_factory=_hll)


@dataclass
class Venue:
    """The ticket and badge scans of a period at an event venue.

    Definitions (``Ticket Scanned``: a missing ``gate`` is ``unknown``, a missing ``result``
    ``accepted``, a rejection's missing ``reason`` ``unspecified``; ``lane`` is not used):
    - **per gate**: scans by ``result``; **entries** = accepted + re-entries; **rejection
      rate** = rejected / (entries + rejected), the share of attempts to come in refused;
      rejections by ``reason``; the **peak entry rate** = the entries of the busiest slot
      (`SLOT_MS`) / its minutes.
    - **venue** entries and exits are those at its entrance gates (scans without ``hall``),
      so a visitor who walks on into a hall is not counted in twice; the venue's peak rate
      and **fill minutes** (from the start of the first slot with an entry to the end of the
      slot in which the period's entrance entries reach 50 % and 90 %) are of these.
      **rejected** is every gate's rejections.
    - **holders**: distinct ``ticket_id`` of accepted scans at any gate, and per
      ``ticket_class`` where the scan gives one.
    - **per hall**: entries and exits through the gates whose scans name that ``hall``;
      `release` runs each hall's occupancy over the day like the doors' occupancy.
    - **per place** (``Badge Scanned``, keyed ``"{place_kind}:{place}"``; a missing
      ``place_kind`` is ``booth``, a missing ``place`` the legacy ``booth``, else ``unknown``;
      ``exhibitor`` is not used): scans and distinct ``badge_id``; a session's distinct
      badges are its attendees. Dwell at a booth is the zones' (`Cell.dwell`), not this.
    Ticket and badge ids are the agent's pseudonyms: they only ever go into HLL sketches. A
    scan whose id is missing, or whose ``result`` or ``place_kind`` is none of the known ones,
    is not counted.
    """

    gates: dict[str, Gate] = field(default_factory=dict)
    #: Entries per slot through the entrance gates: they add up to the venue's entries.
    entrance_slots: dict[int, int] = field(default_factory=dict)
    entrance_exits: int = 0
    halls: dict[str, Hall] = field(default_factory=dict)
    holders: ds.hll_sketch = field(default_factory=_hll)
    holders_by_class: dict[str, ds.hll_sketch] = field(default_factory=dict)
    places: dict[str, Place] = field(default_factory=dict)

    def seen(self) -> bool:
        """Whether the period had any ticket or badge scan."""
        return bool(self.gates or self.places)

    def figures(self, k: int) -> dict[str, object]:
        """The venue's figures as plain numbers (see the class). A gate, hall, place or
        ticket class with fewer than ``k`` distinct holders (badges for a place) is marked
        suppressed."""
        return {
            "gates": {
                name: (
                    {
                        "accepted": gate.accepted,
                        "rejected": gate.rejected,
                        "reentry": gate.reentry,
                        "exit": gate.exit,
                        "entries": gate.entries,
                        "rejection_rate": _ratio(gate.rejected, gate.entries + gate.rejected),
                        "reasons": dict(sorted(gate.reasons.items())),
                        "peak_entries_per_minute": _peak(gate.slots),
                    }
                    if gate.holders.get_estimate() >= k
                    else _suppressed()
                )
                for name, gate in sorted(self.gates.items())
            },
            "entries": sum(self.entrance_slots.values()),
            "exits": self.entrance_exits,
            "rejected": sum(gate.rejected for gate in self.gates.values()),
            "peak_entries_per_minute": _peak(self.entrance_slots),
            "holders": round(self.holders.get_estimate()),
            "holders_by_class": {
                name: round(hll.get_estimate()) if hll.get_estimate() >= k else _suppressed()
                for name, hll in sorted(self.holders_by_class.items())
            },
            "fill_minutes": _fill_minutes(self.entrance_slots),
            "halls": {
                name: (
                    {"entries": hall.entries, "exits": hall.exits}
                    if hall.holders.get_estimate() >= k
                    else _suppressed()
                )
                for name, hall in sorted(self.halls.items())
            },
            "places": {
                name: (
                    {
                        "kind": name.partition(":")[0],
                        "badges": round(place.badges.get_estimate()),
                        "scans": place.scans,
                    }
                    if place.badges.get_estimate() >= k
                    else _suppressed()
                )
                for name, place in sorted(self.places.items())
            },
        }

    def small(self, k: int) -> list[str]:
        """The gates, halls and places seen by fewer than ``k`` distinct holders, named
        ``gate:``, ``hall:`` and ``place:`` with their key."""
        return [
            *(f"gate:{n}" for n, g in sorted(self.gates.items()) if g.holders.get_estimate() < k),
            *(f"hall:{n}" for n, h in sorted(self.halls.items()) if h.holders.get_estimate() < k),
            *(f"place:{n}" for n, p in sorted(self.places.items()) if p.badges.get_estimate() < k),
        ]


def _suppressed() -> dict[str, object]:
    return {"suppressed": True}


def _peak(slots: Mapping[int, int]) -> float | None:
    return round(max(slots.values()) * 60_000 / SLOT_MS, 2) if slots else None


def _fill_minutes(slots: Mapping[int, int]) -> dict[str, int] | None:
    total = sum(slots.values())
    if not total:
        return None
    ordered = sorted(s for s, n in slots.items() if n)
    first, running = ordered[0], 0
    out: dict[str, int] = {}
    for slot in ordered:
        running += slots[slot]
        for share in FILL_SHARES:
            # Whole numbers compared, so the same entries always give the same slot.
            if str(share) not in out and running * 100 >= total * share:
                out[str(share)] = (slot + SLOT_MS - first) // 60_000
    return out


def _label(value: object, default: str) -> str:
    return value if isinstance(value, str) and value else default


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
    venue: Venue = field(default_factory=Venue)

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

        A zone seen by fewer than ``k`` distinct visitors has its dwell marked suppressed, and
        so are a venue's gates, halls and places seen by fewer than ``k`` (`Venue.figures`).
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
            "venue": self.venue.figures(k) if self.venue.seen() else None,
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
    elif fact.name == "Ticket Scanned":
        _ticket(cell, fact)
    elif fact.name == "Badge Scanned":
        _badge(cell, fact)
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


def _ticket(cell: Cell, fact: Fact) -> None:
    p = fact.properties
    ticket, result = p.get("ticket_id"), p.get("result", "accepted")
    if not isinstance(ticket, str) or not ticket or result not in RESULTS:
        return
    _holder_visits(cell, fact, ticket)
    venue = cell.venue
    gate = venue.gates.setdefault(_label(p.get("gate"), UNKNOWN), Gate())
    gate.holders.update(ticket)
    if result == "rejected":
        gate.rejected += 1
        reason = _label(p.get("reason"), UNSPECIFIED)
        gate.reasons[reason] = gate.reasons.get(reason, 0) + 1
        return
    hall_name = _label(p.get("hall"), "")
    hall = venue.halls.setdefault(hall_name, Hall()) if hall_name else None
    if hall is not None:
        hall.holders.update(ticket)
    if result == "exit":
        gate.exit += 1
        if hall is None:
            venue.entrance_exits += 1
        else:
            hall.exits += 1
        return
    if result == "accepted":
        gate.accepted += 1
        venue.holders.update(ticket)
        ticket_class = _label(p.get("ticket_class"), "")
        if ticket_class:
            venue.holders_by_class.setdefault(ticket_class, _hll()).update(ticket)
    else:
        gate.reentry += 1
    slot = fact.ts_ms - fact.ts_ms % SLOT_MS
    gate.slots[slot] = gate.slots.get(slot, 0) + 1
    if hall is None:
        venue.entrance_slots[slot] = venue.entrance_slots.get(slot, 0) + 1
    else:
        hall.entries += 1


def _badge(cell: Cell, fact: Fact) -> None:
    p = fact.properties
    badge, kind = p.get("badge_id"), p.get("place_kind", "booth")
    if not isinstance(badge, str) or not badge or kind not in PLACE_KINDS:
        return
    _holder_visits(cell, fact, badge)
    name = _label(p.get("place"), _label(p.get("booth"), UNKNOWN))
    place = cell.venue.places.setdefault(f"{kind}:{name}", Place())
    place.scans += 1
    place.badges.update(badge)


def _holder_visits(cell: Cell, fact: Fact, holder: str) -> None:
    # A gate-only venue has scans without an anonymousId: its holders are the hour's people
    # (the person when the scan is linked to one who allows it, else the ticket or badge), so
    # the hour is not suppressed for want of visitors. A holder who also carried an
    # anonymousId elsewhere that hour counts twice; a visit is still only an anonymousId.
    if not fact.visit:
        cell.visitors.update(fact.visitor or holder)


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
    out.venue = merge_venues(c.venue for c in cells)
    return out


def merge_venues(venues: Iterable[Venue]) -> Venue:
    """One venue's scans from several periods or agents: counts and slots add, distinct
    holders and badges merge as sketches."""
    out = Venue()
    unions: dict[tuple[str, str], ds.hll_union] = {}

    def union(kind: str, name: str, sketch: ds.hll_sketch) -> None:
        unions.setdefault((kind, name), ds.hll_union(HLL_LG_K)).update(sketch)

    for venue in venues:
        for name, gate in venue.gates.items():
            into = out.gates.setdefault(name, Gate())
            into.accepted += gate.accepted
            into.rejected += gate.rejected
            into.reentry += gate.reentry
            into.exit += gate.exit
            _add(into.reasons, gate.reasons)
            _add(into.slots, gate.slots)
            union("gate", name, gate.holders)
        _add(out.entrance_slots, venue.entrance_slots)
        out.entrance_exits += venue.entrance_exits
        for name, hall in venue.halls.items():
            into_hall = out.halls.setdefault(name, Hall())
            into_hall.entries += hall.entries
            into_hall.exits += hall.exits
            union("hall", name, hall.holders)
        union("holders", "", venue.holders)
        for name, hll in venue.holders_by_class.items():
            union("class", name, hll)
        for name, place in venue.places.items():
            out.places.setdefault(name, Place()).scans += place.scans
            union("place", name, place.badges)
    for (kind, name), merged in unions.items():
        sketch = merged.get_result()
        if kind == "gate":
            out.gates[name].holders = sketch
        elif kind == "hall":
            out.halls[name].holders = sketch
        elif kind == "holders":
            out.holders = sketch
        elif kind == "class":
            out.holders_by_class[name] = sketch
        else:
            out.places[name].badges = sketch
    return out


def _add(into: dict[_K, int], counts: Mapping[_K, int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


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
            every hour is suppressed. At a venue, each shown hall of ``venue.halls`` has its
            ``occupancy`` in the hours and the total, and its ``occupancy_peak`` in the total.
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
    figure, a zone seen by fewer than ``k`` visitors has its dwell suppressed, and a venue's
    gate, hall or place its figures. Occupancy, the doors' and each hall's (its entries
    less its exits, never below zero), runs over released hours only, for the same reason.

    Args:
        hours: the hour cells asked for.
        k: the least number of distinct visitors a released cell comes from.
        earlier: the same day's hours before those asked for: where occupancy starts from.
    """
    occupancy = 0
    halls: dict[str, int] = {}
    for cell in sorted(earlier, key=lambda c: c.start_ms):
        if releasable(cell, k):
            occupancy = max(0, occupancy + cell.footfall_in - cell.footfall_out)
            _run_halls(halls, cell.venue)
    released: list[dict[str, object]] = []
    kept: list[Cell] = []
    peak: int | None = None
    halls_peak: dict[str, int] = {}
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
        _run_halls(halls, cell.venue)
        for name, inside in halls.items():
            halls_peak[name] = max(halls_peak.get(name, inside), inside)
        released.append(_with_halls({**cell.figures(k), "occupancy": occupancy}, halls))
    total = (
        _with_halls(
            {**merge(kept).figures(k), "occupancy": occupancy, "occupancy_peak": peak},
            halls,
            halls_peak,
        )
        if kept
        else None
    )
    return Release(k, released, total, len(released) - len(kept))


def _run_halls(occupancy: dict[str, int], venue: Venue) -> None:
    for name, hall in venue.halls.items():
        occupancy[name] = max(0, occupancy.get(name, 0) + hall.entries - hall.exits)


def _with_halls(
    figures: dict[str, object], occupancy: Mapping[str, int], peak: Mapping[str, int] | None = None
) -> dict[str, object]:
    venue = figures.get("venue")
    if isinstance(venue, dict):
        for name, shown in cast("dict[str, dict[str, object]]", venue["halls"]).items():
            if "suppressed" not in shown:
                shown["occupancy"] = occupancy[name]
                if peak is not None:
                    shown["occupancy_peak"] = peak[name]
    return figures


def for_central(cell: Cell, k: int) -> dict[str, object]:
    """The form of an hour cell that may leave the site: its storage form (so central can
    merge it) when at least ``k`` distinct visitors were seen, else only a suppressed marker;
    zones seen by fewer than ``k`` lose their dwell and visitor sketches, and are named; so do
    a venue's gates, halls and places their holder and badge sketches (so central shows them
    suppressed), keeping their counts, which the venue's totals and hall occupancy add up."""
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
    if cell.venue.seen() and (names := cell.venue.small(k)):
        venue = cast("dict[str, object]", document["venue"])
        for name in names:
            kind, _, key = name.partition(":")
            group = cast("dict[str, dict[str, object]]", venue[f"{kind}s"])
            group[key]["badges" if kind == "place" else "holders"] = _EMPTY_HLL
        venue["suppressed"] = names
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


def _b64(sketch: object) -> str:
    return base64.b64encode(_bytes(sketch)).decode()


#: What a sketch of nobody is stored as: what `for_central` sends for a small gate's holders.
_EMPTY_HLL = _b64(_hll())


def to_document(cell: Cell) -> dict[str, object]:
    """A cell as JSON-ready values (sketches as base64): how cells are stored and synced.

    A venue's scans are under ``venue`` (absent when the cell saw none): ``gates`` {gate:
    {accepted, rejected, reentry, exit, reasons, slots, holders}}, ``entrance_slots``,
    ``entrance_exits``, ``halls`` {hall: {entries, exits, holders}}, ``holders``,
    ``holders_by_class``, ``places`` {place: {scans, badges}}; slots are {start ms as text:
    entries}, since JSON keys are text.
    """
    document: dict[str, object] = {
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
    if cell.venue.seen():
        document["venue"] = _venue_document(cell.venue)
    return document


def _venue_document(venue: Venue) -> dict[str, object]:
    return {
        "gates": {
            name: {
                "accepted": gate.accepted,
                "rejected": gate.rejected,
                "reentry": gate.reentry,
                "exit": gate.exit,
                "reasons": dict(gate.reasons),
                "slots": _slots_document(gate.slots),
                "holders": _b64(gate.holders),
            }
            for name, gate in venue.gates.items()
        },
        "entrance_slots": _slots_document(venue.entrance_slots),
        "entrance_exits": venue.entrance_exits,
        "halls": {
            name: {"entries": hall.entries, "exits": hall.exits, "holders": _b64(hall.holders)}
            for name, hall in venue.halls.items()
        },
        "holders": _b64(venue.holders),
        "holders_by_class": {name: _b64(hll) for name, hll in venue.holders_by_class.items()},
        "places": {
            name: {"scans": place.scans, "badges": _b64(place.badges)}
            for name, place in venue.places.items()
        },
    }


def _slots_document(slots: Mapping[int, int]) -> dict[str, int]:
    return {str(start): count for start, count in sorted(slots.items())}


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
        # Cells stored before venues were counted, and shops' cells, have none.
        if "venue" in document:
            cell.venue = _venue_of(_object(document["venue"], "venue"))
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


def _venue_of(document: Mapping[str, object]) -> Venue:
    venue = Venue(
        entrance_slots=_slots_of(document["entrance_slots"], "venue.entrance_slots"),
        entrance_exits=_count(document["entrance_exits"], "venue.entrance_exits"),
        holders=_hll_of(document["holders"]),
    )
    for name, value in _object(document["gates"], "venue.gates").items():
        where = f"venue.gates.{name[:64]}"
        gate = _object(value, where)
        reasons = _object(gate["reasons"], f"{where}.reasons")
        venue.gates[name] = Gate(
            accepted=_count(gate["accepted"], f"{where}.accepted"),
            rejected=_count(gate["rejected"], f"{where}.rejected"),
            reentry=_count(gate["reentry"], f"{where}.reentry"),
            exit=_count(gate["exit"], f"{where}.exit"),
            reasons={r: _count(n, f"{where}.reasons.{r[:64]}") for r, n in reasons.items()},
            slots=_slots_of(gate["slots"], f"{where}.slots"),
            holders=_hll_of(gate["holders"]),
        )
    for name, value in _object(document["halls"], "venue.halls").items():
        where = f"venue.halls.{name[:64]}"
        hall = _object(value, where)
        venue.halls[name] = Hall(
            entries=_count(hall["entries"], f"{where}.entries"),
            exits=_count(hall["exits"], f"{where}.exits"),
            holders=_hll_of(hall["holders"]),
        )
    classes = _object(document["holders_by_class"], "venue.holders_by_class")
    venue.holders_by_class = {name: _hll_of(value) for name, value in classes.items()}
    for name, value in _object(document["places"], "venue.places").items():
        place = _object(value, f"venue.places.{name[:64]}")
        venue.places[name] = Place(
            scans=_count(place["scans"], f"venue.places.{name[:64]}.scans"),
            badges=_hll_of(place["badges"]),
        )
    return venue


def _object(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise TypeError(f"{where} must be an object")
    return cast("dict[str, object]", value)


def _count(value: object, where: str) -> int:
    # Read as it is, never rounded: `cellcheck` says why a count is not a plausible one.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{where}: {value!r} is not a whole number")
    return value


def _slots_of(value: object, where: str) -> dict[int, int]:
    slots: dict[int, int] = {}
    for key, count in _object(value, where).items():
        start = str(key)
        if not (start.isascii() and start.isdigit()):
            raise TypeError(f"{where}: {start[:64]!r} is not the start of a slot in ms")
        slots[int(start)] = _count(count, f"{where}.{start}")
    return slots


def _hll_of(value: object) -> ds.hll_sketch:
    return ds.hll_sketch.deserialize(base64.b64decode(str(value)))
