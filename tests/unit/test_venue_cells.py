"""Venue figures in the hour cell: ticket gates, halls, badge places; their merge across hours
and agents, storage form, k-suppression, and central's checks of a hostile venue cell."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from typing import Any, cast

import datasketches as ds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.aggregate import (
    HOUR_MS,
    SLOT_MS,
    Cell,
    Fact,
    compute_hour,
    for_central,
    from_document,
    merge,
    releasable,
    release,
    to_document,
)
from edge_agent.core.cellcheck import CellLimits, bounds_problem, figures_problem

START = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS
MINUTE = 60_000
#: Pseudonyms as the agent stores them: 64 hex characters.
TICKETS = [hashlib.sha256(f"ticket-{n}".encode()).hexdigest() for n in range(40)]
BADGES = [hashlib.sha256(f"badge-{n}".encode()).hexdigest() for n in range(30)]
VISITS = [f"v{n}" for n in range(8)]
#: Figures that are distinct counts (sketch estimates); every other figure is exact.
DISTINCT = frozenset({"holders", "badges"})


def ticket(ts: int, ticket_id: str, visit: str | None = None, **props: object) -> Fact:
    return Fact(ts, "Ticket Scanned", visit, visit, False, {"ticket_id": ticket_id, **props})


def badge(ts: int, badge_id: str, visit: str | None = None, **props: object) -> Fact:
    return Fact(ts, "Badge Scanned", visit, visit, False, {"badge_id": badge_id, **props})


def venue(cell: Cell, k: int = 1) -> dict[str, Any]:
    figures = cell.figures(k)["venue"]
    assert isinstance(figures, dict)
    return figures


def hours_of(facts: list[Fact], hours: int) -> list[Cell]:
    """One agent's hour cells, each with the zone events of its earlier hours."""
    cells = []
    for h in range(hours):
        start = START + h * HOUR_MS
        inside = [f for f in facts if start <= f.ts_ms < start + HOUR_MS]
        before = [f for f in facts if f.ts_ms < start and f.name in ("Zone Entered", "Zone Exited")]
        cells.append(compute_hour(start, inside, before))
    return cells


# --- the property: agents and hours merge into the whole ------------------------------------


@st.composite
def streams(draw: st.DrawFn) -> tuple[int, list[Fact]]:
    hours = draw(st.integers(1, 3))
    out: list[Fact] = []
    for _ in range(draw(st.integers(0, 80))):
        ts = START + draw(st.integers(0, hours * HOUR_MS - 1))
        visit = draw(st.sampled_from([None, *VISITS]))
        kind = draw(st.sampled_from(["ticket", "ticket", "ticket", "badge", "door", "zone"]))
        if kind == "ticket":
            props: dict[str, object] = {}
            for key, values in (
                ("gate", ["north", "south", "hall-a-door"]),
                ("result", ["accepted", "rejected", "reentry", "exit"]),
                ("reason", ["already_used", "wrong_day"]),
                ("ticket_class", ["vip", "day"]),
                ("hall", ["A", "B"]),
                ("lane", ["1", "2"]),
            ):
                if draw(st.booleans()):
                    props[key] = draw(st.sampled_from(values))
            out.append(ticket(ts, draw(st.sampled_from(TICKETS)), visit, **props))
        elif kind == "badge":
            props = {}
            for key, values in (
                ("place_kind", ["booth", "session", "hall"]),
                ("place", ["b1", "s1", "A"]),
                ("booth", ["b2"]),
            ):
                if draw(st.booleans()):
                    props[key] = draw(st.sampled_from(values))
            out.append(badge(ts, draw(st.sampled_from(BADGES)), visit, **props))
        elif kind == "door":
            direction = draw(st.sampled_from(["in", "out"]))
            out.append(
                Fact(ts, "Door Counted", None, None, False, {"direction": direction, "count": 2})
            )
        else:
            name = draw(st.sampled_from(["Zone Entered", "Zone Exited"]))
            zone_visit = draw(st.sampled_from(VISITS))
            out.append(Fact(ts, name, zone_visit, zone_visit, False, {"zone": "booth-b1"}))
    return hours, out


def assert_same(one: object, other: object, path: str = "venue") -> None:
    if isinstance(one, dict):
        assert isinstance(other, dict), path
        assert set(one) == set(other), path
        for key in one:
            assert_same(one[key], other[key], f"{path}.{key}")
    elif path.rsplit(".", 1)[-1] in DISTINCT or path.startswith("venue.holders_by_class."):
        assert isinstance(one, int), path
        assert isinstance(other, int), path
        assert abs(one - other) <= 0.03 * max(one, other) + 2, path
    else:
        assert one == other, path


@settings(max_examples=150, deadline=None)
@given(streams(), st.integers(2, 4), st.randoms(use_true_random=False))
def test_agents_and_hours_merge_into_the_whole_stream(
    stream: tuple[int, list[Fact]], agents: int, rng: Any
) -> None:
    hours, facts = stream
    # A visit's zone events stay on one agent, so its dwell pairs up there; scans and door
    # counts fall to any agent, as two agents of a venue may see different gates or one hall.
    owner = {visit: rng.randrange(agents) for visit in VISITS}
    parts: list[list[Fact]] = [[] for _ in range(agents)]
    for fact in facts:
        zone = fact.name in ("Zone Entered", "Zone Exited")
        parts[owner[str(fact.visit)] if zone else rng.randrange(agents)].append(fact)
    whole = merge(hours_of(facts, hours))
    split_cells = [cell for part in parts for cell in hours_of(part, hours)]
    split = merge(split_cells)
    stored = merge(from_document(to_document(cell)) for cell in split_cells)
    expected = whole.figures()["venue"]
    assert (expected is None) == (
        not any(f.name in ("Ticket Scanned", "Badge Scanned") for f in facts)
    )
    for merged in (split, stored, from_document(to_document(split))):
        assert_same(expected, merged.figures()["venue"])
        assert merged.venue.entrance_slots == whole.venue.entrance_slots
        assert {n: g.slots for n, g in merged.venue.gates.items()} == {
            n: g.slots for n, g in whole.venue.gates.items()
        }


@settings(max_examples=100, deadline=None)
@given(streams(), st.integers(1, 8))
def test_every_venue_cell_a_site_computes_passes_centrals_checks(
    stream: tuple[int, list[Fact]], k: int
) -> None:
    hours, facts = stream
    for cell in hours_of(facts, hours):
        for document in (to_document(cell), for_central(cell, k)):
            if document.get("suppressed"):
                continue
            assert bounds_problem(document, CellLimits()) is None
            assert figures_problem(from_document(document), CellLimits()) is None


# --- each figure on a small stream -----------------------------------------------------------


def test_gate_counts_defaults_and_reasons() -> None:
    cell = compute_hour(
        START,
        [
            ticket(START + 1, TICKETS[0], gate="north"),
            ticket(START + 2, TICKETS[1], gate="north", result="accepted"),
            ticket(START + 3, TICKETS[2], gate="north", result="rejected", reason="wrong_day"),
            ticket(START + 4, TICKETS[3], gate="north", result="rejected"),
            ticket(START + 5, TICKETS[0], gate="north", result="exit"),
            ticket(START + 6, TICKETS[0], gate="north", result="reentry", lane="3"),
            ticket(START + 7, TICKETS[4]),
            ticket(START + 8, TICKETS[5], result="teleported"),
            Fact(START + 9, "Ticket Scanned", None, None, False, {"gate": "north"}),
        ],
    )
    figures = venue(cell)
    assert figures["gates"] == {
        "north": {
            "accepted": 2,
            "rejected": 2,
            "reentry": 1,
            "exit": 1,
            "entries": 3,
            "rejection_rate": 0.4,
            "reasons": {"unspecified": 1, "wrong_day": 1},
            "peak_entries_per_minute": 0.6,
        },
        "unknown": {
            "accepted": 1,
            "rejected": 0,
            "reentry": 0,
            "exit": 0,
            "entries": 1,
            "rejection_rate": 0.0,
            "reasons": {},
            "peak_entries_per_minute": 0.2,
        },
    }
    assert (figures["entries"], figures["exits"], figures["rejected"]) == (4, 1, 2)
    assert figures["halls"] == {}
    assert figures["places"] == {}


def test_peak_rate_and_fill_minutes_come_from_the_busiest_slot_and_the_running_entries() -> None:
    def at(slot: int, n: int) -> list[Fact]:
        return [
            ticket(START + slot * SLOT_MS + i, TICKETS[slot * 10 + i], gate=f"g{i % 2}")
            for i in range(n)
        ]

    # 2, 0, 6, 2 entries in the first four slots: half of the 10 is in by the end of the
    # third slot (15 minutes after the first began), nine tenths by the end of the fourth.
    cell = compute_hour(START, at(0, 2) + at(2, 6) + at(3, 2))
    figures = venue(cell)
    assert figures["fill_minutes"] == {"50": 15, "90": 20}
    assert figures["peak_entries_per_minute"] == 1.2
    assert figures["gates"]["g0"]["peak_entries_per_minute"] == 0.6
    # A day merged from its hours: the fill runs from the day's first entry slot; half of
    # the 20 are in by the end of the fourth slot, nine tenths only in the next hour's first.
    later = compute_hour(START + HOUR_MS, [ticket(START + HOUR_MS + 10, TICKETS[39])] * 10)
    day = venue(merge([cell, later]))
    assert day["entries"] == 20
    assert day["fill_minutes"] == {"50": 20, "90": 60 + 5}
    assert day["peak_entries_per_minute"] == 2.0
    assert (
        venue(compute_hour(START, [ticket(START, TICKETS[0], result="exit")]))["fill_minutes"]
        is None
    )


def test_holders_are_distinct_accepted_tickets_per_venue_and_class() -> None:
    cell = compute_hour(
        START,
        [
            ticket(START + 1, TICKETS[0], ticket_class="vip"),
            ticket(START + 2, TICKETS[0], gate="south", ticket_class="vip"),
            ticket(START + 3, TICKETS[1], ticket_class="day"),
            ticket(START + 4, TICKETS[2]),
            ticket(START + 5, TICKETS[3], result="rejected"),
            ticket(START + 6, TICKETS[4], result="reentry", ticket_class="day"),
        ],
    )
    figures = venue(cell)
    assert figures["holders"] == 3
    assert figures["holders_by_class"] == {"day": 1, "vip": 1}


def test_halls_count_their_gates_and_the_venue_only_its_entrance() -> None:
    cell = compute_hour(
        START,
        [
            ticket(START + 1, TICKETS[0], gate="main"),
            ticket(START + 2, TICKETS[1], gate="main"),
            ticket(START + 3, TICKETS[0], gate="hall-a", hall="A"),
            ticket(START + 4, TICKETS[1], gate="hall-a", hall="A", result="reentry"),
            ticket(START + 5, TICKETS[0], gate="hall-a", hall="A", result="exit"),
            ticket(START + 6, TICKETS[1], gate="hall-a", hall="A", result="rejected"),
        ],
    )
    figures = venue(cell)
    assert figures["halls"] == {"A": {"entries": 2, "exits": 1}}
    assert (figures["entries"], figures["exits"], figures["rejected"]) == (2, 0, 1)
    assert figures["gates"]["hall-a"]["entries"] == 2


def test_hall_occupancy_runs_over_released_hours_and_never_goes_below_zero() -> None:
    def hall(hour: int, entries: int, exits: int) -> Cell:
        start = START + hour * HOUR_MS
        facts = [ticket(start + i, TICKETS[i], hall="A") for i in range(entries)]
        facts += [ticket(start + i, TICKETS[10 + i], hall="A", result="exit") for i in range(exits)]
        facts += [ticket(start + i, TICKETS[20 + i], gate="main") for i in range(5)]
        return compute_hour(start, facts)

    # More left than came in (people who entered before the agent started counting).
    cells = [hall(0, 1, 3), hall(1, 6, 0), hall(2, 2, 5)]
    released = release(cells, 3)
    occupancy = [
        cast("dict[str, Any]", h["venue"])["halls"]["A"]["occupancy"] for h in released.hours
    ]
    assert occupancy == [0, 6, 3]
    total = cast("dict[str, Any]", released.total)
    assert total["venue"]["halls"]["A"] == {
        "entries": 9,
        "exits": 8,
        "occupancy": 3,
        "occupancy_peak": 6,
    }
    # The day's earlier hours set where occupancy starts.
    later = release(cells[2:], 3, earlier=cells[:2])
    assert cast("dict[str, Any]", later.total)["venue"]["halls"]["A"]["occupancy"] == 3


def test_badge_places_fall_back_to_the_legacy_booth() -> None:
    cell = compute_hour(
        START,
        [
            badge(START + 1, BADGES[0], place_kind="session", place="keynote"),
            badge(START + 2, BADGES[1], place_kind="session", place="keynote"),
            badge(START + 3, BADGES[1], place_kind="session", place="keynote"),
            badge(START + 4, BADGES[2], booth="b7", exhibitor="acme"),
            badge(START + 5, BADGES[3]),
            badge(START + 6, BADGES[3], place_kind="lounge"),
            Fact(START + 7, "Badge Scanned", None, None, False, {"place": "b7"}),
        ],
    )
    assert venue(cell)["places"] == {
        "booth:b7": {"kind": "booth", "badges": 1, "scans": 1},
        "booth:unknown": {"kind": "booth", "badges": 1, "scans": 1},
        "session:keynote": {"kind": "session", "badges": 2, "scans": 3},
    }
    assert venue(cell)["gates"] == {}


def test_a_shop_cell_has_no_venue() -> None:
    cell = compute_hour(START, [Fact(START, "Door Counted", None, None, False, {"count": 3})])
    assert cell.figures()["venue"] is None
    assert "venue" not in to_document(cell)
    assert from_document(to_document(cell)).figures() == cell.figures()


# --- suppression and visitors ----------------------------------------------------------------


def test_small_gates_halls_places_and_classes_are_suppressed_in_a_released_cell() -> None:
    facts = [ticket(START + i, TICKETS[i], gate="main", ticket_class="day") for i in range(6)]
    facts += [ticket(START + 10, TICKETS[10], gate="side", ticket_class="vip")]
    facts += [ticket(START + 11, TICKETS[11], gate="hall-a", hall="A")]
    facts += [badge(START + i, BADGES[i], place_kind="session", place="s1") for i in range(5)]
    facts += [badge(START + 20, BADGES[20], place="b1")]
    cell = compute_hour(START, facts)
    assert releasable(cell, 5)
    figures = venue(cell, 5)
    assert figures["gates"]["side"] == {"suppressed": True}
    assert figures["gates"]["hall-a"] == {"suppressed": True}
    assert figures["gates"]["main"]["accepted"] == 6
    assert figures["halls"] == {"A": {"suppressed": True}}
    assert figures["places"]["booth:b1"] == {"suppressed": True}
    assert figures["places"]["session:s1"]["badges"] == 5
    assert figures["holders_by_class"] == {"day": 6, "vip": {"suppressed": True}}
    hall_shown = cast("dict[str, Any]", release([cell], 5).hours[0])["venue"]["halls"]["A"]
    assert hall_shown == {"suppressed": True}


def test_scans_without_an_anonymous_id_count_their_holders_as_visitors() -> None:
    gate_only = compute_hour(START, [ticket(START + i, TICKETS[i % 6]) for i in range(30)])
    assert round(gate_only.visitors.get_estimate()) == 6
    assert round(gate_only.visits.get_estimate()) == 0
    assert releasable(gate_only, 5)
    # With an anonymousId the visit is the visitor, as for any other event.
    tracked = compute_hour(START, [ticket(START + i, TICKETS[i], visit="v1") for i in range(6)])
    assert round(tracked.visitors.get_estimate()) == 1
    assert not releasable(tracked, 5)
    few = compute_hour(START, [badge(START + i, BADGES[i % 4]) for i in range(20)])
    assert release([few], 5).hours[0]["suppressed"] is True


def test_for_central_drops_the_sketches_of_small_gates_and_never_holds_an_id() -> None:
    facts = [ticket(START + i, TICKETS[i], gate="main") for i in range(6)]
    facts += [ticket(START + 10, TICKETS[10], gate="side", hall="A")]
    facts += [badge(START + 11, BADGES[0], place="b1")]
    cell = compute_hour(START, facts)
    document = for_central(cell, 5)
    sent = cast("dict[str, Any]", document["venue"])
    assert sent["suppressed"] == ["gate:side", "hall:A", "place:booth:b1"]
    at_central = from_document(document)
    assert venue(at_central, 1)["gates"]["side"] == {"suppressed": True}
    assert venue(at_central, 1)["gates"]["main"]["accepted"] == 6
    assert venue(at_central, 1)["entries"] == 6
    shown = json.dumps([document, release([cell], 1).document(), cell.figures()])
    for pseudonym in TICKETS[:11] + BADGES[:1]:
        assert pseudonym not in shown


# --- central refuses a hostile venue cell ----------------------------------------------------


def _hll(*values: object) -> str:
    sketch = ds.hll_sketch(12)
    for value in values:
        sketch.update(str(value))
    return base64.b64encode(sketch.serialize_compact()).decode()


def _good() -> dict[str, Any]:
    facts = [ticket(START + i * MINUTE, TICKETS[i], gate="main") for i in range(8)]
    facts += [ticket(START + 1, TICKETS[0], gate="main", result="rejected", reason="used")]
    facts += [ticket(START + 2, TICKETS[1], gate="a", hall="A")]
    facts += [badge(START + 3, BADGES[0], place="b1")]
    return to_document(compute_hour(START, facts))


def _forged(change: str, value: object) -> dict[str, Any]:
    document = copy.deepcopy(_good())
    *path, last = change.split("/")
    target = document
    for key in path:
        target = target[key]
    target[last] = value
    return document


BOUNDS = [
    pytest.param(
        _forged("venue/gates", {f"g{n}": {} for n in range(51)}), "venue.gates", id="many-gates"
    ),
    pytest.param(
        _forged("venue/places", {f"booth:{n}": {} for n in range(51)}),
        "venue.places",
        id="many-places",
    ),
    pytest.param(
        _forged("venue/gates/main/reasons", {f"r{n}": 1 for n in range(51)}),
        "venue.gates.reasons",
        id="many-reasons",
    ),
    pytest.param(
        _forged("venue/gates/main/slots", {str(START + n * SLOT_MS): 1 for n in range(13)}),
        "venue.gates.main.slots",
        id="thirteen-slots",
    ),
]


@pytest.mark.parametrize(("document", "figure"), BOUNDS)
def test_a_venue_cell_naming_too_much_is_refused_before_its_sketches_are_read(
    document: dict[str, Any], figure: str
) -> None:
    problem = bounds_problem(document, CellLimits(max_zones=50))
    assert problem is not None
    assert problem.startswith(figure), problem


FIGURES = [
    pytest.param(_forged("venue/gates/main/accepted", -1), "venue.gates.main.accepted", id="neg"),
    pytest.param(
        _forged("venue/entrance_exits", 10**9), "venue.entrance_exits", id="over-max-count"
    ),
    pytest.param(
        _forged("venue/gates/main/slots", {str(START - SLOT_MS): 8}),
        "venue.gates.main.slots",
        id="slot-before-the-hour",
    ),
    pytest.param(
        _forged("venue/gates/main/slots", {str(START + 7): 8}),
        "venue.gates.main.slots",
        id="slot-off-the-grid",
    ),
    pytest.param(
        _forged("venue/gates/main/slots", {str(START): 3}),
        "venue.gates.main.slots",
        id="slots-not-the-entries",
    ),
    pytest.param(
        _forged("venue/gates/main/reasons", {"used": 4}),
        "venue.gates.main.reasons",
        id="reasons-not-the-rejections",
    ),
    pytest.param(
        _forged("venue/holders", _hll(*range(5000))), "venue.holders", id="holders-over-accepted"
    ),
    pytest.param(
        _forged("venue/gates/main/holders", _hll(*range(500))),
        "venue.gates.main.holders",
        id="gate-holders-over-scans",
    ),
    pytest.param(
        _forged("venue/places/booth:b1/badges", _hll(*range(500))),
        "venue.places.booth:b1.badges",
        id="badges-over-scans",
    ),
    pytest.param(
        _forged("venue/halls/A/entries", 5),
        "venue.entrance_slots, venue.halls",
        id="halls-not-the-gates",
    ),
    pytest.param(
        _forged("venue/places", {"cave:x": {"scans": 1, "badges": _hll("b")}}),
        "venue.places.cave:x",
        id="unknown-place-kind",
    ),
]


@pytest.mark.parametrize(("document", "figure"), FIGURES)
def test_a_hostile_venue_cell_is_refused_naming_the_figure(
    document: dict[str, Any], figure: str
) -> None:
    assert bounds_problem(document, CellLimits()) is None
    problem = figures_problem(from_document(document), CellLimits())
    assert problem is not None
    assert problem.startswith(figure), problem


@pytest.mark.parametrize(
    ("document", "figure"),
    [
        pytest.param(_forged("venue/gates/main/exit", 2.5), "venue.gates.main.exit", id="float"),
        pytest.param(_forged("venue/gates/main/accepted", True), "venue.gates.main", id="bool"),
        pytest.param(
            _forged("venue/entrance_slots", {"soon": 1}), "venue.entrance_slots", id="slot-key"
        ),
        pytest.param(_forged("venue/halls", ["A"]), "venue.halls", id="halls-a-list"),
        pytest.param(_forged("venue", "stadium"), "venue", id="venue-a-string"),
    ],
)
def test_an_unreadable_venue_cell_is_refused_naming_the_figure(
    document: dict[str, Any], figure: str
) -> None:
    with pytest.raises(ValueError, match=f"not a stored insight cell: {figure}"):
        from_document(document)


def test_a_real_venue_cell_passes() -> None:
    document = _good()
    assert bounds_problem(document, CellLimits()) is None
    assert figures_problem(from_document(document), CellLimits()) is None
