"""The simulated venue day: in time order, the same for a seed, every device under the agent
that owns it, and its distributions as the module says."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from edge_agent import schemas
from edge_agent.core.events import Inbound, Limits, parse_payload
from edge_agent.core.topics import SiteId
from edge_agent.demo.venue import VenueDay, agents_of, venue_stream

SITES = ("hall-a", "hall-b", "hall-c")
MINUTE = 60_000


def _day(**options: object) -> VenueDay:
    return VenueDay(agents_of(SITES, 6, ["A", "B", "C"]), **options)  # type: ignore[arg-type]


def test_the_day_is_in_time_order_and_the_same_for_a_seed() -> None:
    day = _day(holders=400)
    first = list(venue_stream(random.Random(5), 0, day))
    assert [p.at_ms for p in first] == sorted(p.at_ms for p in first)
    assert first == list(venue_stream(random.Random(5), 0, day))
    assert first != list(venue_stream(random.Random(6), 0, day))
    assert len({p.payload["messageId"] for p in first}) == len(first)


def test_each_agent_publishes_only_for_the_gates_and_halls_it_owns() -> None:
    day = _day(holders=300)
    owner = {g: a.site for a in day.agents for g in a.gates}
    owner |= {f"{h}-door": a.site for a in day.agents for h in a.halls}
    for p in venue_stream(random.Random(1), 0, day):
        site = p.topic.split("/")[1]
        assert site in SITES
        properties = p.payload["properties"]
        assert isinstance(properties, dict)
        if p.payload["event"] == "Ticket Scanned":
            assert owner[str(properties["gate"])] == site


def _gate_scans(day: VenueDay, seed: int) -> list[tuple[int, dict[str, object]]]:
    """When and what each scan at a venue's gate (not a hall's door) said."""
    out = []
    for p in venue_stream(random.Random(seed), 0, day):
        properties = p.payload["properties"]
        assert isinstance(properties, dict)
        if p.payload["event"] == "Ticket Scanned" and "hall" not in properties:
            out.append((p.at_ms, properties))
    return out


def test_the_surge_rejections_exits_and_the_faulty_scanner_are_as_documented() -> None:
    day = _day(holders=4000)
    scans = _gate_scans(day, 2)
    results = Counter(str(s["result"]) for _, s in scans)
    accepted = results["accepted"]
    # Every holder gets in but those whose ticket was already used (half the rejected).
    assert 0.97 * 4000 <= accepted <= 4000
    assert results["rejected"] == pytest.approx(0.03 * 4000, rel=0.3)
    assert results["exit"] == pytest.approx(0.35 * accepted, rel=0.1)
    assert results["reentry"] == pytest.approx(0.4 * results["exit"], rel=0.15)
    assert 0 < results["OK"] < len(scans) / day.faulty_every
    # About half the day's holders are in within the surge's median (12 minutes).
    entries = sorted(at for at, s in scans if s["result"] == "accepted")
    assert entries[len(entries) // 2] == pytest.approx(12 * MINUTE, rel=0.15)


def test_what_the_devices_send_is_what_the_agent_accepts_but_the_faulty_scans() -> None:
    compiled = schemas.load()
    refused: Counter[str] = Counter()
    for p in venue_stream(random.Random(3), 1_800_000_000_000, _day(holders=200, faulty_every=3)):
        site = SiteId(p.topic.split("/")[1])
        inbound = Inbound(p.topic, orjson.dumps(p.payload), p.at_ms)
        for rejection in parse_payload(inbound, Limits(site=site), compiled).rejections:
            properties = p.payload["properties"]
            assert isinstance(properties, dict)
            refused[f"{rejection.reason}:{properties.get('result')}"] += 1
    assert set(refused) == {"invalid_properties:OK"}


def test_a_venue_needs_an_agent_with_a_gate() -> None:
    with pytest.raises(ValueError, match="each with a gate"):
        VenueDay(())
