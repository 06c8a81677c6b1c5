"""What a gate screen shows (a TV at a venue's gates or a hall door, read from 5 m away):
entries per minute per gate over the last half hour, the busiest gates now, the venue's
attendance and each hall's occupancy against their capacities, and the warnings a steward
must act on.

Definitions:
- **entries per minute**, for each of the last `WINDOW_MINUTES` minutes: a closed 5-minute
  slot's entries (`edge_agent.core.aggregate.SLOT_MS`, accepted scans and re-entries) spread
  evenly over its minutes; in the slot under way, the current minute's own count when this
  agent scanned it (its events), the rest of the slot's entries spread over its earlier
  minutes; a gate only other agents scan has the slot so far spread over its minutes so far.
- **busiest gates**: the `BUSIEST` gates with the most entries in the last 5 minutes.
- **attendance**: where exits are scanned, the entries less the exits at the entrance gates
  (inside now, never below zero); where none are, the distinct ticket holders admitted today.
- **rejection warning**: a gate of this agent that refused more than ``rejection_alert`` of the
  attempts to come in over the last `REJECTION_WINDOW_MS`, with at least ``min_scans`` of them.
  Only this agent's own gates: the cells other agents share count rejections per hour, not per
  slot, so a peer's last quarter hour is not known here.
- **full warning**: a hall (or the venue) whose occupancy is above ``occupancy_alert`` of its
  capacity.

Gates, halls and the venue are released as the venue's figures are (`release` at ``k``): a
gate or hall suppressed today shows as such ("fewer than k"), and an hour seen by fewer than
``k`` distinct visitors gives no slot to the series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

from edge_agent.core.aggregate import (
    RESULTS,
    SLOT_MS,
    UNKNOWN,
    UNSPECIFIED,
    Cell,
    Fact,
    merge_venues,
)

MINUTE_MS = 60_000
WINDOW_MINUTES = 30
#: The busiest gates are ranked by their entries over this many minutes ...
BUSY_MINUTES = 5
#: ... and this many are named.
BUSIEST = 5
REJECTION_WINDOW_MS = 15 * MINUTE_MS
#: Fewer attempts than this in the window raise no rejection warning: two refused of three is
#: a ticket problem, not a gate problem.
MIN_SCANS = 20


@dataclass(frozen=True, slots=True)
class Rules:
    """The venue's capacities and warning thresholds (``[venue]``)."""

    #: The venue's capacity in people; 0: not set.
    capacity: int = 0
    hall_capacity: Mapping[str, int] = field(default_factory=dict)
    rejection_alert: float = 0.1
    occupancy_alert: float = 0.9
    min_scans: int = MIN_SCANS


@dataclass(frozen=True, slots=True)
class Recent:
    """One gate's ticket scans over the last `REJECTION_WINDOW_MS`, from this agent's events."""

    #: Entries (accepted and re-entries) in the minute under way.
    this_minute: int = 0
    #: Attempts to come in: entries and rejections (exits are not attempts).
    attempts: int = 0
    rejected: int = 0
    reasons: Mapping[str, int] = field(default_factory=dict)


def minutes(now_ms: int, count: int = WINDOW_MINUTES) -> list[int]:
    """The starts of the last ``count`` minutes, oldest first, the one under way last."""
    current = now_ms - now_ms % MINUTE_MS
    return [current - n * MINUTE_MS for n in range(count - 1, -1, -1)]


def per_minute(
    slots: Mapping[int, int],
    now_ms: int,
    this_minute: int | None = None,
    count: int = WINDOW_MINUTES,
) -> list[float]:
    """A gate's entries in each of the last ``count`` minutes (`minutes`) from its entries per
    slot, and ``this_minute``: its entries in the minute under way, when known from events
    (see the module's definition)."""
    current = now_ms - now_ms % MINUTE_MS
    open_slot = now_ms - now_ms % SLOT_MS
    # Whole minutes of the open slot before the current one.
    before = (current - open_slot) // MINUTE_MS
    out: list[float] = []
    for start in minutes(now_ms, count):
        slot = start - start % SLOT_MS
        entries = slots.get(slot, 0)
        if slot != open_slot:
            value = entries * MINUTE_MS / SLOT_MS
        elif this_minute is None:
            value = entries / (before + 1)
        elif start == current:
            value = this_minute
        else:
            # The slot was read a moment apart from the events: never below nothing.
            value = max(0, entries - this_minute) / before
        out.append(round(value, 2))
    return out


def recent_scans(facts: Iterable[Fact], now_ms: int) -> dict[str, Recent]:
    """Each gate's `Recent` from this agent's events of the last `REJECTION_WINDOW_MS`,
    read as the hour cells read ticket scans (a missing gate is ``unknown``, a missing result
    ``accepted``; a scan without a ticket id or with an unknown result is not counted)."""
    since = now_ms - REJECTION_WINDOW_MS
    current = now_ms - now_ms % MINUTE_MS
    counts: dict[str, list[int]] = {}
    reasons: dict[str, dict[str, int]] = {}
    for fact in facts:
        p = fact.properties
        result = p.get("result", "accepted")
        if fact.name != "Ticket Scanned" or not since <= fact.ts_ms <= now_ms:
            continue
        if not isinstance(p.get("ticket_id"), str) or not p["ticket_id"] or result not in RESULTS:
            continue
        gate = _label(p.get("gate"), UNKNOWN)
        tally = counts.setdefault(gate, [0, 0, 0])
        if result == "exit":
            continue
        tally[1] += 1
        if result == "rejected":
            tally[2] += 1
            by = reasons.setdefault(gate, {})
            reason = _label(p.get("reason"), UNSPECIFIED)
            by[reason] = by.get(reason, 0) + 1
        elif fact.ts_ms >= current:
            tally[0] += 1
    return {
        gate: Recent(this, attempts, rejected, reasons.get(gate, {}))
        for gate, (this, attempts, rejected) in counts.items()
    }


def _label(value: object, default: str) -> str:
    return value if isinstance(value, str) and value else default


def rejection_alerts(recent: Mapping[str, Recent], rules: Rules) -> list[dict[str, object]]:
    """The gates refusing more than ``rules.rejection_alert`` of at least ``rules.min_scans``
    attempts, the worst first, each with its figures and its most frequent reason."""
    out: list[dict[str, object]] = []
    for gate, scans in recent.items():
        if scans.attempts < rules.min_scans:
            continue
        rate = scans.rejected / scans.attempts
        if rate > rules.rejection_alert:
            reason = max(sorted(scans.reasons), key=lambda r: scans.reasons[r])
            out.append(
                {
                    "kind": "rejections",
                    "gate": gate,
                    "rate": round(rate, 3),
                    "rejected": scans.rejected,
                    "scans": scans.attempts,
                    "minutes": REJECTION_WINDOW_MS // MINUTE_MS,
                    "reason": reason,
                }
            )
    return sorted(out, key=lambda a: (-cast("float", a["rate"]), str(a["gate"])))


def full_alerts(
    inside: Mapping[str, int], capacities: Mapping[str, int], threshold: float, kind: str = "hall"
) -> list[dict[str, object]]:
    """The places (halls, or the venue with ``kind`` venue) whose people ``inside`` are above
    ``threshold`` of their capacity, the fullest first; a place with no capacity has none."""
    out: list[dict[str, object]] = []
    for name, people in inside.items():
        capacity = capacities.get(name, 0)
        if capacity and people > threshold * capacity:
            out.append(
                {
                    "kind": f"{kind}_full",
                    kind: name,
                    "inside": people,
                    "capacity": capacity,
                    "share": round(people / capacity, 3),
                }
            )
    return sorted(out, key=lambda a: (-cast("float", a["share"]), str(a[kind])))


@dataclass(frozen=True, slots=True)
class Heard:
    """Another agent of the venue, and when it was last heard (this agent's clock)."""

    site: str
    heard_ms: int


def board(
    total: Mapping[str, object] | None,
    window: Sequence[Cell],
    recent: Mapping[str, Recent],
    own_gates: frozenset[str],
    rules: Rules,
    peers: Sequence[Heard],
    stale_after_ms: int,
    now_ms: int,
) -> dict[str, object]:
    """The gate screen's figures, JSON-ready.

    Args:
        total: the released total of the venue's day (`Release.total`), None when every hour
            is suppressed or none has events.
        window: the venue's released hour cells (merged across agents) overlapping the last
            `WINDOW_MINUTES`: where the entries per slot come from.
        recent: this agent's gates' scans of the last `REJECTION_WINDOW_MS` (`recent_scans`).
        own_gates: the gates this agent scanned in the hour under way: their current minute
            is counted from its events.
        rules: capacities and thresholds.
        peers: the venue's other agents (none when this agent does not share).
        stale_after_ms: a peer not heard for longer is stale.
        now_ms: now.
    """
    venue = cast("dict[str, object] | None", total.get("venue") if total else None)
    shown = cast("dict[str, dict[str, object]]", venue["gates"] if venue else {})
    slots = merge_venues(c.venue for c in window).gates
    gates: list[dict[str, object]] = []
    for name, figures in sorted(shown.items()):
        if figures.get("suppressed"):
            gates.append({"gate": name, "suppressed": True})
            continue
        mine = name in own_gates
        scans = recent.get(name, Recent())
        series = per_minute(
            slots[name].slots if name in slots else {}, now_ms, scans.this_minute if mine else None
        )
        gates.append(
            {
                "gate": name,
                "suppressed": False,
                "per_minute": series,
                "this_minute": series[-1],
                "last_5_min": round(sum(series[-BUSY_MINUTES:])),
                "today": figures.get("entries"),
                "rejected_15_min": scans.rejected if mine else None,
                "attempts_15_min": scans.attempts if mine else None,
            }
        )
    busiest = sorted(
        (g for g in gates if not g["suppressed"] and cast("int", g["last_5_min"]) > 0),
        key=lambda g: (-cast("int", g["last_5_min"]), str(g["gate"])),
    )[:BUSIEST]
    unsuppressed = {str(g["gate"]) for g in gates if not g["suppressed"]}
    attendance = _attendance(venue, rules)
    halls = _halls(venue, rules)
    alerts = rejection_alerts(
        {g: r for g, r in recent.items() if g in unsuppressed and g in own_gates}, rules
    )
    alerts += full_alerts(
        {str(h["hall"]): cast("int", h["inside"]) for h in halls if h.get("inside") is not None},
        rules.hall_capacity,
        rules.occupancy_alert,
    )
    if attendance and attendance["basis"] == "inside":
        alerts += full_alerts(
            {"venue": cast("int", attendance["people"])},
            {"venue": rules.capacity},
            rules.occupancy_alert,
            "venue",
        )
    return {
        "minutes": minutes(now_ms),
        "gates": gates,
        "busiest": [{"gate": g["gate"], "last_5_min": g["last_5_min"]} for g in busiest],
        "attendance": attendance,
        "halls": halls,
        "alerts": alerts,
        "stale": [
            {"site": p.site, "silent_s": (now_ms - p.heard_ms) // 1000}
            for p in sorted(peers, key=lambda p: p.site)
            if now_ms - p.heard_ms > stale_after_ms
        ],
        "rules": {
            "capacity": rules.capacity,
            "rejection_alert": rules.rejection_alert,
            "occupancy_alert": rules.occupancy_alert,
            "min_scans": rules.min_scans,
            "rejection_minutes": REJECTION_WINDOW_MS // MINUTE_MS,
        },
    }


def _attendance(venue: Mapping[str, object] | None, rules: Rules) -> dict[str, object] | None:
    if venue is None:
        return None
    entries, exits = cast("int", venue["entries"]), cast("int", venue["exits"])
    # A venue that scans nobody out cannot tell who left: the people admitted are all it knows.
    basis, people = ("inside", max(0, entries - exits)) if exits else ("admitted", venue["holders"])
    return {
        "basis": basis,
        "people": people,
        "holders": venue["holders"],
        "entries": entries,
        "exits": exits,
        "capacity": rules.capacity,
        "share": round(cast("int", people) / rules.capacity, 3) if rules.capacity else None,
    }


def _halls(venue: Mapping[str, object] | None, rules: Rules) -> list[dict[str, object]]:
    figures = cast("dict[str, dict[str, object]]", venue["halls"] if venue else {})
    out: list[dict[str, object]] = []
    for name in sorted(set(figures) | set(rules.hall_capacity)):
        capacity = rules.hall_capacity.get(name)
        hall = figures.get(name)
        if hall is not None and hall.get("suppressed"):
            out.append({"hall": name, "suppressed": True, "capacity": capacity})
            continue
        # A hall with a capacity but no scan yet today is empty, not unknown.
        inside = cast("int", hall["occupancy"]) if hall is not None else 0
        out.append(
            {
                "hall": name,
                "suppressed": False,
                "inside": inside,
                "capacity": capacity,
                "share": round(inside / capacity, 3) if capacity else None,
            }
        )
    return out
