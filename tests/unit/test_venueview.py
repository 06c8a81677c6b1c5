"""The venue's view from its agents' shares: any split of a venue's events across its agents
merges into the figures one agent would have computed from them all; a share document is
taken only when it could be an honest peer's."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from datetime import date
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.aggregate import (
    DWELL_LOOKBACK_HOURS,
    HOUR_MS,
    Cell,
    Fact,
    compute_hour,
    release,
    to_document,
)
from edge_agent.core.cellcheck import CellLimits
from edge_agent.core.localtime import day_bounds, day_hours, zone
from edge_agent.core.venueview import (
    MAX_CELLS,
    MAX_DOCUMENT_BYTES,
    MAX_FUTURE_MS,
    Peer,
    Refused,
    Share,
    read_share,
    share_document,
    topic_site,
    venue_cells,
    venue_view,
)

DAY = date(2027, 1, 15)
TZ = "UTC"
HOURS = day_hours(DAY, zone(TZ))
START = HOURS[9]
SPAN = 3
NOW = START + SPAN * HOUR_MS
VENUE = "expo"
SITES = ["hall-a", "hall-b", "hall-c", "hall-d"]
PATTERN = "venues/{venue}/agents/{site}/today"
LIMITS = CellLimits()
VISITS = [f"v{n}" for n in range(40)]
TICKETS = [hashlib.sha256(f"t{n}".encode()).hexdigest() for n in range(30)]
ZONES = ["hall", "stage", "food"]
#: Figures that are distinct counts (sketch estimates) or ratios over one.
DISTINCT = frozenset(
    {"visits", "visitors", "holders", "badges", "identified_share", "visit_conversion"}
)


@st.composite
def facts(draw: st.DrawFn) -> list[Fact]:
    out: list[Fact] = []
    for _ in range(draw(st.integers(0, 80))):
        ts = START + draw(st.integers(0, SPAN * HOUR_MS - 1))
        visit = draw(st.sampled_from(VISITS))
        person = draw(st.sampled_from([None, "p1", "p2", "p3"]))
        kind = draw(st.sampled_from(["door", "enter", "exit", "order", "nps", "ticket", "badge"]))
        props: dict[str, Any]
        if kind == "door":
            name = "Door Counted"
            props = {"direction": draw(st.sampled_from(["in", "out"])), "count": 1}
        elif kind in ("enter", "exit"):
            name = "Zone Entered" if kind == "enter" else "Zone Exited"
            props = {"zone": draw(st.sampled_from(ZONES))}
        elif kind == "order":
            name = "Order Completed"
            props = {
                "total": draw(st.integers(1, 400)) / 4,
                "products": [{"product_id": draw(st.sampled_from("abc")), "quantity": 1}],
            }
        elif kind == "nps":
            name, props = "Feedback Submitted", {"nps": draw(st.integers(0, 10))}
        elif kind == "ticket":
            name = "Ticket Scanned"
            props = {
                "ticket_id": draw(st.sampled_from(TICKETS)),
                "gate": draw(st.sampled_from(["north", "south"])),
                "result": draw(st.sampled_from(["accepted", "rejected", "reentry", "exit"])),
                **draw(st.sampled_from([{}, {"hall": "h1"}])),
            }
        else:
            name = "Badge Scanned"
            props = {"badge_id": draw(st.sampled_from(TICKETS)), "booth": "b1"}
        # Gate scanners see no visit: their holders are the hour's people.
        seen = None if kind in ("ticket", "badge") and draw(st.booleans()) else visit
        out.append(Fact(ts, name, seen, person or seen, person is not None, props))
    return out


def cells_of(stream: list[Fact]) -> list[Cell]:
    """One agent's hour cells, as its insights job computes them."""
    out = []
    for start in HOURS[9 : 9 + SPAN]:
        own = [f for f in stream if start <= f.ts_ms < start + HOUR_MS]
        earlier_from = start - DWELL_LOOKBACK_HOURS * HOUR_MS
        earlier = [
            f
            for f in stream
            if earlier_from <= f.ts_ms < start and f.name in ("Zone Entered", "Zone Exited")
        ]
        if own:
            out.append(compute_hour(start, own, earlier))
    return out


def shared(site: str, cells: list[Cell], computed_ms: int = NOW) -> Peer:
    """What an agent keeps of a peer: its cells, through the share document and its checks."""
    topic = PATTERN.format(venue=VENUE, site=site)
    document = share_document(VENUE, site, computed_ms, TZ, DAY, cells)
    share = read_share(document, VENUE, SITES[0], topic_site(PATTERN, VENUE, topic), NOW, LIMITS)
    assert isinstance(share, Share), share
    return Peer(share.site, NOW, share.computed_ms, share.cells)


def close(got: object, want: object, where: str = "") -> None:
    """``got`` equals ``want``, distinct counts within the sketches' error (3 % + 2)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        assert sorted(got) == sorted(want), where
        for key in want:
            close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list), where
        assert len(got) == len(want), where
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            close(g, w, f"{where}[{n}]")
    elif where.rsplit(".", 1)[-1] in DISTINCT and isinstance(want, int | float):
        assert isinstance(got, int | float), where
        assert abs(got - want) <= 0.03 * abs(want) + 2, (where, got, want)
    else:
        assert got == want, (where, got, want)


@settings(max_examples=60)
@given(
    stream=facts(),
    agents=st.integers(2, 4),
    data=st.data(),
)
def test_any_split_of_the_venue_merges_into_the_one_agent_view(
    stream: list[Fact], agents: int, data: st.DataObject
) -> None:
    # Each agent owns some of the devices, so a visit's zone events stay with one agent; any
    # other event may be at any agent.
    owner = {v: data.draw(st.integers(0, agents - 1), label=f"zones of {v}") for v in VISITS}
    split: list[list[Fact]] = [[] for _ in range(agents)]
    for fact in stream:
        zoned = fact.name in ("Zone Entered", "Zone Exited") and fact.visit
        at = owner[str(fact.visit)] if zoned else data.draw(st.integers(0, agents - 1))
        split[at].append(fact)
    peers = [shared(SITES[n], cells_of(split[n])) for n in range(1, agents)]
    merged = venue_cells(cells_of(split[0]), peers, HOURS)
    single = cells_of(stream)
    assert [c.start_ms for c in merged] == [c.start_ms for c in single]
    for got, want in zip(merged, single, strict=True):
        close(got.figures(), want.figures(), f"hour {got.start_ms}")
    view = venue_view(SITES[0], cells_of(split[0]), peers, HOURS, 1, NOW, 30_000)
    close({k: v for k, v in view.items() if k != "agents"}, release(single, 1).document())


def _door(ts: int, visit: str, count: int = 1) -> Fact:
    return Fact(ts, "Door Counted", visit, visit, False, {"count": count, "direction": "in"})


def test_the_view_names_every_agent_and_keeps_a_stale_ones_cells() -> None:
    cell = compute_hour(START, [_door(START + 1, "v1", 3)])
    gone = Peer("hall-b", NOW - 31_000, NOW - 31_000, (cell,))
    here = Peer("hall-c", NOW - 1_000, NOW - 900, (cell,))
    view = venue_view("hall-a", [cell], [here, gone], HOURS, 1, NOW, 30_000)
    assert view["agents"] == [
        {"site": "hall-a", "own": True, "heard_ms": NOW, "computed_ms": NOW, "stale": False},
        {
            "site": "hall-b",
            "own": False,
            "heard_ms": NOW - 31_000,
            "computed_ms": NOW - 31_000,
            "stale": True,
        },
        {
            "site": "hall-c",
            "own": False,
            "heard_ms": NOW - 1_000,
            "computed_ms": NOW - 900,
            "stale": False,
        },
    ]
    total = view["total"]
    assert isinstance(total, dict)
    assert total["footfall_in"] == 9


def test_a_peer_cell_outside_the_hours_asked_for_is_left_out() -> None:
    yesterday = compute_hour(HOURS[0] - HOUR_MS, [_door(HOURS[0] - 5, "v")])
    assert venue_cells([], [Peer("hall-b", NOW, NOW, (yesterday,))], HOURS) == []


def test_topic_site() -> None:
    assert topic_site(PATTERN, VENUE, "venues/expo/agents/hall-b/today") == "hall-b"
    assert topic_site(PATTERN, VENUE, "venues/other/agents/hall-b/today") is None
    assert topic_site(PATTERN, VENUE, "venues/expo/agents/a/b/today") is None
    assert topic_site(PATTERN, VENUE, "venues/expo/agents/hall-b/yesterday") is None
    assert topic_site(PATTERN, VENUE, "venues/expo/agents//today") is None


# --- hostile documents ---------------------------------------------------------------------


def _cell() -> Cell:
    return compute_hour(START, [_door(START + n * 1000, f"v{n}") for n in range(6)])


def _document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(
        share_document(VENUE, "hall-b", NOW, TZ, DAY, [_cell()])
    )
    document.update(changes)
    return document


def _with_cell(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = _document()
    change(document["cells"][0])
    return document


def _cells(n: int) -> list[dict[str, Any]]:
    cell = to_document(_cell())
    return [{**copy.deepcopy(cell), "start_ms": HOURS[h % len(HOURS)]} for h in range(n)]


HOSTILE: list[Any] = [
    pytest.param(b"{not json", "not JSON", id="not-json"),
    pytest.param(b"[1, 2]", "not a JSON object", id="not-an-object"),
    pytest.param(b" " * (MAX_DOCUMENT_BYTES + 1), "bytes; a share document", id="huge"),
    pytest.param(_document(protocol=2), "protocol", id="other-protocol"),
    pytest.param(_document(venue="rival"), "venue", id="wrong-venue"),
    pytest.param(_document(site="hall-a"), "this agent's own", id="own-site"),
    pytest.param(_document(site="hall-c"), "published on the topic of", id="other-agents-site"),
    pytest.param(_document(site="a/b"), "not a site id", id="bad-site-id"),
    pytest.param(
        _document(computed_ms=NOW + MAX_FUTURE_MS + 1000), "ahead of this agent", id="future"
    ),
    pytest.param(_document(computed_ms="soon"), "computed_ms", id="computed-not-a-number"),
    pytest.param(_document(timezone="Mars/Olympus"), "timezone", id="bad-timezone"),
    pytest.param(_document(day="20270115"), "day", id="bad-day"),
    pytest.param(_document(cells={}), "cells: not a list", id="cells-not-a-list"),
    pytest.param(_document(cells=_cells(MAX_CELLS + 1)), "at most 25", id="too-many-cells"),
    pytest.param(_document(cells=[_cells(1)[0]] * 2), "given twice", id="hour-twice"),
    pytest.param(_document(cells=[7]), "cells[0].not an object", id="cell-not-an-object"),
    pytest.param(
        _with_cell(lambda c: c.update(footfall_in=-5)), "footfall_in", id="negative-count"
    ),
    pytest.param(
        _with_cell(lambda c: c.update(visits="AAAA")), "not a readable", id="broken-sketch"
    ),
    pytest.param(
        _with_cell(lambda c: c.update(start_ms=START + 1)), "whole UTC hour", id="not-an-hour"
    ),
    pytest.param(
        _with_cell(lambda c: c.update(start_ms=HOURS[0] - HOUR_MS)), "no hour of", id="other-day"
    ),
    pytest.param(
        _with_cell(lambda c: c.update(dead_letters={f"r{n}": 1 for n in range(1001)})),
        "dead_letters",
        id="too-many-names",
    ),
]


@pytest.mark.parametrize(("document", "reason"), HOSTILE)
def test_a_hostile_document_is_refused_with_a_reason(document: object, reason: str) -> None:
    payload = document if isinstance(document, bytes) else orjson.dumps(document)
    got = read_share(payload, VENUE, "hall-a", "hall-b", NOW, LIMITS)
    assert isinstance(got, Refused)
    assert reason in got.reason


def test_an_honest_document_is_taken_whole() -> None:
    got = read_share(orjson.dumps(_document()), VENUE, "hall-a", "hall-b", NOW, LIMITS)
    assert isinstance(got, Share)
    assert (got.site, got.computed_ms, got.day, len(got.cells)) == ("hall-b", NOW, DAY, 1)
    assert got.cells[0].figures() == _cell().figures()
    assert day_bounds(DAY, zone(TZ))[0] == HOURS[0]
