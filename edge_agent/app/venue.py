"""The venue's agents sharing their cells of today (`edge_agent.core.venueview`): this agent's
share published every ``[venue] share_every_s``, the other agents' documents checked and
kept, and the venue's figures today from all of them.

What is shared are hour cells: sums, and sketches of hashed ids; no event, id or pseudonym.
It goes over the venue's local broker only, never to central (central gets each agent's
cells through the sync, and merges them itself).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from edge_agent import logs
from edge_agent.app.insights import hour_cell
from edge_agent.config import Settings, SiteSettings, VenueSettings
from edge_agent.core.aggregate import Cell, from_document, hour_of
from edge_agent.core.cellcheck import CellLimits
from edge_agent.core.localtime import day_bounds, day_hours, day_of, zone
from edge_agent.core.venueview import (
    MAX_DOCUMENT_BYTES,
    Peer,
    Refused,
    read_share,
    share_document,
    topic_site,
    venue_view,
)
from edge_agent.errors import StorageError
from edge_agent.mqtt.venue import VenueLink
from edge_agent.store.database import Store

logger = logging.getLogger(__name__)


def today_cells(store: Store, site: SiteSettings, now_ms: int) -> tuple[date, list[Cell]]:
    """The site's today (``[site] timezone``) and its hour cells so far that have events: the
    closed hours as the insights job stored them, and, computed from their events now, the
    hour under way and any closed hour with events the job has not caught up with yet (so a
    peer's view loses no hour for the minutes after it closes).

    Raises:
        StorageError: the database cannot be read.
    """
    tz = zone(site.timezone)
    today = day_of(now_ms, tz)
    slots = day_hours(today, tz)
    current = hour_of(now_ms)
    cells = {c.start_ms: c for c in map(from_document, store.insights.cells(slots[0], current))}
    pending = {hour for hour, _ in store.insights.dirty_hours(current) if hour >= slots[0]}
    for hour in sorted(pending | {current}):
        cell, events = hour_cell(store, hour, site.money)
        if events:
            cells[hour] = cell
    return today, [cells[start] for start in sorted(cells)]


def share_once(store: Store, site: SiteSettings, link: VenueLink, now_ms: int) -> int | None:
    """Publish this agent's cells of today (`today_cells`) as its share document; its size
    in bytes, or None when the link could not take it now (the next run replaces it).

    Raises:
        StorageError: the database cannot be read.
    """
    today, cells = today_cells(store, site, now_ms)
    payload = share_document(site.venue, site.id, now_ms, site.timezone, today, cells)
    return len(payload) if link.publish(payload) else None


def venue_today(
    store: Store, site: SiteSettings, venue: VenueSettings, k: int, now_ms: int
) -> dict[str, object]:
    """The venue's figures today: this agent's cells and every peer's merged hour by hour,
    released at ``k`` (`edge_agent.core.venueview.venue_view`), with this agent's today's
    bounds and, per agent, its site, when it was last heard, its ``computed_ms`` and whether
    it is ``stale`` (not heard for ``stale_after_s``).

    Raises:
        StorageError: the database cannot be read.
    """
    today, own = today_cells(store, site, now_ms)
    tz = zone(site.timezone)
    slots = day_hours(today, tz)
    day, day_end = day_bounds(today, tz)
    held = store.peers.cells(day, day_end)
    peers = [
        Peer(a.site, a.heard_ms, a.computed_ms, tuple(map(from_document, held.get(a.site, []))))
        for a in store.peers.agents()
    ]
    view = venue_view(site.id, own, peers, slots, k, now_ms, venue.stale_after_s * 1000)
    return {
        "venue": site.venue,
        "day_start_ms": day,
        "day_end_ms": day_end,
        "slots": slots,
        "timezone": site.timezone,
        "open_hour_ms": hour_of(now_ms),
        "k": k,
        **view,
    }


@dataclass
class PeerIntake:
    """Takes the documents the venue link receives: checked, then kept in ``store`` (a
    connection of the link's own, used only on paho's thread)."""

    store: Store
    site: SiteSettings
    venue: VenueSettings
    clock: Callable[[], int]
    limits: CellLimits = field(default_factory=CellLimits)
    #: Documents refused since the agent started.
    refused: int = 0

    def received(self, topic: str, payload: bytes, retained: bool) -> None:
        """Check and keep one received document; a refused one is logged with its reason
        and counted, and changes nothing."""
        now = self.clock()
        from_site = topic_site(self.venue.topic, self.site.venue, topic)
        if from_site == self.site.id:
            return  # our own retained document, sent back on subscribing
        share = read_share(payload, self.site.venue, self.site.id, from_site, now, self.limits)
        if isinstance(share, Refused):
            self.refused += 1
            logs.log(
                logger, logging.WARNING, "venue_document_refused", share.reason[:300],
                topic=topic[:200], refused=self.refused,
            )  # fmt: skip
            return
        # A retained document may be hours old (its agent since gone): it was heard when it
        # was computed, not when the broker handed it over.
        heard = min(now, share.computed_ms) if retained else now
        day_start = day_bounds(share.day, zone(share.timezone))[0]
        try:
            self.store.peers.save(share, heard, day_start)
        except StorageError as exc:
            logs.log(logger, logging.ERROR, "venue_document_unsaved", str(exc), site=share.site)


class VenueShare:
    """The venue link of a running agent: its MQTT client and the connection its intake
    writes through; `share` is what the scheduler runs."""

    def __init__(self, settings: Settings, clock: Callable[[], int]) -> None:
        """Open the intake's connection and build the link (not yet connected).

        Raises:
            StorageError: the database cannot be opened.
            ConfigError: a TLS file or the password file cannot be used.
        """
        s = settings
        self.settings = settings
        self.store = Store.open(s.database, s.store.synchronous)
        self.intake = PeerIntake(self.store, s.site, s.venue, clock)
        try:
            self.link = VenueLink(
                s.mqtt,
                s.mqtt.effective_client_id(s.site.id) + "-venue",
                s.venue.topic_of(s.site.venue, s.site.id),
                s.venue.subscription(s.site.venue),
                self.intake.received,
                MAX_DOCUMENT_BYTES,
            )
        except BaseException:
            self.store.close()
            raise

    def start(self) -> None:
        """Connect in the background."""
        self.link.start()
        logs.log(logger, logging.INFO, "venue_sharing", "sharing with the venue's agents",
                 venue=self.settings.site.venue, topic=self.link.topic)  # fmt: skip

    def share(self, now_ms: int) -> int | None:
        """Publish this agent's cells of today, on a read-only connection of the calling
        thread's own (`share_once`).

        Raises:
            StorageError: the database cannot be read.
        """
        with Store.open(self.settings.database, readonly=True) as store:
            return share_once(store, self.settings.site, self.link, now_ms)

    def stop(self) -> None:
        """Disconnect, then close the intake's connection (paho's thread has ended)."""
        self.link.stop()
        self.store.close()
