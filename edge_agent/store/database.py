"""The site database: the `Store` holds the one connection and hands out the repositories
(one per table group), and carries out what spans them in one transaction: committing a batch
with its consent effects, erasing a person, expiring old rows, and the counters of ``status``.

The store is the only code that writes SQL against the site database; callers get plain
values and dataclasses.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlite_utils import Database

from edge_agent.core.aggregate import DEAD_LETTER_KIND, DUPLICATES_KIND, hour_of, hours_affected
from edge_agent.core.catalogue import from_events
from edge_agent.core.deadletters import DEFAULT_BUDGET, Budget, DeadLetter, dead_letter
from edge_agent.core.events import Inbound, Reason, Rejection
from edge_agent.core.identity import Identity, Pseudonym
from edge_agent.core.links import refusal
from edge_agent.core.retention import Cutoffs
from edge_agent.store.catalogue import Catalogue
from edge_agent.store.connection import Connection, connect
from edge_agent.store.deadletters import DeadLetters
from edge_agent.store.events import Events, Received
from edge_agent.store.insights import Insights
from edge_agent.store.outbox import Outbox
from edge_agent.store.peers import Peers
from edge_agent.store.people import ERASURE_EVENT, PersonalData, Receipt
from edge_agent.store.registry import Registry
from edge_agent.store.state import State


def _segments(received: Sequence[Received]) -> list[tuple[list[Received], Received | None]]:
    """Split a batch at each erasure request: (events before it, the request)."""
    segments: list[tuple[list[Received], Received | None]] = []
    current: list[Received] = []
    for r in received:
        if r.event.name == ERASURE_EVENT and r.identity is not None:
            segments.append((current, r))
            current = []
        else:
            current.append(r)
    segments.append((current, None))
    return segments


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What one commit changed."""

    stored: int
    duplicates: int
    dead_letters: int
    #: The new events by event name (type, for identify).
    by_event: dict[str, int] = field(default_factory=dict)
    #: Events the commit itself refused, kept as dead letters by it: a messageId stored from
    #: another device or with other content, a visit link the device may not make. Not
    #: counted in ``dead_letters`` nor ``duplicates``.
    refused: tuple[DeadLetter, ...] = ()
    #: Identified events stored without linking their visit, which their device may not link
    #: (`edge_agent.core.links`): messageId -> why.
    links_refused: dict[str, str] = field(default_factory=dict)
    #: Dead letters over the budget: counted in ``dead_letters_unkept``, not kept.
    unkept: int = 0


@dataclass(frozen=True, slots=True)
class Status:
    """The counters ``edge-agent status`` shows."""

    stored: int
    duplicates: int
    dead_letters_by_reason: dict[str, int]
    #: Of those, counted over the budget and not kept.
    dead_letters_unkept: int
    last_event_ms: int | None
    last_stored_ms: int | None
    broker: dict[str, tuple[str, int]]
    outbox: dict[str, int]
    outbox_losses: dict[str, dict[str, int]]


class Store:
    """The agent's SQLite database. One writer (the agent), any number of readers.

    Its repositories: ``events``, ``dead_letters``, ``people``, ``outbox``, ``insights``,
    ``registry`` (models), ``state``, ``peers`` (the venue's other agents); screens are
    `edge_agent.store.screens.Screens`. They share this store's connection, so what one writes
    inside another's transaction commits with it. Every method raises StorageError when SQLite
    fails (disk full, file not writable, database locked past the timeout), with the file named.
    """

    def __init__(
        self,
        connection: Connection,
        budget: Budget = DEFAULT_BUDGET,
        link_devices: frozenset[str] = frozenset(),
    ) -> None:
        self.connection = connection
        self.budget = budget
        self.link_devices = link_devices
        self.path = connection.path
        self.db: Database = connection.db
        self.events = Events(connection)
        self.dead_letters = DeadLetters(connection)
        self.outbox = Outbox(connection)
        self.catalogue = Catalogue(connection)
        self.people = PersonalData(connection, self.events, self.outbox, self.dead_letters)
        self.insights = Insights(connection, self.outbox)
        self.registry = Registry(connection)
        self.state = State(connection)
        self.peers = Peers(connection)

    @classmethod
    def open(
        cls,
        path: Path,
        synchronous: str = "FULL",
        readonly: bool = False,
        budget: Budget = DEFAULT_BUDGET,
        link_devices: frozenset[str] = frozenset(),
    ) -> Store:
        """Open (creating when needed) the database in WAL mode and bring its schema up to date.
        ``budget``: what the dead letters this store commits may take; ``link_devices``: the
        devices that may link visits other devices saw (`edge_agent.core.links`).

        Raises:
            StorageError: the folder or file cannot be created or opened, a migration fails, or
                the database was written by a newer edge-agent (it has schema steps this code
                does not know).
        """
        return cls(connect(path, synchronous, readonly), budget, link_devices)

    def close(self) -> None:
        """Close the connection (WAL content stays durable; readers checkpoint later)."""
        self.connection.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def commit(
        self,
        received: Sequence[Received],
        dead_letters: Sequence[DeadLetter],
        schema_version: str,
        stored_ms: int,
    ) -> CommitResult:
        """Store events (once per messageId), their consent effects, and dead letters in ONE
        transaction; then carry out the erasures the batch requested.

        The caller acknowledges the MQTT messages only after this returns: that is what makes
        an acknowledged event (and the consent change it carries) durable. ``Erasure Requested``
        events are not stored: they erase, and leave a receipt.

        Raises:
            StorageError: SQLite could not commit; nothing of the batch is stored.
        """
        stored = duplicates = erased = 0
        by_event: Counter[str] = Counter()
        refused: list[DeadLetter] = []
        links_refused: dict[str, str] = {}
        with self.connection.failing("could not commit a batch"):
            with self.connection.transaction():
                # Dead letters first, so an erasure in this batch reaches them too.
                unkept = self.dead_letters.add(dead_letters, stored_ms, self.budget)
                quality: Counter[tuple[int, str]] = Counter(
                    (hour_of(d.received_ms), f"{DEAD_LETTER_KIND}{d.reason.value}")
                    for d in dead_letters
                )
                # An erasure applies to what came before it, not to the person's later events:
                # the batch is stored and applied in segments that end at each erasure request.
                for segment, erasure in _segments(received):
                    unlinkable = self._links_refused(segment)
                    links_refused.update(unlinkable)
                    fresh = self.events.insert(segment, schema_version, stored_ms)
                    self.insights.mark_dirty(
                        {
                            h
                            for s in fresh
                            for h in hours_affected(s.event.timestamp_ms, s.event.name)
                        },
                        stored_ms,
                    )
                    stored += len(fresh)
                    by_event.update(s.event.name or s.event.type for s in fresh)
                    self.catalogue.learn(
                        from_events((s.event.name, s.event.body) for s in fresh), stored_ms
                    )
                    if len(fresh) < len(segment):
                        # The very objects inserted: a copy later in the batch is "again" too.
                        inserted = {id(s.event) for s in fresh}
                        again = [r for r in segment if id(r.event) not in inserted]
                        clashes = self._conflicts(again)
                        refused += clashes.values()
                        unkept += self.dead_letters.add(
                            list(clashes.values()), stored_ms, self.budget
                        )
                        quality.update(
                            (hour_of(d.received_ms), f"{DEAD_LETTER_KIND}{d.reason.value}")
                            for d in clashes.values()
                        )
                        plain = [r for n, r in enumerate(again) if n not in clashes]
                        duplicates += len(plain)
                        quality.update(
                            (hour_of(r.event.timestamp_ms), DUPLICATES_KIND) for r in plain
                        )
                    self.people.apply(fresh, stored_ms, frozenset(unlinkable))
                    if erasure is not None:
                        erased += self._erase_once(erasure, stored_ms)
                if duplicates:
                    self.state.add("duplicates", duplicates)
                self.insights.count_quality(quality, stored_ms)
            if erased:
                self.connection.scrub()
        return CommitResult(
            stored=stored,
            duplicates=duplicates,
            dead_letters=len(dead_letters),
            by_event=dict(by_event),
            refused=tuple(refused),
            links_refused=links_refused,
            unkept=unkept,
        )

    def _erase_once(self, request: Received, now_ms: int) -> int:
        identity = request.identity
        assert identity is not None  # the schema requires a userId on erasure requests
        if self.people.erased(request.event.message_id):
            return 0  # a redelivered request was carried out already
        self.people.erase(
            identity.pseudonym,
            identity.user_id,
            request.event.message_id,
            f"event from {request.event.device_id}",
            request.event.timestamp_ms,
            now_ms,
        )
        return 1

    def _links_refused(self, segment: Sequence[Received]) -> dict[str, str]:
        """The identified events whose visit their device may not link to their person
        (`edge_agent.core.links`), judged in receive order: messageId -> why. They are stored
        all the same, as the person's own events, without the link."""
        visits = {r.event.anonymous_id for r in segment if r.identity and r.event.anonymous_id}
        if not visits:
            return {}
        seen_by = self.events.devices_of_visits(visits)
        linked: dict[str, str] = dict(self.people.links(visits))
        refused: dict[str, str] = {}
        for r in segment:
            visit = r.event.anonymous_id
            if visit not in visits:
                continue
            devices = seen_by.setdefault(visit, set())
            if r.identity is not None:
                person = r.identity.pseudonym
                why = refusal(
                    r.event.device_id, person, devices, linked.get(visit), self.link_devices
                )
                if why is None:
                    linked.setdefault(visit, person)
                else:
                    refused[r.event.message_id] = why
            devices.add(r.event.device_id)
        return refused

    def _conflicts(self, again: Sequence[Received]) -> dict[int, DeadLetter]:
        """The events among ``again`` (messageIds already stored) that are not the stored
        event: another device, or other content, under the same messageId. A redelivery is
        the same event and only a duplicate; a conflict would lose an event without a word,
        so it becomes a dead letter naming both digests."""
        stored = self.events.stored_as(r.event.message_id for r in again)
        letters = {}
        for n, r in enumerate(again):
            device, body = stored.get(r.event.message_id, (r.event.device_id, r.event.body))
            if (device, body) == (r.event.device_id, r.event.body):
                continue
            raw = r.event.body.encode()
            detail = (
                f"messageId {r.event.message_id[:64]!r} is already stored from device "
                f"{device[:64]!r} (sha256 {_digest(body.encode())}); this one from "
                f"{r.event.device_id[:64]!r} differs (sha256 {_digest(raw)}): the messageId is "
                "the de-duplication key of the whole site, so it was not stored"
            )
            letters[n] = dead_letter(
                Inbound(r.topic, raw, r.received_ms),
                Rejection(Reason.DUPLICATE_CONFLICT, detail, raw),
                len(raw),
                frozenset({r.identity.pseudonym}) if r.identity else frozenset(),
            )
        return letters

    def erase(self, person: Identity, request: str, now_ms: int) -> Receipt:
        """Erase a person at an operator's request (``edge-agent forget``).

        Raises:
            StorageError: SQLite could not carry it out; nothing was erased.
        """
        with self.connection.failing("could not erase"):
            with self.connection.transaction():
                receipt = self.people.erase(
                    person.pseudonym, person.user_id, request, "operator", now_ms, now_ms
                )
            self.connection.scrub()
        return receipt

    def person(self, person: Pseudonym) -> dict[str, list[dict[str, object]]]:
        """Everything held about a person, table by table (subject access).

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read"):
            return self.people.person_rows(person)

    def status(self) -> Status:
        """Counters for ``edge-agent status``.

        Raises:
            StorageError: the database cannot be read.
        """
        counts = self.events.counts()
        return Status(
            stored=counts.stored,
            duplicates=self.state.counter("duplicates"),
            dead_letters_by_reason=self.dead_letters.open_by_reason(),
            dead_letters_unkept=sum(u.occurrences for u in self.dead_letters.unkept()),
            last_event_ms=counts.last_event_ms,
            last_stored_ms=counts.last_stored_ms,
            broker=self.state.all(),
            outbox=self.outbox.depth(),
            outbox_losses=self.outbox.losses(),
        )

    def expire(self, cutoffs: Cutoffs, chunk: int = 5000) -> dict[str, int]:
        """Delete raw events, dead letters and queued identified items past their time to live,
        in small transactions so that ingest is never held up for long; expired queued items
        are counted in the outbox's loss ledger.

        Raises:
            StorageError: SQLite could not delete.
        """
        with self.connection.failing("could not expire old rows"):
            removed = {
                "events": self.events.expire(cutoffs.events_before_ms, chunk),
                "dead_letters": self.dead_letters.expire(cutoffs.dead_letters_before_ms, chunk),
            }
        # Identified data waiting for central is personal data: it lives no longer than events.
        removed["outbox_identified"] = self.outbox.expire("identified", cutoffs.events_before_ms)
        return removed


def _digest(data: bytes) -> str:
    # Enough of the SHA-256 to tell two bodies apart in a dead letter's detail.
    return hashlib.sha256(data).hexdigest()[:16]
