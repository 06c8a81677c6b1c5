"""The venue's view from its agents' shares: any split of a venue's events across its agents
merges into the figures one agent would have computed from them all; a share document is
taken only when it could be an honest peer's."""

from __future__ import annotations

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
)
from edge_agent.core.cellcheck import CellLimits
from edge_agent.core.identity import KEY_BYTES, SiteKey
from edge_agent.core.localtime import day_bounds, day_hours, zone
from edge_agent.core.venueview import (
    MAX_CELLS,
    MAX_FUTURE_MS,
    MAX_HOUR_BYTES,
    MAX_INDEX_BYTES,
    UNKNOWN_DIGEST,
    Expected,
    Head,
    Hour,
    Index,
    Peer,
    Refused,
    Sent,
    ShareTopic,
    index_document,
    key_fingerprint,
    plan_share,
    read_hour,
    read_index,
    share_topic,
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
KEY = key_fingerprint(SiteKey(b"k" * KEY_BYTES))
EXPECTED = Expected(VENUE, SITES[0], KEY, LIMITS)
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


def head(site: str = "hall-b", computed_ms: int = NOW, key: str = KEY) -> Head:
    return Head(VENUE, site, computed_ms, TZ, DAY, key)


def shared(site: str, cells: list[Cell], computed_ms: int = NOW) -> Peer:
    """What an agent keeps of a peer: its cells, through its hour documents and their checks."""
    plan = plan_share(head(site, computed_ms), cells, {})
    taken = []
    for start, payload in plan.hours.items():
        topic = share_topic(PATTERN, VENUE, f"venues/{VENUE}/agents/{site}/hours/{start}")
        assert topic is not None
        hour = read_hour(payload, EXPECTED, topic, NOW)
        assert isinstance(hour, Hour), hour
        taken.append(hour.cell)
    return Peer(site, NOW, computed_ms, tuple(taken))


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


def test_share_topic() -> None:
    assert share_topic(PATTERN, VENUE, "venues/expo/agents/hall-b/today") == ShareTopic(
        "hall-b", "index"
    )
    assert share_topic(PATTERN, VENUE, f"venues/expo/agents/hall-b/hours/{START}") == ShareTopic(
        "hall-b", "hour", START
    )
    for hostile in (
        "venues/other/agents/hall-b/today",
        "venues/expo/agents/a/b/today",
        "venues/expo/agents/hall-b/yesterday",
        "venues/expo/agents//today",
        "venues/expo/agents/hall-b/hours/+1",
        "venues/expo/agents/hall-b/hours/1_000",
        "venues/expo/agents/hall-b/hours/",
        "venues/expo/agents/hall-b/hours/1/2",
        "venues/expo/agents/hall-b/hours/" + "9" * 17,
    ):
        assert share_topic(PATTERN, VENUE, hostile) is None, hostile


def test_the_key_fingerprint_is_stable_short_and_tells_keys_apart() -> None:
    one, other = SiteKey(b"a" * KEY_BYTES), SiteKey(b"b" * KEY_BYTES)
    assert key_fingerprint(one) == key_fingerprint(SiteKey(b"a" * KEY_BYTES))
    assert key_fingerprint(one) != key_fingerprint(other)
    assert len(key_fingerprint(one)) == 16
    assert one.secret.hex()[:16] not in key_fingerprint(one)


def test_a_round_sends_only_changed_hours_and_empties_a_gone_day() -> None:
    cell, later = _cell(), compute_hour(HOURS[10], [_door(HOURS[10] + 1, "v")])
    first = plan_share(head(), [cell], {})
    assert list(first.hours) == [START]
    assert first.cleared == ()
    again = plan_share(head(computed_ms=NOW + 5), [cell, later], first.sent)
    assert list(again.hours) == [HOURS[10]]
    assert again.sent[START] == first.sent[START]
    yesterday = HOURS[0] - HOUR_MS
    rolled = plan_share(head(), [cell], {yesterday: Sent(UNKNOWN_DIGEST, 0), **first.sent})
    assert rolled.cleared == (yesterday,)
    assert not rolled.hours
    index = read_index(
        index_document(head(computed_ms=NOW + 5), again.sent),
        EXPECTED,
        ShareTopic("hall-b", "index"),
        NOW,
    )
    assert isinstance(index, Index)
    assert index.hours == {START: NOW, HOURS[10]: NOW + 5}


# --- hostile documents ---------------------------------------------------------------------


def _cell() -> Cell:
    return compute_hour(START, [_door(START + n * 1000, f"v{n}") for n in range(6)])


def _hour(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(plan_share(head(), [_cell()], {}).hours[START])
    document.update(changes)
    return document


def _index(**changes: Any) -> dict[str, Any]:
    sent = {HOURS[h]: Sent("d", NOW - h) for h in range(9, 12)}
    document: dict[str, Any] = orjson.loads(index_document(head(), sent))
    document.update(changes)
    return document


def _with_cell(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = _hour()
    change(document["cell"])
    return document


def _entries(n: int) -> list[dict[str, int]]:
    return [
        {"start_ms": HOURS[h % len(HOURS)] + h // len(HOURS), "computed_ms": NOW} for h in range(n)
    ]


OTHER_KEY = key_fingerprint(SiteKey(b"o" * KEY_BYTES))
HEAD_HOSTILE: list[Any] = [
    pytest.param(b"{not json", "not JSON", id="not-json"),
    pytest.param(b"[1, 2]", "not a JSON object", id="not-an-object"),
    pytest.param({"protocol": 1}, "protocol", id="old-protocol"),
    pytest.param({"venue": "rival"}, "venue", id="wrong-venue"),
    pytest.param({"site": "hall-a"}, "this agent's own", id="own-site"),
    pytest.param({"site": "hall-c"}, "published on the topic of", id="other-agents-site"),
    pytest.param({"site": "a/b"}, "not a site id", id="bad-site-id"),
    pytest.param({"computed_ms": NOW + MAX_FUTURE_MS + 1000}, "ahead of this agent", id="future"),
    pytest.param({"computed_ms": "soon"}, "computed_ms", id="computed-not-a-number"),
    pytest.param({"computed_ms": True}, "computed_ms", id="computed-a-boolean"),
    pytest.param({"timezone": "Mars/Olympus"}, "timezone", id="bad-timezone"),
    pytest.param({"day": "20270115"}, "day", id="bad-day"),
    pytest.param({"key": "secret"}, "not a key fingerprint", id="bad-fingerprint"),
    pytest.param({"key": OTHER_KEY}, "copy the venue's site.key", id="another-key"),
]


def _payload(base: Callable[..., dict[str, Any]], document: object) -> bytes:
    if isinstance(document, bytes):
        return document
    assert isinstance(document, dict)
    return orjson.dumps(base(**document))


@pytest.mark.parametrize(("document", "reason"), HEAD_HOSTILE)
def test_a_hostile_head_is_refused_on_either_kind(document: object, reason: str) -> None:
    hour = read_hour(_payload(_hour, document), EXPECTED, ShareTopic("hall-b", "hour", START), NOW)
    index = read_index(_payload(_index, document), EXPECTED, ShareTopic("hall-b", "index"), NOW)
    for got in (hour, index):
        assert isinstance(got, Refused)
        assert reason in got.reason
        assert got.wrong_key == (reason == "copy the venue's site.key")


HOUR_HOSTILE: list[Any] = [
    pytest.param(b" " * (MAX_HOUR_BYTES + 1), "bytes; an hour document", id="huge"),
    pytest.param(_hour(kind="index"), "kind", id="index-on-an-hour-topic"),
    pytest.param(_hour(cell=7), "cell.not an object", id="cell-not-an-object"),
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
        _with_cell(lambda c: c.update(start_ms=HOURS[10])), "on the topic of", id="other-topic"
    ),
    pytest.param(
        _with_cell(lambda c: c.update(dead_letters={f"r{n}": 1 for n in range(1001)})),
        "dead_letters",
        id="too-many-names",
    ),
]


@pytest.mark.parametrize(("document", "reason"), HOUR_HOSTILE)
def test_a_hostile_hour_is_refused_with_a_reason(document: object, reason: str) -> None:
    payload = document if isinstance(document, bytes) else orjson.dumps(document)
    got = read_hour(payload, EXPECTED, ShareTopic("hall-b", "hour", START), NOW)
    assert isinstance(got, Refused)
    assert reason in got.reason


def test_an_hour_of_another_day_is_refused() -> None:
    yesterday = HOURS[0] - HOUR_MS
    document = _with_cell(lambda c: c.update(start_ms=yesterday))
    got = read_hour(orjson.dumps(document), EXPECTED, ShareTopic("hall-b", "hour", yesterday), NOW)
    assert isinstance(got, Refused)
    assert "no hour of" in got.reason


INDEX_HOSTILE: list[Any] = [
    pytest.param(b" " * (MAX_INDEX_BYTES + 1), "bytes; an index", id="huge"),
    pytest.param(_index(kind="hour"), "kind", id="hour-on-the-index-topic"),
    pytest.param(_index(hours={}), "hours: not a list", id="hours-not-a-list"),
    pytest.param(_index(hours=_entries(MAX_CELLS + 1)), "at most 25", id="too-many-hours"),
    pytest.param(_index(hours=_entries(1) * 2), "given twice", id="hour-twice"),
    pytest.param(_index(hours=[7]), "hours[0]: not", id="entry-not-an-object"),
    pytest.param(
        _index(hours=[{"start_ms": START, "computed_ms": -1}]), "hours[0]: not", id="negative"
    ),
    pytest.param(
        _index(hours=[{"start_ms": HOURS[0] - HOUR_MS, "computed_ms": NOW}]),
        "no hour of",
        id="other-day",
    ),
    pytest.param(
        _index(hours=[{"start_ms": START, "computed_ms": NOW + 1}]),
        "after the index's own",
        id="hour-after-index",
    ),
]


@pytest.mark.parametrize(("document", "reason"), INDEX_HOSTILE)
def test_a_hostile_index_is_refused_with_a_reason(document: object, reason: str) -> None:
    payload = document if isinstance(document, bytes) else orjson.dumps(document)
    got = read_index(payload, EXPECTED, ShareTopic("hall-b", "index"), NOW)
    assert isinstance(got, Refused)
    assert reason in got.reason


def test_honest_documents_are_taken_whole() -> None:
    hour = read_hour(orjson.dumps(_hour()), EXPECTED, ShareTopic("hall-b", "hour", START), NOW)
    assert isinstance(hour, Hour)
    assert (hour.head.site, hour.head.computed_ms, hour.head.day) == ("hall-b", NOW, DAY)
    assert hour.cell.figures() == _cell().figures()
    index = read_index(orjson.dumps(_index()), EXPECTED, ShareTopic("hall-b", "index"), NOW)
    assert isinstance(index, Index)
    assert index.hours == {HOURS[h]: NOW - h for h in range(9, 12)}
    assert day_bounds(DAY, zone(TZ))[0] == HOURS[0]
