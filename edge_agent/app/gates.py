"""The gate screens' figures (`edge_agent.core.gates`): the venue's cells of today, from this
agent and, when it shares (``[venue] share``), every other agent of the venue, with the hour
under way computed from this agent's events at each call, so a surge at its gates shows in
the next answer rather than at the next insights run."""

from __future__ import annotations

from edge_agent.app.venue import today_cells
from edge_agent.config import SiteSettings, VenueSettings
from edge_agent.core.aggregate import from_document, hour_of, releasable, release
from edge_agent.core.capacities import parse_capacities
from edge_agent.core.gates import (
    MINUTE_MS,
    REJECTION_WINDOW_MS,
    WINDOW_MINUTES,
    Heard,
    Rules,
    board,
    recent_scans,
)
from edge_agent.core.localtime import day_bounds, day_hours, zone
from edge_agent.core.venueview import Peer, venue_cells
from edge_agent.store.database import Store


def rules_of(venue: VenueSettings) -> Rules:
    """The capacities and thresholds of ``[venue]`` (checked when the settings were read)."""
    return Rules(
        venue.capacity,
        parse_capacities(venue.hall_capacity),
        venue.rejection_alert,
        venue.occupancy_alert,
    )


def gates_today(
    store: Store, site: SiteSettings, venue: VenueSettings, k: int, now_ms: int
) -> dict[str, object]:
    """What a gate screen shows now (`edge_agent.core.gates.board`), with the venue, the
    site's writing of times (``timezone``), ``k`` and whether the figures are the venue's
    (``shared``) or this agent's alone.

    Raises:
        StorageError: the database cannot be read.
    """
    today, own = today_cells(store, site, now_ms)
    tz = zone(site.timezone)
    day, day_end = day_bounds(today, tz)
    peers: list[Peer] = []
    if venue.share:
        held = store.peers.cells(day, day_end)
        peers = [
            Peer(a.site, a.heard_ms, a.computed_ms, tuple(map(from_document, held.get(a.site, []))))
            for a in store.peers.agents()
        ]
    cells = venue_cells(own, peers, day_hours(today, tz))
    released = release(cells, k)
    since = hour_of(now_ms - WINDOW_MINUTES * MINUTE_MS)
    window = [c for c in cells if c.start_ms >= since and releasable(c, k)]
    current = hour_of(now_ms)
    # Its current minute comes from its events only while the hour under way may be shown.
    open_released = any(c.start_ms == current for c in window)
    own_gates = frozenset(
        gate for c in own if c.start_ms == current and open_released for gate in c.venue.gates
    )
    facts = store.events.facts(now_ms - REJECTION_WINDOW_MS, now_ms + 1)
    figures = board(
        released.total,
        window,
        recent_scans(facts, now_ms),
        own_gates,
        rules_of(venue),
        [Heard(p.site, p.heard_ms) for p in peers],
        venue.stale_after_s * 1000,
        now_ms,
    )
    return {
        "venue": site.venue or site.id,
        "site": site.id,
        "shared": venue.share,
        "now_ms": now_ms,
        "timezone": site.timezone,
        "k": k,
        **figures,
    }
