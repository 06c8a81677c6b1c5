"""The events table: stored once per messageId, read as aggregation, the screens and
training see them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from edge_agent.core.aggregate import Fact
from edge_agent.core.consent import purpose_for
from edge_agent.core.events import Event
from edge_agent.core.identity import Identity, Pseudonym
from edge_agent.store.connection import Connection

_FACT_EVENTS = frozenset(
    {
        "Door Counted",
        "Zone Entered",
        "Zone Exited",
        "Order Completed",
        "Feedback Submitted",
        "Ticket Scanned",
        "Badge Scanned",
    }
)
_ZONE_EVENTS = frozenset({"Zone Entered", "Zone Exited"})
_INSERT = """
INSERT OR IGNORE INTO events (message_id, type, event, ts_ms, received_ms, stored_ms,
    device_id, anonymous_id, pseudonym, schema_version, body, holder)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


@dataclass(frozen=True, slots=True)
class Received:
    """A pseudonymised event, when it was received, who it named (None: anonymous), and the
    topic it came on."""

    event: Event
    received_ms: int
    identity: Identity | None = None
    topic: str = ""


@dataclass(frozen=True, slots=True)
class Stored:
    """An event just inserted (``seq`` is its row id: the receive order) and who it named."""

    event: Event
    seq: int
    identity: Identity | None


@dataclass(frozen=True, slots=True)
class Counts:
    """How many events are stored and how recent they are."""

    stored: int
    last_event_ms: int | None
    last_stored_ms: int | None


class Events:
    """The ``events`` table."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def insert(
        self, received: Sequence[Received], schema_version: str, stored_ms: int
    ) -> list[Stored]:
        """Insert events, once per messageId; returns those that were new, with their row ids
        (inside the caller's transaction and error mapping)."""
        conn = self.connection.conn
        newest = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        conn.executemany(
            _INSERT,
            [
                (
                    e.message_id,
                    e.type,
                    e.name,
                    e.timestamp_ms,
                    r.received_ms,
                    stored_ms,
                    e.device_id,
                    e.anonymous_id,
                    r.identity.pseudonym if r.identity else None,
                    schema_version,
                    e.body,
                    e.holder,
                )
                for r in received
                for e in (r.event,)
            ],
        )
        # New rows have ids past the newest before the insert: those, and only those, get
        # their consent effects (a redelivered event had its effects when it first came).
        fresh = dict(conn.execute("SELECT message_id, id FROM events WHERE id > ?", (newest,)))
        new: list[Stored] = []
        for r in received:
            seq = fresh.pop(r.event.message_id, None)
            if seq is not None:
                new.append(Stored(r.event, seq, r.identity))
        return new

    def hash_holders(
        self, rehash: Callable[[str], tuple[str, str | None]], chunk: int = 500
    ) -> int:
        """Hash the ticket and badge ids of the events stored before holders were
        (``rehash``: a stored body -> the body as it is stored now, and its holder), ``chunk``
        events per transaction, once: a database that needs none costs one read. Returns how
        many events it rewrote.

        Raises:
            StorageError: SQLite could not write it.
        """
        done = 0
        with self.connection.failing("could not hash the ticket and badge ids") as conn:
            while True:
                with self.connection.transaction():
                    pending = conn.execute("SELECT after_id FROM holders_unhashed").fetchone()
                    if pending is None:
                        return done
                    rows = conn.execute(
                        "SELECT id, body FROM events WHERE id > ? AND holder IS NULL AND "
                        "(body LIKE '%\"ticket_id\"%' OR body LIKE '%\"badge_id\"%') "
                        "ORDER BY id LIMIT ?",
                        (pending[0], chunk),
                    ).fetchall()
                    conn.executemany(
                        "UPDATE events SET body = ?, holder = ? WHERE id = ?",
                        [(*rehash(body), event_id) for event_id, body in rows],
                    )
                    if len(rows) < chunk:
                        conn.execute("DELETE FROM holders_unhashed")
                    else:
                        conn.execute("UPDATE holders_unhashed SET after_id = ?", (rows[-1][0],))
                done += len(rows)

    def delete_ids(self, ids: Sequence[int]) -> None:
        """Delete the events of these row ids (inside the caller's transaction)."""
        self.connection.in_chunks("DELETE FROM events WHERE id IN ({marks})", list(ids))

    def stored_as(self, message_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """``messageId -> (device, body)`` of the stored events with these ids (inside the
        caller's transaction and error mapping)."""
        rows = self.connection.in_chunks(
            "SELECT message_id, device_id, body FROM events WHERE message_id IN ({marks})",
            list(dict.fromkeys(message_ids)),
        )
        return {message_id: (device, body) for message_id, device, body in rows}

    def devices_of_visits(self, visits: Iterable[str]) -> dict[str, set[str]]:
        """The devices that sent each of these visits' stored events (inside the caller's
        transaction and error mapping)."""
        found: dict[str, set[str]] = {}
        for visit, device in self.connection.in_chunks(
            "SELECT DISTINCT anonymous_id, device_id FROM events WHERE anonymous_id IN ({marks})",
            list(dict.fromkeys(visits)),
        ):
            found.setdefault(visit, set()).add(device)
        return found

    def of_person(self, person: Pseudonym) -> list[Event]:
        """The person's identified events and those of their linked visits, in receive order
        (inside the caller's error mapping)."""
        return self._where(
            "pseudonym = ? OR (pseudonym IS NULL AND anonymous_id IN (SELECT anonymous_id "
            "FROM visit_links WHERE pseudonym = ?))",
            (person, person),
        )

    def of_visit(self, visit: str) -> list[Event]:
        """A visit's events, in receive order (inside the caller's error mapping)."""
        return self._where("anonymous_id = ?", (visit,))

    def _where(self, where: str, params: tuple[object, ...]) -> list[Event]:
        rows = self.connection.conn.execute(
            "SELECT message_id, type, event, ts_ms, device_id, anonymous_id, body FROM events "
            f"WHERE {where} ORDER BY id",
            params,
        )
        return [Event(m, t, n, ts, d, a, None, b) for m, t, n, ts, d, a, b in rows]

    def facts(self, start_ms: int, end_ms: int, zones_only: bool = False) -> list[Fact]:
        """The events of a period as aggregation sees them.

        The visitor key is the person (pseudonym) only for a visit linked to someone whose
        consent allows linking visits in aggregates; otherwise the visit. It stays in memory:
        cells keep hashes.

        Raises:
            StorageError: the database cannot be read.
        """
        names = _ZONE_EVENTS if zones_only else _FACT_EVENTS
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute(
                "SELECT e.ts_ms, e.event, e.anonymous_id, coalesce(e.pseudonym, v.pseudonym), "
                "c.granted, e.body FROM events e "
                "LEFT JOIN visit_links v ON v.anonymous_id = e.anonymous_id "
                "LEFT JOIN consent c ON c.pseudonym = coalesce(e.pseudonym, v.pseudonym) "
                "AND c.purpose = ? "
                "WHERE e.ts_ms >= ? AND e.ts_ms < ?"
                + (" AND e.event IN ('Zone Entered', 'Zone Exited')" if zones_only else ""),
                (purpose_for("link_visits"), start_ms, end_ms),
            ).fetchall()
        facts = []
        for ts, name, visit, person, linkable, body in rows:
            properties = orjson.loads(body).get("properties", {}) if name in names else {}
            visitor = person if (person and linkable) else visit
            facts.append(Fact(ts, name, visit, visitor, person is not None, properties))
        return facts

    def counts(self) -> Counts:
        """How many events are stored, the newest event time and the newest store time.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            stored = conn.execute("SELECT count(*) FROM events").fetchone()[0]
            last_event, last_stored = conn.execute(
                "SELECT max(ts_ms), max(stored_ms) FROM events"
            ).fetchone()
        return Counts(stored, last_event, last_stored)

    def latest_visit_at(self, device: str, since_ms: int) -> str | None:
        """The visit (anonymousId) seen last at ``device`` since ``since_ms``.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            row = conn.execute(
                "SELECT anonymous_id FROM events WHERE ts_ms >= ? AND device_id = ? "
                "AND anonymous_id IS NOT NULL ORDER BY ts_ms DESC, id DESC LIMIT 1",
                (since_ms, device),
            ).fetchone()
        return None if row is None else str(row[0])

    def latest_visit_in(self, zone: str, since_ms: int) -> str | None:
        """The visit that entered ``zone`` last since ``since_ms`` and has not left it.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            row = conn.execute(
                "SELECT e.anonymous_id FROM events e WHERE e.event = 'Zone Entered' "
                "AND e.ts_ms >= ? AND json_extract(e.body, '$.properties.zone') = ? "
                "AND NOT EXISTS (SELECT 1 FROM events x WHERE x.anonymous_id = e.anonymous_id "
                "AND x.event = 'Zone Exited' AND x.ts_ms >= e.ts_ms "
                "AND json_extract(x.body, '$.properties.zone') = ?) "
                "ORDER BY e.ts_ms DESC, e.id DESC LIMIT 1",
                (since_ms, zone, zone),
            ).fetchone()
        return None if row is None else row[0]

    def person_of(self, visit: str) -> Pseudonym | None:
        """Who a visit belongs to: the person its latest identified event named, else the
        one it is linked to (None: anonymous).

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            ((person,),) = conn.execute(
                "SELECT coalesce((SELECT pseudonym FROM events WHERE anonymous_id = ? "
                "AND pseudonym IS NOT NULL ORDER BY id DESC LIMIT 1), "
                "(SELECT pseudonym FROM visit_links WHERE anonymous_id = ?))",
                (visit, visit),
            ).fetchall()
        return Pseudonym(person) if person else None

    def basket_events(self, visit: str) -> list[tuple[str, dict[str, Any]]]:
        """A visit's basket events (added, removed, order completed) in time order: (event
        name, properties).

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute(
                "SELECT event, body FROM events WHERE anonymous_id = ? AND event IN "
                "('Product Added', 'Product Removed', 'Order Completed') ORDER BY ts_ms, id",
                (visit,),
            ).fetchall()
        return [(name, orjson.loads(body).get("properties", {})) for name, body in rows]

    def sold_items(self, after_id: int, since_ms: int) -> tuple[dict[str, object], int]:
        """The items of the orders stored after event ``after_id`` and made since
        ``since_ms``, each with the greatest name the tills gave it (None: none); and the
        newest event id read.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            ((last,),) = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchall()
            rows = conn.execute(
                "SELECT json_extract(line.value, '$.product_id') AS item, "
                "max(json_extract(line.value, '$.name')) FROM events, "
                "json_each(json_extract(events.body, '$.properties.products')) AS line "
                "WHERE events.id > ? AND events.id <= ? AND events.event = 'Order Completed' "
                "AND events.ts_ms >= ? GROUP BY item",
                (after_id, last, since_ms),
            ).fetchall()
        return {str(item): name for item, name in rows if item}, int(last)

    def orders(self, since_ms: int) -> list[tuple[int, list[dict[str, Any]]]]:
        """``(time, product lines)`` of every order made since ``since_ms``.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute(
                "SELECT ts_ms, body FROM events WHERE event = 'Order Completed' AND ts_ms >= ?",
                (since_ms,),
            ).fetchall()
        return [
            (int(ts_ms), orjson.loads(body).get("properties", {}).get("products", []))
            for ts_ms, body in rows
        ]

    def expire(self, before_ms: int, chunk: int) -> int:
        """Delete events older than ``before_ms``; returns how many (inside the caller's
        error mapping)."""
        return self.connection.delete_in_chunks(
            "events", "SELECT id FROM events WHERE ts_ms < ? LIMIT ?", before_ms, chunk
        )
