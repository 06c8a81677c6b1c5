"""The personal-data tables (consent, identity vault, visit links, profiles, erasure).

Every rule here is a consent rule from DESIGN.md, applied inside the same transaction as the
events that trigger it, so an acknowledged consent change has taken effect on disk. Which
purpose allows what is `edge_agent.core.consent.ALLOWS`; the rules ask for the use:
- the raw userId (and traits) sits in ``identity_vault`` only while sending identified data
  is allowed;
- a visit is linked to a person only while the person grants some purpose;
- a profile exists only while personalising is allowed;
- the outbox holds identified items only while sending identified data is allowed;
- a withdrawal removes at once what the purpose allowed, and queues a notice for central.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from edge_agent.core.consent import (
    ALLOWS,
    PURPOSES,
    Change,
    Consent,
    Decision,
    Purpose,
    Stamp,
    allows,
    any_granted,
    apply_update,
    purpose_for,
)
from edge_agent.core.events import Event
from edge_agent.core.identity import HOLDER_KEYS, Identity, Pseudonym, subject_hash
from edge_agent.store.connection import Connection
from edge_agent.store.deadletters import DeadLetters
from edge_agent.store.events import Events, Stored
from edge_agent.store.outbox import Outbox

CONSENT_EVENT = "Consent Updated"
ERASURE_EVENT = "Erasure Requested"
ORDER_EVENT = "Order Completed"

# Tables that hold rows of one person, and how to find them: erasure and subject access walk
# this list, so a table added here is erased and exported without further code.
_PERSON_ROWS: tuple[tuple[str, str], ...] = (
    (
        "events",
        # A linked visit's anonymous events are the person's; another person's identified
        # event on that visit stays theirs. So are the scans of a ticket or badge they held
        # (one scan linked to them is enough), and ``:p`` may be a holder's own pseudonym.
        "pseudonym = :p OR holder = :p OR (pseudonym IS NULL AND (anonymous_id IN "
        "(SELECT anonymous_id FROM visit_links WHERE pseudonym = :p) OR holder IN "
        "(SELECT holder FROM events WHERE pseudonym = :p AND holder IS NOT NULL)))",
    ),
    ("profile_purchases", "pseudonym = :p"),
    ("profiles", "pseudonym = :p"),
    ("identity_vault", "pseudonym = :p"),
    ("consent", "pseudonym = :p"),
    ("consent_ledger", "pseudonym = :p"),
    ("outbox", "subject = :p"),
    ("visit_links", "pseudonym = :p"),
)


@dataclass(frozen=True, slots=True)
class Receipt:
    """Proof of an erasure, holding no personal data."""

    id: int
    subject_hash: str
    request: str
    source: str
    requested_ms: int
    completed_ms: int
    removed: dict[str, int]
    digest: str

    def as_dict(self) -> dict[str, object]:
        """The receipt as JSON-ready values."""
        return {
            "receipt": self.id,
            "subject_hash": self.subject_hash,
            "request": self.request,
            "source": self.source,
            "requested_ms": self.requested_ms,
            "completed_ms": self.completed_ms,
            "removed": self.removed,
            "digest": self.digest,
        }


class PersonalData:
    """Applies the consent rules to a batch, on the store's connection and transaction, and
    reads what a person's consent lets the screens and training use."""

    def __init__(
        self, connection: Connection, events: Events, outbox: Outbox, dead_letters: DeadLetters
    ) -> None:
        self.connection = connection
        self.conn = connection.conn
        self.events = events
        self.outbox = outbox
        self.dead_letters = dead_letters

    # --- reading -----------------------------------------------------------------------------

    def history(self, visitor: Pseudonym) -> tuple[tuple[str, ...], ...] | None:
        """The visitor's baskets (item ids), oldest first, when their consent allows
        personalising; None when it does not.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            if not conn.execute(
                "SELECT 1 FROM consent WHERE pseudonym = ? AND purpose = ? AND granted",
                (visitor, purpose_for("personalise")),
            ).fetchall():
                return None
            rows = conn.execute(
                "SELECT products FROM profile_purchases WHERE pseudonym = ? ORDER BY ts_ms, rowid",
                (visitor,),
            ).fetchall()
        return tuple(_items(products) for (products,) in rows)

    def first_name(self, visitor: Pseudonym) -> str | None:
        """The name the visitor gave, only while their consent allows personalising.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            row = conn.execute(
                "SELECT p.first_name FROM profiles p JOIN consent c ON c.pseudonym = p.pseudonym "
                "AND c.purpose = ? AND c.granted WHERE p.pseudonym = ?",
                (purpose_for("personalise"), visitor),
            ).fetchone()
        return None if row is None else row[0]

    def baskets(self) -> dict[str, list[tuple[str, ...]]]:
        """Every profiled person's baskets (item ids), oldest first: ``profile_purchases``
        holds only people whose consent allows personalising.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute(
                "SELECT pseudonym, products FROM profile_purchases ORDER BY pseudonym, ts_ms, rowid"
            ).fetchall()
        baskets: dict[str, list[tuple[str, ...]]] = {}
        for person, products in rows:
            baskets.setdefault(person, []).append(_items(products))
        return baskets

    def consent(self, person: Pseudonym) -> dict[Purpose, Decision]:
        """The person's current consent."""
        rows = self.conn.execute(
            "SELECT purpose, granted, ts_ms, seq FROM consent WHERE pseudonym = ?", (person,)
        )
        return {purpose: Decision(bool(g), Stamp(ts, seq)) for purpose, g, ts, seq in rows}

    def links(self, anonymous_ids: Iterable[str]) -> dict[str, Pseudonym]:
        """Which of these visits are linked to a person."""
        rows = self.connection.in_chunks(
            "SELECT anonymous_id, pseudonym FROM visit_links WHERE anonymous_id IN ({marks})",
            list(set(anonymous_ids)),
        )
        return {a: Pseudonym(p) for a, p in rows}

    # --- applying a batch --------------------------------------------------------------------

    def apply(
        self, batch: Sequence[Stored], now_ms: int, unlinkable: frozenset[str] = frozenset()
    ) -> None:
        """Apply the consent rules to newly stored events, in the order they were received;
        the events whose messageIds are in ``unlinkable`` link no visit."""
        linked = self.links(s.event.anonymous_id for s in batch if s.event.anonymous_id)
        for item in batch:
            event, identity = item.event, item.identity
            if identity is not None:
                person = identity.pseudonym
                if event.name == CONSENT_EVENT:
                    self._consent_update(item, identity, now_ms)
                consent = self.consent(person)
                self._remember(identity, consent, now_ms)
                visit = event.anonymous_id
                if (
                    visit
                    and any_granted(consent)
                    and linked.get(visit) != person
                    and event.message_id not in unlinkable
                ):
                    self._link(visit, person, consent, now_ms)
                    linked[visit] = person
                self._use(event, person, consent, now_ms)
            elif event.anonymous_id and (owner := linked.get(event.anonymous_id)):
                self._use(event, owner, self.consent(owner), now_ms)

    def _consent_update(self, item: Stored, identity: Identity, now_ms: int) -> None:
        properties = orjson.loads(item.event.body)["properties"]
        answers: dict[str, bool] = properties["purposes"]
        person = identity.pseudonym
        stamp = Stamp(item.event.timestamp_ms, item.seq)
        self.conn.executemany(
            "INSERT INTO consent_ledger (pseudonym, purpose, granted, ts_ms, seq, source, "
            "message_id, recorded_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    person,
                    purpose,
                    answers[purpose],
                    stamp.ts_ms,
                    stamp.seq,
                    properties["source"],
                    item.event.message_id,
                    now_ms,
                )
                for purpose in PURPOSES
                if purpose in answers
            ],
        )
        change = apply_update(self.consent(person), answers, stamp)
        self.conn.executemany(
            "INSERT INTO consent (pseudonym, purpose, granted, ts_ms, seq) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (pseudonym, purpose) DO UPDATE SET granted = excluded.granted, "
            "ts_ms = excluded.ts_ms, seq = excluded.seq",
            [(person, p, d.granted, d.stamp.ts_ms, d.stamp.seq) for p, d in change.after.items()],
        )
        self._withdraw(person, change, identity, now_ms)
        self._grant(person, change, now_ms)

    def _withdraw(self, person: Pseudonym, change: Change, identity: Identity, now_ms: int) -> None:
        for purpose in sorted(change.withdrawn_now):
            if "send_identified" in ALLOWS[purpose]:
                self.conn.execute("DELETE FROM identity_vault WHERE pseudonym = ?", (person,))
                self.outbox.forget_identified(person)
            if "personalise" in ALLOWS[purpose]:
                self.conn.execute("DELETE FROM profile_purchases WHERE pseudonym = ?", (person,))
                self.conn.execute("DELETE FROM profiles WHERE pseudonym = ?", (person,))
            notice = {
                "type": "consent_withdrawn",
                "subject_hash": subject_hash(person),
                "purpose": purpose,
                "timestamp_ms": change.after[purpose].stamp.ts_ms,
            }
            self.outbox.queue_notice("consent_withdrawn", person, notice, now_ms)
        if change.withdrawn_now and not any_granted(change.after):
            # Anonymous again: no visit of theirs stays linked to them.
            self.conn.execute("DELETE FROM visit_links WHERE pseudonym = ?", (person,))

    def _grant(self, person: Pseudonym, change: Change, now_ms: int) -> None:
        if not change.granted_now:
            return
        # What the person's already linked visits and identified events now may be used for.
        for event in self.events.of_person(person):
            self._use(event, person, change.after, now_ms)

    def _remember(self, identity: Identity, consent: Consent, now_ms: int) -> None:
        person = identity.pseudonym
        if allows(consent, "send_identified") and identity.user_id is not None:
            self.conn.execute(
                "INSERT INTO identity_vault (pseudonym, user_id, traits, updated_ms) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (pseudonym) DO UPDATE SET "
                "user_id = excluded.user_id, updated_ms = excluded.updated_ms, traits = CASE "
                "WHEN excluded.traits = '{}' THEN identity_vault.traits ELSE excluded.traits END",
                (person, identity.user_id, orjson.dumps(identity.traits).decode(), now_ms),
            )
        if allows(consent, "personalise"):
            first = identity.traits.get("first_name")
            self.conn.execute(
                "INSERT INTO profiles (pseudonym, first_name, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (pseudonym) DO UPDATE SET "
                "first_name = coalesce(excluded.first_name, profiles.first_name), "
                "updated_ms = excluded.updated_ms",
                (person, first if isinstance(first, str) else None, now_ms, now_ms),
            )

    def _link(self, visit: str, person: Pseudonym, consent: Consent, now_ms: int) -> None:
        self.conn.execute(
            "INSERT INTO visit_links (anonymous_id, pseudonym, linked_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (anonymous_id) DO UPDATE SET pseudonym = excluded.pseudonym, "
            "linked_ms = excluded.linked_ms",
            (visit, person, now_ms),
        )
        # The visit's earlier events (before the check-in) now belong to the person too.
        for event in self.events.of_visit(visit):
            self._use(event, person, consent, now_ms)

    def _use(self, event: Event, person: Pseudonym, consent: Consent, now_ms: int) -> None:
        if event.name == ORDER_EVENT and allows(consent, "personalise"):
            products = orjson.loads(event.body)["properties"]["products"]
            self.conn.execute(
                "INSERT OR IGNORE INTO profile_purchases (pseudonym, message_id, ts_ms, products) "
                "VALUES (?, ?, ?, ?)",
                (person, event.message_id, event.timestamp_ms, orjson.dumps(products).decode()),
            )
        if allows(consent, "send_identified") and event.name not in (CONSENT_EVENT, ERASURE_EVENT):
            self.outbox.queue_identified(person, event.message_id, _segment(event, person), now_ms)

    # --- erasure and access ------------------------------------------------------------------

    def erased(self, request: str) -> bool:
        """Whether the erasure request ``request`` was carried out already (inside the
        caller's error mapping)."""
        return (
            self.conn.execute(
                "SELECT 1 FROM erasure_receipts WHERE request = ?", (request,)
            ).fetchone()
            is not None
        )

    def person_rows(self, person: Pseudonym) -> dict[str, list[dict[str, object]]]:
        """Every row held about a person, table by table (subject access, and erasure's digest)."""
        held: dict[str, list[dict[str, object]]] = {}
        for table, where in _PERSON_ROWS:
            cursor = self.conn.execute(f"SELECT * FROM {table} WHERE {where}", {"p": person})
            names = [c[0] for c in cursor.description]
            held[table] = [dict(zip(names, row, strict=True)) for row in cursor]
        return held

    def erase(
        self,
        person: Pseudonym,
        raw_user_id: str | None,
        request: str,
        source: str,
        requested_ms: int,
        now_ms: int,
    ) -> Receipt:
        """Delete every row of the person, queue an erasure notice, and write a receipt.

        Dead letters holding the raw id or the pseudonym are deleted too.
        """
        held = self.person_rows(person)
        digest = hashlib.sha256(
            orjson.dumps(held, option=orjson.OPT_SORT_KEYS, default=str)
        ).hexdigest()
        removed = {table: len(rows) for table, rows in held.items()}
        # The tickets and badges they held: dead letters may name those instead of them.
        holders = sorted(
            {
                str(row["holder"])
                for row in held["events"]
                if row["holder"] and row["holder"] != person
            }
        )
        # Events by the ids just read: SQLite may delete the rows matching one side of their
        # OR before it reads the other, which looks at the person's own scans. Events first:
        # their WHERE needs the visit links that are deleted after them.
        self.events.delete_ids([int(str(row["id"])) for row in held["events"]])
        for table, where in _PERSON_ROWS[1:]:
            self.conn.execute(f"DELETE FROM {table} WHERE {where}", {"p": person})
        removed["dead_letters"] = self.dead_letters.erase_naming(person, raw_user_id) + sum(
            self.dead_letters.erase_naming(Pseudonym(h), None) for h in holders
        )
        subject = subject_hash(person)
        notice = {"type": "erasure", "subject_hash": subject, "timestamp_ms": requested_ms}
        self.outbox.queue_notice("erasure", None, notice, now_ms)
        cursor = self.conn.execute(
            "INSERT INTO erasure_receipts (subject_hash, request, source, requested_ms, "
            "completed_ms, removed, digest) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                subject,
                request,
                source,
                requested_ms,
                now_ms,
                orjson.dumps(removed).decode(),
                digest,
            ),
        )
        return Receipt(
            int(cursor.lastrowid or 0),
            subject,
            request,
            source,
            requested_ms,
            now_ms,
            removed,
            digest,
        )


def _items(products: str) -> tuple[str, ...]:
    """The item ids of a stored basket."""
    return tuple(str(line.get("product_id")) for line in orjson.loads(products))


def _segment(event: Event, person: Pseudonym) -> dict[str, object]:
    """The Segment-compatible item central receives: no anonymousId, no device, no traits."""
    document = orjson.loads(event.body)
    item: dict[str, object] = {
        "type": event.type,
        "messageId": event.message_id,
        "timestamp": document["timestamp"],
        "userId": person,
    }
    if event.type == "track":
        item["event"] = event.name
        # A ticket's or badge's holder is never synced, hashed or not (docs/privacy.md).
        properties = document.get("properties", {})
        item["properties"] = {k: v for k, v in properties.items() if k not in HOLDER_KEYS}
    return item
