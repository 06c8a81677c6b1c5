"""The agents of one venue sharing their hour cells of today: the documents each agent
publishes (retained) on the venue's local broker, the checks a received one must pass, and
the venue's view: every agent's cells merged hour by hour, with each agent's freshness.

A large venue runs several agents, each owning a partition of its devices (DESIGN.md,
"Scale"), so each sees only its share of the venue's people. A day of a busy agent's cells is
far larger than the packets the venue's broker takes (``max_packet_size``), so an agent's
share is one retained message per hour cell and a small index::

    venues/V/agents/S/hours/START   {"protocol": 2, "kind": "hour", HEAD, "cell": CELL}
    venues/V/agents/S/today         {"protocol": 2, "kind": "index", HEAD,
                                     "hours": [{"start_ms": START, "computed_ms": T}, ...]}

    HEAD: "venue": V, "site": S, "computed_ms": T, "timezone": tz, "day": "YYYY-MM-DD",
          "key": the fingerprint of S's site key (`key_fingerprint`)

as canonical JSON (orjson, sorted keys). An hour is published again only when its cell
changed; the index, every few seconds, is the agent's heartbeat. Each hour document stands
on its own (its head says whose, which day, which key), so it can be checked whatever order
the broker hands the retained messages over in.

The cells are stored cells (`to_document`): sums, and sketches of hashed ids only, never an
event; they travel on the venue's own broker and nowhere else. A document from another agent
is believed only as far as central would believe the same cells
(`edge_agent.core.cellcheck`), plus what only a peer can get wrong: another venue, our own
site id, a clock minutes ahead, hours outside its day, another site key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

import orjson

from edge_agent.core.aggregate import Cell, from_document, merge, release, to_document
from edge_agent.core.cellcheck import CellLimits, bounds_problem, figures_problem
from edge_agent.core.identity import SiteKey
from edge_agent.core.localtime import day_hours, is_zone, zone
from edge_agent.core.names import valid_id

PROTOCOL = 2
#: Where an agent's hour cells go, next to its index (``[venue] topic``).
HOUR_TOPIC = "venues/{venue}/agents/{site}/hours/{start_ms}"
#: A document larger than this is refused unread: one hour cell of a busy venue, many zones,
#: gates and places, stays well under it.
MAX_HOUR_BYTES = 4 * 1024 * 1024
#: An index names at most `MAX_CELLS` hours: a few KB.
MAX_INDEX_BYTES = 64 * 1024
#: The most a received message may be (the link drops larger ones unread).
MAX_DOCUMENT_BYTES = MAX_HOUR_BYTES
#: A local day has 23, 24 or 25 hours.
MAX_CELLS = 25
#: How far ahead of our clock a peer's ``computed_ms`` may be (clocks of one venue's boxes
#: drift; a document from the future would win over every honest one for as long).
MAX_FUTURE_MS = 5 * 60 * 1000
_MAX_TIMEZONE = 64
#: What the key fingerprint is an HMAC of: a fixed text no pseudonym is ever made of.
_KEY_CHECK = b"edge-agent venue key check"
#: 64 bits: two keys of one venue never share a fingerprint by chance.
FINGERPRINT_CHARS = 16


def key_fingerprint(key: SiteKey) -> str:
    """What the share documents say of the site key: HMAC-SHA256(key, a fixed text),
    truncated. Agents of a venue compare it to tell whether their pseudonyms match; an HMAC
    reveals nothing of the key, and nothing of any pseudonym, which are HMACs of ids."""
    return hmac.new(key.secret, _KEY_CHECK, hashlib.sha256).hexdigest()[:FINGERPRINT_CHARS]


@dataclass(frozen=True, slots=True)
class Head:
    """What every document of an agent says: whose, when computed, which day, which key."""

    venue: str
    site: str
    computed_ms: int
    timezone: str
    day: date
    key: str

    def fields(self) -> dict[str, object]:
        """The head as the documents hold it."""
        return {
            "protocol": PROTOCOL,
            "venue": self.venue,
            "site": self.site,
            "computed_ms": self.computed_ms,
            "timezone": self.timezone,
            "day": self.day.isoformat(),
            "key": self.key,
        }


@dataclass(frozen=True, slots=True)
class Index:
    """An agent's index, read and checked: its today and when each of its hours was computed."""

    head: Head
    #: start_ms -> the computed_ms of the hour document published for it.
    hours: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class Hour:
    """An hour document, read and checked: one of an agent's hour cells of its today."""

    head: Head
    cell: Cell


@dataclass(frozen=True, slots=True)
class Refused:
    """A document that was not taken, and why (what the log says)."""

    reason: str
    #: Refused because its agent has another site key: the installer must copy the key.
    wrong_key: bool = False


@dataclass(frozen=True, slots=True)
class ShareTopic:
    """What a topic of the venue is: an agent's index, or one of its hours (``start_ms``)."""

    site: str
    kind: Literal["index", "hour"]
    start_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Peer:
    """What this agent holds of another agent of the venue."""

    site: str
    #: When its latest index reached this agent (this agent's clock).
    heard_ms: int
    #: Its latest index's own time (its clock).
    computed_ms: int
    cells: tuple[Cell, ...]


@dataclass(frozen=True, slots=True)
class Sent:
    """An hour this agent's broker holds retained: its cell's digest and computed_ms."""

    digest: str
    computed_ms: int


#: The digest of an hour found at the broker, not published by this run: never matches.
UNKNOWN_DIGEST = ""


@dataclass(frozen=True, slots=True)
class SharePlan:
    """What one share round publishes (`plan_share`)."""

    #: start_ms -> the hour document to publish (changed, or not yet at the broker).
    hours: Mapping[int, bytes]
    #: The hours whose retained message is to be emptied: of another day, or gone.
    cleared: tuple[int, ...]
    #: What the broker holds once every one of them is through.
    sent: Mapping[int, Sent]


def hour_topic(venue: str, site: str, start_ms: int) -> str:
    """The topic ``site``'s hour cell of ``start_ms`` is published to (retained)."""
    return HOUR_TOPIC.format(venue=venue, site=site, start_ms=start_ms)


def hours_subscription(venue: str) -> str:
    """The filter that takes every agent's hour documents of ``venue``."""
    return HOUR_TOPIC.format(venue=venue, site="+", start_ms="+")


def _digest(cell: Cell) -> str:
    return hashlib.sha256(orjson.dumps(to_document(cell), option=orjson.OPT_SORT_KEYS)).hexdigest()


def plan_share(head: Head, cells: Iterable[Cell], sent: Mapping[int, Sent]) -> SharePlan:
    """One share round of ``head``'s agent: its hours whose cell changed since ``sent``
    (what the broker holds of it), as hour documents of ``head``, and the hours of ``sent``
    it has no cell of any more (the day rolled over) to be emptied. Only changed hours are
    sent again: a day's cells are far more than the index sent every few seconds."""
    hours: dict[int, bytes] = {}
    after: dict[int, Sent] = {}
    for cell in sorted(cells, key=lambda c: c.start_ms):
        digest = _digest(cell)
        held = sent.get(cell.start_ms)
        if held is not None and held.digest == digest:
            after[cell.start_ms] = held
            continue
        hours[cell.start_ms] = orjson.dumps(
            {**head.fields(), "kind": "hour", "cell": to_document(cell)},
            option=orjson.OPT_SORT_KEYS,
        )
        after[cell.start_ms] = Sent(digest, head.computed_ms)
    return SharePlan(hours, tuple(sorted(set(sent) - set(after))), after)


def index_document(head: Head, sent: Mapping[int, Sent]) -> bytes:
    """The index of ``head``'s agent: the hours the broker holds of it (``sent``), each with
    the computed_ms of its hour document."""
    return orjson.dumps(
        {
            **head.fields(),
            "kind": "index",
            "hours": [{"start_ms": s, "computed_ms": sent[s].computed_ms} for s in sorted(sent)],
        },
        option=orjson.OPT_SORT_KEYS,
    )


def share_topic(index_pattern: str, venue: str, topic: str) -> ShareTopic | None:
    """What ``topic`` is of ``venue``: an agent's index (under ``index_pattern``, ``[venue]
    topic``, with ``{venue}`` and ``{site}``) or one of its hours (`HOUR_TOPIC`); None when it
    is neither."""
    site = _match(index_pattern.replace("{venue}", venue), topic)
    if site is not None:
        return ShareTopic(site, "index")
    head, _, start = topic.rpartition("/")
    site = _match(HOUR_TOPIC.replace("/{start_ms}", "").replace("{venue}", venue), head)
    # Digits only: int() would take "+1", " 1" or "1_000", each another topic of the hour.
    if site is None or not start.isascii() or not start.isdigit() or len(start) > 16:
        return None
    return ShareTopic(site, "hour", int(start))


def _match(pattern: str, topic: str) -> str | None:
    prefix, _, suffix = pattern.partition("{site}")
    if not (topic.startswith(prefix) and topic.endswith(suffix)):
        return None
    site = topic[len(prefix) : len(topic) - len(suffix)]
    return site if valid_id(site) else None


@dataclass(frozen=True, slots=True)
class Expected:
    """What a received document is checked against: this agent's venue, site and key."""

    venue: str
    own_site: str
    key: str
    limits: CellLimits


def read_index(payload: bytes, reader: Expected, topic: ShareTopic, now_ms: int) -> Index | Refused:
    """The index ``payload`` received on ``topic`` if this agent may take it, else why not.

    It must be of this agent's venue, of the site of its topic and not of this agent's own,
    computed at most `MAX_FUTURE_MS` ahead of ``now_ms``, of the same site key, and name at
    most `MAX_CELLS` distinct hours of its day, none computed after the index itself.
    """
    document = _document(payload, MAX_INDEX_BYTES, "index")
    if isinstance(document, Refused):
        return document
    head = _head(document, "index", reader, topic, now_ms)
    if isinstance(head, Refused):
        return head
    hours = _hours_of(head)
    if isinstance(hours, Refused):
        return hours
    listed = document.get("hours")
    if not isinstance(listed, list):
        return Refused("hours: not a list")
    if len(listed) > MAX_CELLS:
        return Refused(f"hours: {len(listed)}; a day has at most {MAX_CELLS}")
    read: dict[int, int] = {}
    for n, entry in enumerate(listed):
        start = _ms(entry.get("start_ms")) if isinstance(entry, dict) else None
        computed = _ms(entry.get("computed_ms")) if isinstance(entry, dict) else None
        if start is None or computed is None:
            return Refused(f"hours[{n}]: not {{start_ms, computed_ms}} in ms")
        if start not in hours:
            return Refused(f"hours[{n}].start_ms: {start} is no hour of {head.day}")
        if start in read:
            return Refused(f"hours[{n}].start_ms: {start} is given twice")
        if computed > head.computed_ms:
            return Refused(f"hours[{n}].computed_ms: {computed} is after the index's own")
        read[start] = computed
    return Index(head, read)


def read_hour(payload: bytes, reader: Expected, topic: ShareTopic, now_ms: int) -> Hour | Refused:
    """The hour document ``payload`` received on ``topic`` if this agent may take it, else why
    not: its head as an index's (`read_index`), and its cell one of the hour of its topic, of
    its day, that passes central's own checks."""
    document = _document(payload, MAX_HOUR_BYTES, "hour document")
    if isinstance(document, Refused):
        return document
    head = _head(document, "hour", reader, topic, now_ms)
    if isinstance(head, Refused):
        return head
    hours = _hours_of(head)
    if isinstance(hours, Refused):
        return hours
    cell = _cell(document.get("cell"), reader.limits)
    if isinstance(cell, str):
        return Refused(f"cell.{cell}")
    if cell.start_ms != topic.start_ms:
        return Refused(f"cell.start_ms: {cell.start_ms} published on the topic of {topic.start_ms}")
    if cell.start_ms not in hours:
        return Refused(f"cell.start_ms: {cell.start_ms} is no hour of {head.day}")
    return Hour(head, cell)


def _document(payload: bytes, limit: int, what: str) -> dict[str, object] | Refused:
    if len(payload) > limit:
        return Refused(f"{len(payload)} bytes; an {what} may have {limit}")
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return Refused(f"not JSON: {exc}")
    if not isinstance(document, dict):
        return Refused("not a JSON object")
    return document


def _hours_of(head: Head) -> set[int] | Refused:
    try:
        return set(day_hours(head.day, zone(head.timezone)))
    except (OverflowError, ValueError):  # a day at the end of the calendar
        return Refused(f"day: {head.day} has no hours this agent can tell")


def _ms(value: object) -> int | None:
    """``value`` if it is a time in ms (a JSON integer, not a boolean), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _head(
    document: Mapping[str, object],
    kind: Literal["index", "hour"],
    reader: Expected,
    topic: ShareTopic,
    now_ms: int,
) -> Head | Refused:
    if document.get("protocol") != PROTOCOL:
        return Refused(f"protocol: {str(document.get('protocol'))[:32]!r} is not {PROTOCOL}")
    if document.get("kind") != kind:
        return Refused(f"kind: {str(document.get('kind'))[:32]!r} on the topic of an {kind}")
    if document.get("venue") != reader.venue:
        venue = str(document.get("venue"))[:64]
        return Refused(f"venue: {venue!r} is not this agent's {reader.venue!r}")
    site = document.get("site")
    if not isinstance(site, str) or not valid_id(site):
        return Refused(f"site: {str(site)[:64]!r} is not a site id")
    if site == reader.own_site:
        return Refused(f"site: {site!r} is this agent's own")
    if site != topic.site:
        return Refused(f"site: {site!r} published on the topic of {topic.site!r}")
    computed = _ms(document.get("computed_ms"))
    if computed is None:
        return Refused(
            f"computed_ms: {str(document.get('computed_ms'))[:32]!r} is not a time in ms"
        )
    if computed > now_ms + MAX_FUTURE_MS:
        return Refused(
            f"computed_ms: {computed} is {(computed - now_ms) // 1000} s ahead of this agent's "
            f"clock; at most {MAX_FUTURE_MS // 1000} s are taken"
        )
    timezone = document.get("timezone")
    if not isinstance(timezone, str) or len(timezone) > _MAX_TIMEZONE or not is_zone(timezone):
        return Refused(f"timezone: {str(timezone)[:64]!r} is not an IANA time zone")
    day = document.get("day")
    if not isinstance(day, str) or not _is_day(day):
        return Refused(f"day: {str(day)[:32]!r} is not YYYY-MM-DD")
    key = document.get("key")
    if not (
        isinstance(key, str)
        and len(key) == FINGERPRINT_CHARS
        and all(c in "0123456789abcdef" for c in key)
    ):
        return Refused(
            f"key: {str(key)[:32]!r} is not a key fingerprint ({FINGERPRINT_CHARS} hex digits)"
        )
    if key != reader.key:
        return Refused(
            f"key: agent {site!r} has another site key than this agent's (fingerprint {key}, "
            f"this agent's {reader.key}), so its people would count twice: copy the venue's "
            f"site.key into the data folder of agent {site!r} and restart it",
            wrong_key=True,
        )
    return Head(reader.venue, site, computed, timezone, date.fromisoformat(day), key)


def _is_day(text: str) -> bool:
    # fromisoformat takes other forms too (20250101): only the one the agents write is.
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return len(text) == 10


def _cell(raw: object, limits: CellLimits) -> Cell | str:
    if not isinstance(raw, dict):
        return "not an object"
    if problem := bounds_problem(raw, limits):
        return problem
    try:
        cell = from_document(raw)
        # Merging reads every sketch through: one the library cannot use fails here, not
        # later in the view of every screen.
        merge([cell, cell]).figures()
    # Whatever a malformed sketch makes the library raise, the document is refused.
    except Exception as exc:
        return f"not a readable insight cell: {str(exc)[:200]}"
    return figures_problem(cell, limits) or cell


def venue_cells(own: Iterable[Cell], peers: Iterable[Peer], hours: Sequence[int]) -> list[Cell]:
    """The venue's hour cells over ``hours``: for each, this agent's cell and every peer's
    merged (`merge`: counts add, distinct counts union as sketches). An hour no agent has a
    cell of is left out, as a site's own hours without events are."""
    wanted = set(hours)
    by_hour: dict[int, list[Cell]] = {}
    for cell in [*own, *(c for p in peers for c in p.cells)]:
        if cell.start_ms in wanted:
            by_hour.setdefault(cell.start_ms, []).append(cell)
    return [merge(by_hour[start]) for start in sorted(by_hour)]


def venue_view(
    own_site: str,
    own: Sequence[Cell],
    peers: Sequence[Peer],
    hours: Sequence[int],
    k: int,
    now_ms: int,
    stale_after_ms: int,
) -> dict[str, object]:
    """The venue's figures over ``hours`` (`release` at ``k`` of `venue_cells`), and the
    agents they come from: this one first, then each peer with when it was last heard, its
    document's ``computed_ms`` and ``stale`` (not heard for ``stale_after_ms``). A stale
    peer's last cells still count: its devices' people were there."""
    agents: list[dict[str, object]] = [
        {"site": own_site, "own": True, "heard_ms": now_ms, "computed_ms": now_ms, "stale": False}
    ]
    agents += [
        {
            "site": p.site,
            "own": False,
            "heard_ms": p.heard_ms,
            "computed_ms": p.computed_ms,
            "stale": now_ms - p.heard_ms > stale_after_ms,
        }
        for p in sorted(peers, key=lambda p: p.site)
    ]
    released = release(venue_cells(own, peers, hours), k)
    return {"agents": agents, **released.document()}
