"""A simulated event venue's day: what its gates, hall doors, zone sensors, badge scanners and
feedback kiosks publish, for the venue demo and ``bench.venue``.

Pure: from a random generator and a start time, `venue_stream` yields, in time order, the
publications of every device of every agent of the venue (each agent owns a partition of the
gates and halls: its own site id, its devices publishing under it). No public scan log of a
venue was found to replay, so every distribution is simulated and stated here:

- **Attendance**: ``holders`` ticket holders (default 6,000), each with a ticket id and, at a
  trade fair, a badge id of their own. A share ``day_share`` (0.15) hold day tickets, the
  rest full-event ones (``ticket_class`` ``day`` / ``event``).
- **Arrival** (the gate-opening surge): minutes after the doors open are log-normal, median
  ``surge_median_min`` (12) and sigma ``surge_sigma`` (0.9): about half the day's holders
  are in within 12 minutes, 90 % within 38, the peak entry rate in the first 10 minutes.
  Each holder walks to a gate chosen with weights falling by a tenth per gate (main gates
  busier than side ones), of whichever agent owns it.
- **Scans at a gate**: accepted; ``reject_share`` (0.03) of the holders are first rejected,
  a reason drawn as ``already_used`` 50 %, ``wrong_day`` 30 %, ``invalid`` 20 %, and
  accepted at a second try 5-40 s later with ``invalid``/``wrong_day`` on another lane
  (``already_used``: that holder's ticket was copied, refused and gone). ``exit_share``
  (0.35) leave before the end (exit scan, log-normal median 3 h after entry) and of those
  ``reentry_share`` (0.4) come back 10-60 min later (``reentry``).
- **Halls**: each holder visits 1-3 of the venue's halls (weights 50/35/15 %), entering
  through the hall's door (a ticket scan with ``hall``), 5-20 min apart, each stay
  log-normal with a median of 40 min; zone sensors of the hall report its ``anonymousId``
  (the visit's, kept for the day by the venue's app) entering and leaving the hall's zone.
- **Booths**: in a hall, a holder's badge is scanned at 0-4 booths of the hall (Poisson,
  mean 1.5), each a zone of its own with a log-normal stay (median 4 min).
- **Sessions**: ``sessions`` talks (default 4) with a ``capacity`` each, starting every
  90 min from an hour after opening; each holder inside attends one with probability 0.3,
  badge scanned at its door (``place_kind`` session) at its start +- 5 min.
- **Feedback**: 5 % of the holders answer NPS at a kiosk on their way out.
- **A faulty scanner**: gate ``faulty_gate`` (the last one) sends one in
  ``faulty_every`` (25) of its scans with a result its firmware made up (``"OK"``), which
  the agent refuses (``invalid_properties``) as a dead letter: the demo shows it counted
  with its reason.

Everything random comes from ``rng``, message ids included, so a seed always yields the
same day.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from edge_agent.demo.simulate import Publication, iso_timestamp

_MINUTE_MS = 60_000
_REASONS = (("already_used", 0.5), ("wrong_day", 0.3), ("invalid", 0.2))
_HALL_WEIGHTS = (50, 35, 15)
_HALL_STAY_MEDIAN_MIN = 40.0
_BOOTH_STAY_MEDIAN_MIN = 4.0
_BOOTHS_PER_HALL = 12
_SIGMA = 0.6


@dataclass(frozen=True, slots=True)
class Agent:
    """One agent of the venue and the devices it owns: gates and halls by id."""

    site: str
    gates: tuple[str, ...]
    halls: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VenueDay:
    """The day's parameters (see the module's docstring)."""

    agents: tuple[Agent, ...]
    holders: int = 6000
    day_share: float = 0.15
    surge_median_min: float = 12.0
    surge_sigma: float = 0.9
    reject_share: float = 0.03
    exit_share: float = 0.35
    reentry_share: float = 0.4
    sessions: int = 4
    capacity: int = 400
    faulty_every: int = 25
    #: Only the gate scans (entries, rejections, exits, re-entries): what ``bench.venue``
    #: publishes.
    gates_only: bool = False

    def __post_init__(self) -> None:
        if not self.agents or not all(a.gates for a in self.agents):
            raise ValueError("a venue needs at least one agent, each with a gate")
        if self.holders < 1:
            raise ValueError(f"holders must be at least 1, got {self.holders}")

    @property
    def gates(self) -> list[tuple[str, str]]:
        """Every gate with the site that owns it, in order of weight (busiest first)."""
        return [(a.site, g) for a in self.agents for g in a.gates]

    @property
    def halls(self) -> list[tuple[str, str]]:
        """Every hall with the site that owns its doors."""
        return [(a.site, h) for a in self.agents for h in a.halls]

    @property
    def faulty_gate(self) -> str:
        """The gate whose scanner sends made-up results."""
        return self.gates[-1][1]


@dataclass(order=True)
class _Due:
    at_ms: int
    seq: int
    publication: Publication = field(compare=False)


class _Day:
    """The day being made: the publications due, in time order, and each gate's count."""

    def __init__(self, rng: random.Random, venue: VenueDay, opens_ms: int) -> None:
        self.rng, self.venue, self.opens_ms = rng, venue, opens_ms
        self.due: list[_Due] = []
        self.seq = 0
        self.scans_at: dict[str, int] = {}

    def emit(self, at_ms: int, site: str, device: str, event: str,
             properties: Mapping[str, object], visit: str) -> None:  # fmt: skip
        payload: dict[str, object] = {
            "type": "track",
            "event": event,
            "messageId": str(uuid.UUID(int=self.rng.getrandbits(128))),
            "timestamp": iso_timestamp(at_ms),
            "anonymousId": visit,
            "properties": dict(properties),
            "context": {"device": {"id": device}},
        }
        topic = f"sites/{site}/devices/{device}/events"
        heapq.heappush(self.due, _Due(at_ms, self.seq, Publication(topic, payload, at_ms)))
        self.seq += 1

    def scan(self, at_ms: int, site: str, gate: str, ticket: str, visit: str,
             result: str = "accepted", **more: object) -> None:  # fmt: skip
        n = self.scans_at[gate] = self.scans_at.get(gate, 0) + 1
        if gate == self.venue.faulty_gate and n % self.venue.faulty_every == 0:
            result = "OK"  # the faulty firmware's own word: refused, kept as a dead letter
        properties = {"ticket_id": ticket, "gate": gate, "result": result, **more}
        self.emit(at_ms, site, f"gate-{gate}", "Ticket Scanned", properties, visit)

    def holder(self, n: int, arrive_ms: int, gates: list[tuple[str, str]],
               weights: list[float]) -> None:  # fmt: skip
        """One holder's day: the gate, maybe a rejection, exits and re-entries, the halls."""
        rng, venue = self.rng, self.venue
        ticket = f"T{rng.getrandbits(48):012X}"
        visit = f"visit-{rng.getrandbits(64):016x}"
        site, gate = rng.choices(gates, weights)[0]
        cls = "day" if rng.random() < venue.day_share else "event"
        at = arrive_ms
        if rng.random() < venue.reject_share:
            reason = rng.choices([r for r, _ in _REASONS], [w for _, w in _REASONS])[0]
            self.scan(at, site, gate, ticket, visit, "rejected", reason=reason,
                      ticket_class=cls, lane="1")  # fmt: skip
            if reason == "already_used":
                return
            at += rng.randint(5_000, 40_000)
        self.scan(at, site, gate, ticket, visit, ticket_class=cls, lane="2")
        leaves = None
        if rng.random() < venue.exit_share:
            leaves = at + round(rng.lognormvariate(math.log(180.0), 0.5) * _MINUTE_MS)
            self.scan(leaves, site, gate, ticket, visit, "exit", ticket_class=cls)
            if rng.random() < venue.reentry_share:
                back = leaves + rng.randint(10, 60) * _MINUTE_MS
                self.scan(back, site, gate, ticket, visit, "reentry", ticket_class=cls)
        if venue.gates_only:
            return
        self.inside(n, at, ticket, visit)
        if rng.random() < 0.05:
            kiosk_at = (leaves or at + 6 * 60 * _MINUTE_MS) - 60_000
            nps = rng.choices(range(11), (3, 1, 1, 2, 2, 6, 5, 10, 20, 22, 28))[0]
            self.emit(kiosk_at, site, "kiosk-1", "Feedback Submitted", {"nps": nps}, visit)

    def inside(self, n: int, entered_ms: int, ticket: str, visit: str) -> None:
        """A holder's halls, booths and session, after entering at ``entered_ms``."""
        rng, venue = self.rng, self.venue
        halls = venue.halls
        if not halls:
            return
        badge = f"B{n:06d}"
        count = rng.choices((1, 2, 3), _HALL_WEIGHTS)[0]
        at = entered_ms + rng.randint(2, 10) * _MINUTE_MS
        for site, hall in rng.sample(halls, min(count, len(halls))):
            self.scan(at, site, f"{hall}-door", ticket, visit, hall=hall)
            zone = {"zone": f"hall-{hall}"}
            self.emit(at + 1_000, site, f"zones-{hall}", "Zone Entered", zone, visit)
            stay = round(rng.lognormvariate(math.log(_HALL_STAY_MEDIAN_MIN), _SIGMA) * _MINUTE_MS)
            for _ in range(min(4, _poisson(rng, 1.5))):
                booth = f"{hall}-{rng.randrange(_BOOTHS_PER_HALL) + 1:02d}"
                booth_at = at + rng.randint(60_000, max(60_001, stay - 60_000))
                place = {"badge_id": badge, "place_kind": "booth", "place": booth}
                self.emit(booth_at, site, f"badges-{hall}", "Badge Scanned", place, visit)
                booth_zone = {"zone": f"booth-{booth}"}
                self.emit(booth_at + 500, site, f"zones-{hall}", "Zone Entered", booth_zone, visit)
                booth_stay = rng.lognormvariate(math.log(_BOOTH_STAY_MEDIAN_MIN), _SIGMA)
                left = booth_at + 500 + round(booth_stay * _MINUTE_MS)
                self.emit(left, site, f"zones-{hall}", "Zone Exited", booth_zone, visit)
            self.emit(at + stay, site, f"zones-{hall}", "Zone Exited", zone, visit)
            at += stay + rng.randint(5, 20) * _MINUTE_MS
        if venue.sessions and rng.random() < 0.3:
            talk = rng.randrange(venue.sessions)
            starts = self.opens_ms + (60 + 90 * talk) * _MINUTE_MS
            site, hall = halls[talk % len(halls)]
            place = {"badge_id": badge, "place_kind": "session", "place": f"talk-{talk + 1}"}
            door_at = starts + rng.randint(-5, 5) * _MINUTE_MS
            self.emit(door_at, site, f"badges-{hall}", "Badge Scanned", place, visit)


def venue_stream(rng: random.Random, opens_ms: int, venue: VenueDay) -> Iterator[Publication]:
    """The day's publications of every device of ``venue``'s agents, in time order, from the
    doors opening at ``opens_ms`` (see the module's docstring for every distribution)."""
    day = _Day(rng, venue, opens_ms)
    gates = venue.gates
    weights = [0.9**n for n in range(len(gates))]
    median = math.log(venue.surge_median_min)
    arrivals = sorted(
        opens_ms + round(rng.lognormvariate(median, venue.surge_sigma) * _MINUTE_MS)
        for _ in range(venue.holders)
    )
    for n, arrive in enumerate(arrivals):
        day.holder(n, arrive, gates, weights)
    while day.due:
        yield heapq.heappop(day.due).publication


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method: the means here are small.
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def agents_of(sites: Sequence[str], gates: int, halls: Sequence[str] = ()) -> tuple[Agent, ...]:
    """``gates`` gates (``g01``...) and the halls dealt out in turn to the agents of
    ``sites``: each agent owns a partition of the venue's devices."""
    owned: dict[str, tuple[list[str], list[str]]] = {s: ([], []) for s in sites}
    for n in range(gates):
        owned[sites[n % len(sites)]][0].append(f"g{n + 1:02d}")
    for n, hall in enumerate(halls):
        owned[sites[n % len(sites)]][1].append(hall)
    return tuple(Agent(s, tuple(g), tuple(h)) for s, (g, h) in owned.items())
