"""The gate screen's figures: entries per minute from 5-minute slots and the minute under way,
the recent scans of this agent's gates, the warning rules, hall capacities as written in
``[venue]``, and the board put together from a released day."""

from __future__ import annotations

import hashlib

import pytest

from edge_agent.core.aggregate import HOUR_MS, SLOT_MS, Fact, compute_hour, release
from edge_agent.core.capacities import parse_capacities
from edge_agent.core.gates import (
    BUSIEST,
    MINUTE_MS,
    REJECTION_WINDOW_MS,
    WINDOW_MINUTES,
    Heard,
    Recent,
    Rules,
    board,
    full_alerts,
    minutes,
    per_minute,
    recent_scans,
    rejection_alerts,
)

HOUR = 1_800_000 * HOUR_MS
#: 2 minutes and 10 s into the third slot of the hour.
NOW = HOUR + 2 * SLOT_MS + 2 * MINUTE_MS + 10_000
OPEN_SLOT = HOUR + 2 * SLOT_MS


def _scan(ts_ms: int, gate: str, result: str = "accepted", **more: str) -> Fact:
    ticket = hashlib.sha256(f"{gate}{ts_ms}{result}{more}".encode()).hexdigest()
    properties = {"ticket_id": ticket, "gate": gate, "result": result, **more}
    return Fact(ts_ms, "Ticket Scanned", f"visit-{ticket[:8]}", None, False, properties)


def test_the_minutes_are_the_last_thirty_the_one_under_way_last() -> None:
    starts = minutes(NOW)
    assert len(starts) == WINDOW_MINUTES
    assert starts[-1] == NOW - NOW % MINUTE_MS
    assert starts[-1] - starts[0] == (WINDOW_MINUTES - 1) * MINUTE_MS


def test_a_closed_slot_is_spread_over_its_five_minutes() -> None:
    slots = {HOUR + SLOT_MS: 50}
    series = per_minute(slots, NOW, this_minute=0)
    by_minute = dict(zip(minutes(NOW), series, strict=True))
    assert [by_minute[HOUR + SLOT_MS + n * MINUTE_MS] for n in range(5)] == [10.0] * 5
    assert by_minute[HOUR] == 0.0


def test_the_open_slot_takes_the_minute_under_way_from_the_events() -> None:
    # 30 entries so far in the open slot, 12 of them in the minute under way: the two whole
    # minutes before it had the other 18.
    series = per_minute({OPEN_SLOT: 30}, NOW, this_minute=12)
    assert series[-1] == 12
    assert series[-3:-1] == [9.0, 9.0]


def test_a_gate_only_others_scan_spreads_the_open_slot_over_its_minutes_so_far() -> None:
    series = per_minute({OPEN_SLOT: 30}, NOW)
    assert series[-3:] == [10.0, 10.0, 10.0]


def test_a_slot_read_a_moment_before_the_events_never_gives_fewer_than_none() -> None:
    series = per_minute({OPEN_SLOT: 5}, NOW, this_minute=8)
    assert series[-1] == 8
    assert min(series) == 0.0


def test_in_the_first_minute_of_a_slot_the_minute_is_the_events_count() -> None:
    now = OPEN_SLOT + 5_000
    assert per_minute({OPEN_SLOT: 7}, now, this_minute=7)[-1] == 7
    assert per_minute({OPEN_SLOT: 7}, now)[-1] == 7.0


def test_recent_scans_count_entries_attempts_and_reasons_in_the_window() -> None:
    facts = [
        _scan(NOW - 5_000, "north"),
        _scan(NOW - 3_000, "north", "reentry"),
        _scan(NOW - 2 * MINUTE_MS, "north"),
        _scan(NOW - 1_000, "north", "rejected", reason="already_used"),
        _scan(NOW - 1_500, "north", "rejected"),
        _scan(NOW - 2_000, "north", "exit"),
        _scan(NOW - REJECTION_WINDOW_MS - 1, "north", "rejected"),  # before the window
        _scan(NOW - 1_000, ""),  # no gate: unknown
        Fact(NOW - 1_000, "Ticket Scanned", "v", None, False, {"gate": "north"}),  # no ticket
        _scan(NOW - 1_000, "north", "teleported"),
        Fact(NOW - 1_000, "Badge Scanned", "v", None, False, {"badge_id": "b"}),
    ]
    recent = recent_scans(facts, NOW)
    assert set(recent) == {"north", "unknown"}
    north = recent["north"]
    assert (north.this_minute, north.attempts, north.rejected) == (2, 5, 2)
    assert north.reasons == {"already_used": 1, "unspecified": 1}


@pytest.mark.parametrize(
    ("attempts", "rejected", "warned"),
    [
        pytest.param(40, 5, True, id="12.5 % of 40 is above 10 %"),
        pytest.param(40, 4, False, id="exactly 10 % is not above it"),
        pytest.param(19, 10, False, id="fewer than 20 attempts: no warning"),
        pytest.param(20, 3, True, id="20 attempts are enough"),
        pytest.param(0, 0, False, id="no attempts"),
    ],
)
def test_a_gate_warns_above_the_rejection_threshold_with_enough_scans(
    attempts: int, rejected: int, warned: bool
) -> None:
    recent = {"north": Recent(0, attempts, rejected, {"wrong_day": rejected})}
    alerts = rejection_alerts(recent, Rules(rejection_alert=0.1))
    assert bool(alerts) == warned
    if warned:
        alert = alerts[0]
        assert alert["gate"] == "north"
        assert alert["rejected"] == rejected
        assert alert["scans"] == attempts
        assert alert["reason"] == "wrong_day"
        assert alert["minutes"] == 15


def test_the_worst_gate_is_named_first_with_its_most_frequent_reason() -> None:
    recent = {
        "a": Recent(0, 40, 8, {"invalid": 3, "already_used": 5}),
        "b": Recent(0, 40, 20, {"wrong_day": 20}),
    }
    alerts = rejection_alerts(recent, Rules())
    assert [a["gate"] for a in alerts] == ["b", "a"]
    assert alerts[1]["reason"] == "already_used"


def test_a_hall_warns_above_its_share_of_capacity_and_one_without_capacity_never() -> None:
    inside = {"h1": 1900, "h2": 700, "h3": 99_999}
    alerts = full_alerts(inside, {"h1": 2000, "h2": 800}, 0.9)
    assert alerts == [
        {"kind": "hall_full", "hall": "h1", "inside": 1900, "capacity": 2000, "share": 0.95}
    ]
    assert full_alerts({"h1": 1800}, {"h1": 2000}, 0.9) == []  # exactly 90 % is not above


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", {}, id="empty"),
        pytest.param("h1=2000, h2=800", {"h1": 2000, "h2": 800}, id="two"),
        pytest.param(" Hall A = 50 ,", {"Hall A": 50}, id="spaces and a trailing comma"),
    ],
)
def test_hall_capacities_are_read(text: str, expected: dict[str, int]) -> None:
    assert parse_capacities(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("h1", id="no equals"),
        pytest.param("=5", id="no hall"),
        pytest.param("h1=0", id="zero people"),
        pytest.param("h1=-3", id="negative"),
        pytest.param("h1=2.5", id="not whole"),
        pytest.param("h1=abc", id="not a number"),
        pytest.param("h1=5, h1=6", id="a hall twice"),
        pytest.param("h1=99999999999", id="too many people"),
        pytest.param("x" * 65 + "=5", id="a name too long"),
        pytest.param(", ".join(f"h{n}=5" for n in range(101)), id="too many halls"),
    ],
)
def test_bad_hall_capacities_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        parse_capacities(text)


def _day(facts: list[Fact], k: int) -> tuple[dict[str, object] | None, list[object]]:
    cell = compute_hour(HOUR, facts)
    released = release([cell], k)
    return released.total, [cell]


def test_the_board_shows_gates_busiest_attendance_halls_and_warnings() -> None:
    facts = [_scan(NOW - 5_000 - n, "north") for n in range(30)]
    facts += [_scan(NOW - 10 * MINUTE_MS - n, "east") for n in range(10)]
    facts += [_scan(NOW - 30_000 - n, "south", "rejected", reason="wrong_day") for n in range(8)]
    facts += [_scan(NOW - 30_000 - n, "south") for n in range(20)]
    facts += [_scan(NOW - 40_000 - n, "door-1", hall="h1") for n in range(19)]
    facts += [_scan(NOW - 40_000 - n, "north", "exit") for n in range(4)]
    total, window = _day(facts, 5)
    rules = Rules(capacity=100, hall_capacity={"h1": 20, "h2": 500})
    shown = board(
        total,
        window,  # type: ignore[arg-type]
        recent_scans(facts, NOW),
        frozenset({"north", "east", "south", "door-1"}),
        rules,
        [Heard("hall-b", NOW - 45_000), Heard("hall-c", NOW - 1_000)],
        30_000,
        NOW,
    )
    gates = {g["gate"]: g for g in shown["gates"]}  # type: ignore[attr-defined]
    assert list(gates) == ["door-1", "east", "north", "south"]
    assert gates["north"]["this_minute"] == 30
    assert gates["north"]["last_5_min"] == 30
    assert gates["east"]["last_5_min"] == 0
    assert gates["east"]["today"] == 10
    assert [b["gate"] for b in shown["busiest"]] == ["north", "south", "door-1"]  # type: ignore[attr-defined]
    # Exits are scanned: attendance is the entrance gates' entries less their exits.
    attendance = shown["attendance"]
    assert attendance == {
        "basis": "inside",
        "people": 30 + 10 + 20 - 4,
        "holders": 30 + 10 + 20 + 19,
        "entries": 60,
        "exits": 4,
        "capacity": 100,
        "share": 0.56,
    }
    halls = {h["hall"]: h for h in shown["halls"]}  # type: ignore[attr-defined]
    assert halls["h1"]["inside"] == 19
    assert halls["h2"] == {
        "hall": "h2",
        "suppressed": False,
        "inside": 0,
        "capacity": 500,
        "share": 0.0,
    }
    kinds = [(a["kind"], a.get("gate") or a.get("hall")) for a in shown["alerts"]]  # type: ignore[attr-defined]
    assert kinds == [("rejections", "south"), ("hall_full", "h1")]
    assert shown["stale"] == [{"site": "hall-b", "silent_s": 45}]


def test_a_gate_seen_by_fewer_than_k_shows_only_that_and_warns_nobody() -> None:
    facts = [_scan(NOW - 1_000 - n, "north") for n in range(30)]
    # One ticket refused 25 times at "side": fewer than k distinct holders.
    ticket = {"ticket_id": "same", "gate": "side", "result": "rejected"}
    facts += [
        Fact(NOW - 2_000 - n, "Ticket Scanned", f"v{n}", None, False, ticket) for n in range(25)
    ]
    total, window = _day(facts, 5)
    shown = board(
        total, window, recent_scans(facts, NOW), frozenset({"north", "side"}),  # type: ignore[arg-type]
        Rules(), [], 30_000, NOW,
    )  # fmt: skip
    gates = {g["gate"]: g for g in shown["gates"]}  # type: ignore[attr-defined]
    assert gates["side"] == {"gate": "side", "suppressed": True}
    assert shown["alerts"] == []


def test_a_venue_nobody_is_scanned_out_of_counts_the_people_admitted_without_capacity() -> None:
    facts = [_scan(NOW - 1_000 - n, "north") for n in range(12)]
    total, window = _day(facts, 5)
    shown = board(total, window, {}, frozenset(), Rules(), [], 30_000, NOW)  # type: ignore[arg-type]
    attendance = shown["attendance"]
    assert attendance["basis"] == "admitted"  # type: ignore[index]
    assert attendance["people"] == 12  # type: ignore[index]
    assert attendance["share"] is None  # type: ignore[index]
    # Not this agent's gate: its minute under way is the open slot spread over its minutes.
    north = shown["gates"][0]  # type: ignore[index]
    assert north["this_minute"] == 4.0
    assert north["rejected_15_min"] is None


def test_a_day_with_every_hour_suppressed_shows_no_gate_and_no_attendance() -> None:
    facts = [_scan(NOW - 1_000 - n, "north") for n in range(3)]
    total, _ = _day(facts, 5)
    assert total is None
    shown = board(total, [], recent_scans(facts, NOW), frozenset({"north"}), Rules(), [], 1, NOW)
    assert shown["gates"] == []
    assert shown["attendance"] is None
    assert shown["alerts"] == []


def test_at_most_five_gates_are_the_busiest() -> None:
    facts = [_scan(NOW - 1_000 - n, f"g{g}") for g in range(8) for n in range(5 + g)]
    total, window = _day(facts, 5)
    shown = board(total, window, recent_scans(facts, NOW), frozenset(), Rules(), [], 1, NOW)  # type: ignore[arg-type]
    busiest = shown["busiest"]
    assert len(busiest) == BUSIEST  # type: ignore[arg-type]
    assert [b["gate"] for b in busiest] == ["g7", "g6", "g5", "g4", "g3"]  # type: ignore[attr-defined]
