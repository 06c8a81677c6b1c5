"""Consented identified data on its way to the CRM: destinations and their durable queue.

Storing an identified item at central queues it for every enabled destination
(`queue_items`, in the receiving transaction), so an item is either stored and queued or
neither. A notice that removes a person's identified data (an erasure, a ``crm_sync``
withdrawal) drops their queued, undelivered items and queues the notice itself for every
enabled destination (`queue_notice`, in the notice's transaction, before central deletes the
rows). The forwarder (`edge_agent.collector.forwarder`) claims due rows, sends them and
settles each: delivered, retried later, or dead (refused for good, with the reason).

A queued item holds no copy of the person's data: its body is read from ``identified`` when
sent. A notice holds the person's user ids (the CRM knows them by those) only until it is
delivered; what stays afterwards names the person by subject hash alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import orjson

from edge_agent.collector.store.engine import Database, Migration, Tx, audit, now_ms
from edge_agent.errors import CollectorError

MIGRATIONS: tuple[Migration, ...] = (
    (
        "0005_forwarding",
        """
        CREATE TABLE destinations (
            name TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            url TEXT NOT NULL,
            write_key TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            created_ms BIGINT NOT NULL
        );
        CREATE TABLE forward_queue (
            id {identity},
            destination TEXT NOT NULL REFERENCES destinations (name),
            site TEXT NOT NULL,
            subject_hash TEXT NOT NULL,
            kind TEXT NOT NULL,                 -- identified, erasure or consent_withdrawn
            message_id TEXT NOT NULL,           -- the item's messageId, or the notice's id
            notice TEXT,                        -- JSON of a notice until delivered, else NULL
            queued_ms BIGINT NOT NULL,
            attempts INTEGER NOT NULL,
            next_attempt_ms BIGINT NOT NULL,
            last_error TEXT,
            delivered_ms BIGINT,
            dead_ms BIGINT,
            UNIQUE (destination, site, kind, message_id)
        );
        CREATE INDEX forward_queue_due ON forward_queue (destination, next_attempt_ms);
        CREATE INDEX forward_queue_subject ON forward_queue (subject_hash)
        """,
    ),
)

#: The destination kinds the forwarder speaks.
KINDS = ("segment",)
IDENTIFIED = "identified"
_OPEN = "delivered_ms IS NULL AND dead_ms IS NULL"


@dataclass(frozen=True, slots=True)
class Destination:
    """A CRM endpoint; the write key is kept out of its ``repr`` (and out of logs)."""

    name: str
    kind: str
    url: str
    write_key: str = field(repr=False)
    enabled: bool
    created_ms: int


@dataclass(frozen=True, slots=True)
class DestinationStatus:
    """A destination and its queue: waiting, delivered, dead, and the latest error."""

    destination: Destination
    queued: int
    delivered: int
    failing: int
    dead: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Due:
    """A claimed queue row to send: an identified item's Segment body, or a notice's JSON."""

    id: int
    kind: str
    site: str
    subject_hash: str
    message_id: str
    attempts: int
    queued_ms: int
    body: str


@dataclass(frozen=True, slots=True)
class Forwarded:
    """One queue row as the person API shows it (no body)."""

    destination: str
    site: str
    kind: str
    message_id: str
    queued_ms: int
    attempts: int
    delivered_ms: int | None
    dead_ms: int | None
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Held:
    """One identified item central holds of a person: the Segment item as the site sent it."""

    site: str
    message_id: str
    type: str
    event: str | None
    timestamp_ms: int
    received_ms: int
    item: dict[str, object]


@dataclass(frozen=True, slots=True)
class NoticeSeen:
    """An erasure or withdrawal central received, and how many identified rows it removed."""

    site: str
    kind: str
    item_id: str
    purpose: str | None
    requested_ms: int
    identified_removed: int
    received_ms: int


def queue_items(tx: Tx, site: str, items: Sequence[tuple[str, str]], at_ms: int) -> None:
    """Queue newly stored identified items ``(message_id, subject_hash)`` of ``site`` for
    every enabled destination, in the transaction that stored them."""
    for message_id, subject_hash in items:
        tx.run(
            "INSERT INTO forward_queue (destination, site, subject_hash, kind, message_id, "
            "queued_ms, attempts, next_attempt_ms) "
            "SELECT name, ?, ?, ?, ?, ?, 0, ? FROM destinations WHERE enabled = 1 "
            "ON CONFLICT DO NOTHING",
            (site, subject_hash, IDENTIFIED, message_id, at_ms, at_ms),
        )


def queue_notice(
    tx: Tx,
    site: str,
    kind: str,
    notice_id: str,
    subject_hash: str,
    purpose: str | None,
    requested_ms: int,
    at_ms: int,
) -> int:
    """Drop the subject's undelivered items of ``site`` and queue the notice for every
    enabled destination; call it before central deletes their ``identified`` rows (their
    user ids go into the notice). Returns how many queued items were dropped."""
    dropped = tx.run(
        f"DELETE FROM forward_queue WHERE site = ? AND subject_hash = ? AND kind = ? AND {_OPEN}",
        (site, subject_hash, IDENTIFIED),
    )
    user_ids = [
        str(row[0])
        for row in tx.rows(
            "SELECT DISTINCT user_id FROM identified WHERE site = ? AND subject_hash = ? "
            "ORDER BY user_id",
            (site, subject_hash),
        )
    ]
    notice = {
        "user_ids": user_ids,
        "purpose": purpose,
        "requested_ms": requested_ms,
        "queued_ms": at_ms,
    }
    # Every enabled destination, not only those that got something: an item may be on its
    # way to one right now, and the notice must follow it there.
    tx.run(
        "INSERT INTO forward_queue (destination, site, subject_hash, kind, message_id, notice, "
        "queued_ms, attempts, next_attempt_ms) "
        "SELECT name, ?, ?, ?, ?, ?, ?, 0, ? FROM destinations WHERE enabled = 1 "
        "ON CONFLICT DO NOTHING",
        (site, subject_hash, kind, notice_id, orjson.dumps(notice).decode(), at_ms, at_ms),
    )
    return dropped


class ForwardingStore(Database):
    """Consented identified data on its way to the CRM: destinations and their durable queue."""

    def add_destination(self, name: str, kind: str, url: str, write_key: str) -> None:
        """Add an enabled destination; it gets what is stored from now on.

        Raises:
            CollectorError: a destination of that name exists, or the kind is unknown.
        """
        if kind not in KINDS:
            raise CollectorError(f"destination kind {kind!r}: use one of {', '.join(KINDS)}")
        with self.write() as tx:
            added = tx.run(
                "INSERT INTO destinations (name, kind, url, write_key, enabled, created_ms) "
                "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT DO NOTHING",
                (name, kind, url, write_key, now_ms()),
            )
            if not added:
                raise CollectorError(
                    f"destination {name!r} exists: remove it first, or pick another name"
                )
            audit(tx, None, "destination_added", {"name": name, "kind": kind, "url": url})

    def set_write_key(self, name: str, write_key: str) -> None:
        """Give a destination another write key; what waits for it is sent with the new one
        from its next attempt.

        Raises:
            CollectorError: no destination of that name.
        """
        with self.write() as tx:
            if not tx.run(
                "UPDATE destinations SET write_key = ? WHERE name = ?", (write_key, name)
            ):
                raise CollectorError(
                    f"no destination {name!r} (edge-agent-collector destinations list names them)"
                )
            # Due now: the rows waited for a key that was refused.
            tx.run(
                f"UPDATE forward_queue SET next_attempt_ms = 0 WHERE destination = ? AND {_OPEN}",
                (name,),
            )
            audit(tx, None, "destination_key_changed", {"name": name})

    def remove_destination(self, name: str) -> int:
        """Remove a destination and its queue; returns how many undelivered rows went.

        Raises:
            CollectorError: no destination of that name.
        """
        with self.write() as tx:
            dropped = tx.run(
                f"DELETE FROM forward_queue WHERE destination = ? AND {_OPEN}", (name,)
            )
            tx.run("DELETE FROM forward_queue WHERE destination = ?", (name,))
            if not tx.run("DELETE FROM destinations WHERE name = ?", (name,)):
                raise CollectorError(
                    f"no destination {name!r} (edge-agent-collector destinations list names them)"
                )
            audit(tx, None, "destination_removed", {"name": name, "undelivered": dropped})
        return dropped

    def destinations(self, *, enabled_only: bool = False) -> list[Destination]:
        """The destinations, by name."""
        where = "WHERE enabled = 1" if enabled_only else ""
        return [
            Destination(name, kind, url, key, bool(enabled), created)
            for name, kind, url, key, enabled, created in self.read(
                "SELECT name, kind, url, write_key, enabled, created_ms FROM destinations "
                f"{where} ORDER BY name"
            )
        ]

    def destination_status(self) -> list[DestinationStatus]:
        """Each destination with its queue's counts; ``failing`` are waiting rows that were
        tried at least once, ``last_error`` the newest error of a waiting or dead row."""
        counts = {
            name: (int(queued), int(delivered), int(failing), int(dead))
            for name, queued, delivered, failing, dead in self.read(
                "SELECT destination, "
                f"sum(CASE WHEN {_OPEN} THEN 1 ELSE 0 END), "
                "sum(CASE WHEN delivered_ms IS NOT NULL THEN 1 ELSE 0 END), "
                f"sum(CASE WHEN {_OPEN} AND attempts > 0 THEN 1 ELSE 0 END), "
                "sum(CASE WHEN dead_ms IS NOT NULL THEN 1 ELSE 0 END) "
                "FROM forward_queue GROUP BY destination"
            )
        }
        errors: dict[str, str] = {}
        for name, error in self.read(
            "SELECT destination, last_error FROM forward_queue WHERE last_error IS NOT NULL "
            "AND delivered_ms IS NULL ORDER BY next_attempt_ms, id"
        ):
            errors[str(name)] = str(error)
        return [
            DestinationStatus(d, *counts.get(d.name, (0, 0, 0, 0)), errors.get(d.name))
            for d in self.destinations()
        ]

    def claim_due(
        self, destination: str, kinds: Sequence[str], limit: int, now: int, lease_ms: int
    ) -> list[Due]:
        """Claim up to ``limit`` rows of ``kinds`` due at ``now``, oldest first: none is due
        again for ``lease_ms``, so another forwarder (another collector process) skips
        them while this one sends."""
        marks = ", ".join("?" for _ in kinds)
        with self.write() as tx:
            candidates = tx.rows(
                "SELECT q.id, q.kind, q.site, q.subject_hash, q.message_id, q.attempts, "
                "q.queued_ms, coalesce(i.body, q.notice) FROM forward_queue q "
                "LEFT JOIN identified i ON q.kind = 'identified' AND i.site = q.site "
                "AND i.message_id = q.message_id "
                f"WHERE q.destination = ? AND q.kind IN ({marks}) AND q.next_attempt_ms <= ? "
                f"AND q.delivered_ms IS NULL AND q.dead_ms IS NULL ORDER BY q.id LIMIT ?",
                (destination, *kinds, now, limit),
            )
            claimed = []
            for row in candidates:
                # Checked again row by row: a concurrent claim (PostgreSQL) may have won it.
                if tx.run(
                    "UPDATE forward_queue SET next_attempt_ms = ? WHERE id = ? "
                    f"AND next_attempt_ms <= ? AND {_OPEN}",
                    (now + lease_ms, row[0], now),
                ):
                    claimed.append(row)
            gone = [row[0] for row in claimed if row[7] is None]
            for id_ in gone:
                # Its identified row was deleted (by hand): nothing left to send.
                tx.run(
                    "UPDATE forward_queue SET dead_ms = ?, last_error = ? WHERE id = ?",
                    (now, "the item is no longer held at central", id_),
                )
        return [Due(*row) for row in claimed if row[7] is not None]

    def delivered(self, ids: Sequence[int], at_ms: int) -> None:
        """Mark rows delivered; a notice's user ids are dropped with it."""
        with self.write() as tx:
            for id_ in ids:
                tx.run(
                    "UPDATE forward_queue SET delivered_ms = ?, attempts = attempts + 1, "
                    "notice = NULL, last_error = NULL WHERE id = ?",
                    (at_ms, id_),
                )

    def retry_later(self, ids: Sequence[int], next_ms: int, error: str) -> None:
        """Count a failed attempt of rows; they are due again at ``next_ms``."""
        with self.write() as tx:
            for id_ in ids:
                tx.run(
                    "UPDATE forward_queue SET attempts = attempts + 1, next_attempt_ms = ?, "
                    f"last_error = ? WHERE id = ? AND {_OPEN}",
                    (next_ms, error, id_),
                )

    def release(self, ids: Sequence[int], next_ms: int) -> None:
        """Give claimed rows back unsent (not an attempt); they are due again at ``next_ms``."""
        with self.write() as tx:
            for id_ in ids:
                tx.run(
                    f"UPDATE forward_queue SET next_attempt_ms = ? WHERE id = ? AND {_OPEN}",
                    (next_ms, id_),
                )

    def dead(self, ids: Sequence[int], at_ms: int, reason: str) -> None:
        """Set rows aside for good: the destination refused them with ``reason``."""
        with self.write() as tx:
            for id_ in ids:
                tx.run(
                    "UPDATE forward_queue SET attempts = attempts + 1, dead_ms = ?, "
                    f"last_error = ? WHERE id = ? AND {_OPEN}",
                    (at_ms, reason, id_),
                )

    def held(self, subject_hash: str) -> list[Held]:
        """The identified items central holds of a subject, per site and time."""
        return [
            Held(site, message_id, type_, event, ts, received, orjson.loads(body))
            for site, message_id, type_, event, ts, received, body in self.read(
                "SELECT site, message_id, type, event, timestamp_ms, received_ms, body "
                "FROM identified WHERE subject_hash = ? ORDER BY site, timestamp_ms, id",
                (subject_hash,),
            )
        ]

    def notices(self, subject_hash: str) -> list[NoticeSeen]:
        """The erasures and withdrawals central received for a subject (from the audit
        trail, which records every notice, including those of purposes central holds nothing
        for)."""
        seen = []
        # ``subject_hash`` is 64 hex digits (the route checks it), so it cannot break LIKE.
        for ts, site, action, detail in self.read(
            "SELECT ts_ms, site, action, detail FROM audit WHERE action IN (?, ?) "
            "AND detail LIKE ? ORDER BY id",
            ("erasure", "consent_withdrawn", f'%"subject_hash":"{subject_hash}"%'),
        ):
            fields = orjson.loads(detail)
            seen.append(
                NoticeSeen(
                    str(site),
                    str(action),
                    str(fields["item_id"]),
                    fields.get("purpose"),
                    int(fields["requested_ms"]),
                    int(fields.get("identified_removed", 0)),
                    int(ts),
                )
            )
        return seen

    def forwarded(self, subject_hash: str) -> list[Forwarded]:
        """What was queued for a subject, to which destination, and what became of it."""
        return [
            Forwarded(*row)
            for row in self.read(
                "SELECT destination, site, kind, message_id, queued_ms, attempts, "
                "delivered_ms, dead_ms, last_error FROM forward_queue WHERE subject_hash = ? "
                "ORDER BY id",
                (subject_hash,),
            )
        ]
