"""The venue's agents sharing their cells of today (`edge_agent.core.venueview`): this agent's
share (its changed hours and its index) published every ``[venue] share_every_s``, the other
agents' documents checked and kept, and the venue's figures today from all of them.

What is shared are hour cells: sums, and sketches of hashed ids; no event, id or pseudonym.
It goes over the venue's local broker only, never to central (central gets each agent's
cells through the sync, and merges them itself).
"""

from __future__ import annotations

import logging
import threading
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
    UNKNOWN_DIGEST,
    Expected,
    Head,
    Peer,
    Refused,
    Sent,
    hour_topic,
    hours_subscription,
    index_document,
    key_fingerprint,
    plan_share,
    read_hour,
    read_index,
    share_topic,
    venue_view,
)
from edge_agent.errors import StorageError
from edge_agent.mqtt.venue import VenueLink
from edge_agent.ops import keyfile
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


class Publisher:
    """This agent's share rounds: what the broker holds of its hours (``sent``), so a round
    publishes only the hours that changed, empties the ones of a day gone, and then the
    index. ``sent`` is shared with the intake (paho's thread), which reports the hours the
    broker kept from an earlier run (`found`)."""

    def __init__(self, link: VenueLink, site: SiteSettings, index_topic: str, key: str) -> None:
        """Args:
        link: the venue link it publishes through.
        site: this agent's ``[site]``.
        index_topic: where its index goes (``[venue] topic``).
        key: its site key's fingerprint (`key_fingerprint`).
        """
        self.link = link
        self.site = site
        self.index_topic = index_topic
        self.key = key
        self.lock = threading.Lock()
        self.sent: dict[int, Sent] = {}

    def found(self, start_ms: int) -> None:
        """The broker holds an hour of this agent retained (from before this run): publish
        it again if it is of today, empty it if not."""
        with self.lock:
            self.sent.setdefault(start_ms, Sent(UNKNOWN_DIGEST, 0))

    def round(self, store: Store, now_ms: int) -> int | None:
        """Publish this agent's changed hours of today (`today_cells`), empty its hours of
        other days, then its index; the bytes published, or None when the link could not
        take a round now (the next one makes up for it).

        Raises:
            StorageError: the database cannot be read.
        """
        if not self.link.ready():
            return None
        today, cells = today_cells(store, self.site, now_ms)
        head = Head(self.site.venue, self.site.id, now_ms, self.site.timezone, today, self.key)
        with self.lock:
            sent = dict(self.sent)
        plan = plan_share(head, cells, sent)
        published = 0
        for start in plan.cleared:
            if self.link.publish(hour_topic(head.venue, head.site, start), b""):
                sent.pop(start)
        for start, payload in plan.hours.items():
            if self.link.publish(hour_topic(head.venue, head.site, start), payload):
                sent[start] = plan.sent[start]
                published += len(payload)
        with self.lock:
            # What paho's thread found meanwhile stays, to be looked at next round.
            looked_at = {*plan.sent, *plan.cleared}
            found = {start: held for start, held in self.sent.items() if start not in looked_at}
            self.sent = {**found, **sent}
        index = index_document(head, {start: sent[start] for start in plan.sent if start in sent})
        if not self.link.publish(self.index_topic, index):
            return None
        return published + len(index)


def venue_today(
    store: Store, site: SiteSettings, venue: VenueSettings, k: int, now_ms: int
) -> dict[str, object]:
    """The venue's figures today: this agent's cells and every peer's merged hour by hour,
    released at ``k`` (`edge_agent.core.venueview.venue_view`), with this agent's today's
    bounds and, per agent, its site, when it was last heard, its ``computed_ms`` and whether
    it is ``stale`` (not heard for ``stale_after_s``); ``refused``: the agents whose
    documents are refused for a site key of their own, with what to do.

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
        "refused": [
            {"site": r.site, "reason": r.reason, "refused_ms": r.refused_ms}
            for r in store.peers.refusals()
        ],
    }


@dataclass
class PeerIntake:
    """Takes the documents the venue link receives: checked, then kept in ``store`` (a
    connection of the link's own, used only on paho's thread)."""

    store: Store
    site: SiteSettings
    venue: VenueSettings
    clock: Callable[[], int]
    #: This agent's site key's fingerprint: a peer's documents must carry the same.
    key: str
    #: Told of this agent's own hours the broker kept from an earlier run.
    publisher: Publisher
    limits: CellLimits = field(default_factory=CellLimits)
    #: Documents refused since the agent started.
    refused: int = 0
    #: The peers already logged as holding another site key, with the reason logged.
    wrong_keys: dict[str, str] = field(default_factory=dict)

    def received(self, topic: str, payload: bytes, retained: bool) -> None:
        """Check and keep one received document; a refused one is logged with its reason
        and counted, and changes nothing (but that a peer with another site key is
        recorded, for ``status`` and the screens)."""
        now = self.clock()
        of = share_topic(self.venue.topic, self.site.venue, topic)
        if of is not None and of.site == self.site.id:
            # Our own retained documents, sent back on subscribing.
            if of.start_ms is not None and payload:
                self.publisher.found(of.start_ms)
            return
        if not payload:
            return  # an agent emptied an hour of a day gone: the view leaves it out anyway
        expected = Expected(self.site.venue, self.site.id, self.key, self.limits)
        if of is None:
            self._refuse(topic, Refused("topic: no index or hour topic of this venue"), now)
        elif of.kind == "index":
            index = read_index(payload, expected, of, now)
            if isinstance(index, Refused):
                self._refuse(topic, index, now, of.site)
                return
            # A retained index may be hours old (its agent since gone): it was heard when it
            # was computed, not when the broker handed it over.
            heard = min(now, index.head.computed_ms) if retained else now
            day_start = day_bounds(index.head.day, zone(index.head.timezone))[0]
            self._save(lambda: self.store.peers.save_index(index, heard, day_start), of.site)
            self.wrong_keys.pop(of.site, None)
        else:
            hour = read_hour(payload, expected, of, now)
            if isinstance(hour, Refused):
                self._refuse(topic, hour, now, of.site)
                return
            self._save(lambda: self.store.peers.save_hour(hour), of.site)

    def _refuse(self, topic: str, refused: Refused, now: int, site: str = "") -> None:
        self.refused += 1
        if not refused.wrong_key:
            logs.log(
                logger, logging.WARNING, "venue_document_refused", refused.reason[:300],
                topic=topic[:200], refused=self.refused,
            )  # fmt: skip
            return
        # Every document of such a peer is refused, every few seconds: said loudly once
        # (and again if its key changes), counted always, and kept for `status`.
        if self.wrong_keys.get(site) != refused.reason:
            self.wrong_keys[site] = refused.reason
            logs.log(
                logger, logging.ERROR, "venue_key_mismatch", refused.reason,
                site=site, refused=self.refused,
            )  # fmt: skip
            self._save(lambda: self.store.peers.refuse(site, refused.reason, now), site)

    def _save(self, write: Callable[[], object], site: str) -> None:
        try:
            write()
        except StorageError as exc:
            logs.log(logger, logging.ERROR, "venue_document_unsaved", str(exc), site=site)


class VenueShare:
    """The venue link of a running agent: its MQTT client, its share rounds and the
    connection its intake writes through; `share` is what the scheduler runs."""

    def __init__(self, settings: Settings, clock: Callable[[], int]) -> None:
        """Open the intake's connection and build the link (not yet connected).

        Raises:
            StorageError: the database cannot be opened.
            ConfigError: the site key, a TLS file or the password file cannot be used.
        """
        s = settings
        self.settings = settings
        key = key_fingerprint(keyfile.load_or_create(s.site_key))
        self.store = Store.open(s.database, s.store.synchronous)
        try:
            self.link = VenueLink(
                s.mqtt,
                s.mqtt.effective_client_id(s.site.id) + "-venue",
                (s.venue.subscription(s.site.venue), hours_subscription(s.site.venue)),
                self._received,
                MAX_DOCUMENT_BYTES,
            )
        except BaseException:
            self.store.close()
            raise
        self.publisher = Publisher(
            self.link, s.site, s.venue.topic_of(s.site.venue, s.site.id), key
        )
        self.intake = PeerIntake(self.store, s.site, s.venue, clock, key, self.publisher)

    def _received(self, topic: str, payload: bytes, retained: bool) -> None:
        # The link is made before the publisher and the intake that need it; it calls back
        # only once connected, when both exist.
        self.intake.received(topic, payload, retained)

    def start(self) -> None:
        """Connect in the background."""
        self.link.start()
        logs.log(logger, logging.INFO, "venue_sharing", "sharing with the venue's agents",
                 venue=self.settings.site.venue, topic=self.publisher.index_topic,
                 key=self.publisher.key)  # fmt: skip

    def share(self, now_ms: int) -> int | None:
        """One share round (`Publisher.round`), on a read-only connection of the calling
        thread's own.

        Raises:
            StorageError: the database cannot be read.
        """
        with Store.open(self.settings.database, readonly=True) as store:
            return self.publisher.round(store, now_ms)

    def stop(self) -> None:
        """Disconnect, then close the intake's connection (paho's thread has ended)."""
        self.link.stop()
        self.store.close()
