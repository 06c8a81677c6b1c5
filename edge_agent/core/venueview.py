"""The agents of one venue sharing their hour cells of today: the share document each agent
publishes (retained) on the venue's local broker, the checks a received one must pass, and
the venue's view: every agent's cells merged hour by hour, with each agent's freshness.

A large venue runs several agents, each owning a partition of its devices (DESIGN.md,
"Scale"), so each sees only its share of the venue's people. The share document is::

    {"protocol": 1, "venue": V, "site": S, "computed_ms": T, "timezone": tz,
     "day": "YYYY-MM-DD", "cells": [to_document(cell) of each hour of S's today with events]}

as canonical JSON (orjson, sorted keys). Its cells are stored cells (`to_document`): sums,
and sketches of hashed ids only, never an event; they travel on the venue's own broker and
nowhere else. A document from another agent is believed only as far as central would
believe the same cells (`edge_agent.core.cellcheck`), plus what only a peer can get wrong:
another venue, our own site id, a clock minutes ahead, hours outside its day.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

import orjson

from edge_agent.core.aggregate import Cell, from_document, merge, release, to_document
from edge_agent.core.cellcheck import CellLimits, bounds_problem, figures_problem
from edge_agent.core.localtime import day_hours, is_zone, zone
from edge_agent.core.names import valid_id

PROTOCOL = 1
#: A share document larger than this is refused unread: a day of a busy venue's cells, many
#: zones, gates and places each, stays well under it.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
#: A local day has 23, 24 or 25 hours.
MAX_CELLS = 25
#: How far ahead of our clock a peer's ``computed_ms`` may be (clocks of one venue's boxes
#: drift; a document from the future would win over every honest one for as long).
MAX_FUTURE_MS = 5 * 60 * 1000
_MAX_TIMEZONE = 64


@dataclass(frozen=True, slots=True)
class Share:
    """A share document, read and checked: one agent's cells of its today."""

    venue: str
    site: str
    computed_ms: int
    timezone: str
    day: date
    #: Its hour cells, in time order, each one whole UTC hour of ``day``.
    cells: tuple[Cell, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """A share document that was not taken, and why (what the log says)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Peer:
    """What this agent holds of another agent of the venue."""

    site: str
    #: When its latest document reached this agent (this agent's clock).
    heard_ms: int
    #: Its latest document's own time (its clock).
    computed_ms: int
    cells: tuple[Cell, ...]


def share_document(
    venue: str, site: str, computed_ms: int, timezone: str, day: date, cells: Iterable[Cell]
) -> bytes:
    """The share document of ``site``'s cells of ``day``, as published."""
    return orjson.dumps(
        {
            "protocol": PROTOCOL,
            "venue": venue,
            "site": site,
            "computed_ms": computed_ms,
            "timezone": timezone,
            "day": day.isoformat(),
            "cells": [to_document(c) for c in sorted(cells, key=lambda c: c.start_ms)],
        },
        option=orjson.OPT_SORT_KEYS,
    )


def topic_site(pattern: str, venue: str, topic: str) -> str | None:
    """The site whose share topic ``topic`` is, under ``pattern`` (``[venue] topic``, with
    ``{venue}`` and ``{site}``), or None when it is no share topic of ``venue``."""
    prefix, _, suffix = pattern.replace("{venue}", venue).partition("{site}")
    if not (topic.startswith(prefix) and topic.endswith(suffix)):
        return None
    site = topic[len(prefix) : len(topic) - len(suffix)]
    return site if valid_id(site) else None


def read_share(
    payload: bytes,
    venue: str,
    own_site: str,
    from_site: str | None,
    now_ms: int,
    limits: CellLimits,
) -> Share | Refused:
    """The share document ``payload`` if this agent may take it, else why not.

    Args:
        payload: the message as received.
        venue: this agent's venue: the document must be of it.
        own_site: this agent's site: no other agent may speak for it.
        from_site: the site of the topic it came on (None: not a share topic); the document
            must name the same site, so an agent can only speak for itself.
        now_ms: this agent's clock.
        limits: what one hour cell may hold (central's defaults).
    """
    if len(payload) > MAX_DOCUMENT_BYTES:
        return Refused(f"{len(payload)} bytes; a share document may have {MAX_DOCUMENT_BYTES}")
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return Refused(f"not JSON: {exc}")
    if not isinstance(document, dict):
        return Refused("not a JSON object")
    head = _head_problem(document, venue, own_site, from_site, now_ms)
    if head is not None:
        return Refused(head)
    day = date.fromisoformat(document["day"])
    try:
        hours = set(day_hours(day, zone(document["timezone"])))
    except (OverflowError, ValueError):  # a day at the end of the calendar
        return Refused(f"day: {day} has no hours this agent can tell")
    cells = document["cells"]
    if not isinstance(cells, list):
        return Refused("cells: not a list")
    if len(cells) > MAX_CELLS:
        return Refused(f"cells: {len(cells)}; a day has at most {MAX_CELLS} hours")
    read: dict[int, Cell] = {}
    for n, raw in enumerate(cells):
        cell = _cell(raw, limits)
        if isinstance(cell, str):
            return Refused(f"cells[{n}].{cell}")
        if cell.start_ms not in hours:
            return Refused(f"cells[{n}].start_ms: {cell.start_ms} is no hour of {day}")
        if cell.start_ms in read:
            return Refused(f"cells[{n}].start_ms: {cell.start_ms} is given twice")
        read[cell.start_ms] = cell
    return Share(
        venue,
        document["site"],
        document["computed_ms"],
        document["timezone"],
        day,
        tuple(read[start] for start in sorted(read)),
    )


def _head_problem(
    document: Mapping[str, object], venue: str, own_site: str, from_site: str | None, now_ms: int
) -> str | None:
    if document.get("protocol") != PROTOCOL:
        return f"protocol: {str(document.get('protocol'))[:32]!r} is not {PROTOCOL}"
    if document.get("venue") != venue:
        return f"venue: {str(document.get('venue'))[:64]!r} is not this agent's {venue!r}"
    site = document.get("site")
    if not isinstance(site, str) or not valid_id(site):
        return f"site: {str(site)[:64]!r} is not a site id"
    if site == own_site:
        return f"site: {site!r} is this agent's own"
    if site != from_site:
        return f"site: {site!r} published on the topic of {str(from_site)[:64]!r}"
    computed = document.get("computed_ms")
    if not isinstance(computed, int) or isinstance(computed, bool) or computed < 0:
        return f"computed_ms: {str(computed)[:32]!r} is not a time in ms"
    if computed > now_ms + MAX_FUTURE_MS:
        return (
            f"computed_ms: {computed} is {(computed - now_ms) // 1000} s ahead of this agent's "
            f"clock; at most {MAX_FUTURE_MS // 1000} s are taken"
        )
    timezone = document.get("timezone")
    if not isinstance(timezone, str) or len(timezone) > _MAX_TIMEZONE or not is_zone(timezone):
        return f"timezone: {str(timezone)[:64]!r} is not an IANA time zone"
    day = document.get("day")
    if not isinstance(day, str) or not _is_day(day):
        return f"day: {str(day)[:32]!r} is not YYYY-MM-DD"
    return None


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
