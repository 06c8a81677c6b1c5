"""The SQLite store (WAL, through sqlite-utils): events, dead letters, agent state.

The personal-data tables are written by `edge_agent.store.people` inside this store's
transactions.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlite_utils import Database

from edge_agent.core.aggregate import (
    DEAD_LETTER_KIND,
    DUPLICATES_KIND,
    Fact,
    hour_of,
    hours_affected,
)
from edge_agent.core.deadletters import DeadLetter
from edge_agent.core.events import Event
from edge_agent.core.identity import Identity, Pseudonym
from edge_agent.core.noise import Refusal, charge
from edge_agent.core.retention import Cutoffs
from edge_agent.errors import StorageError
from edge_agent.store.migrations import FIRST_STEP, migrations, unknown_steps
from edge_agent.store.outbox import Outbox
from edge_agent.store.people import ERASURE_EVENT, PersonalData, Receipt, Stored

#: The tables that hold a site's data (`row_counts`), not its bookkeeping.
MAIN_TABLES = (
    "events",
    "dead_letters",
    "consent",
    "profiles",
    "outbox",
    "insight_cells",
    "models",
    "screens",
)
_FACT_EVENTS = frozenset(
    {"Door Counted", "Zone Entered", "Zone Exited", "Order Completed", "Feedback Submitted"}
)
_ZONE_EVENTS = frozenset({"Zone Entered", "Zone Exited"})
_INSERT_EVENT = """
INSERT OR IGNORE INTO events (message_id, type, event, ts_ms, received_ms, stored_ms,
    device_id, anonymous_id, pseudonym, schema_version, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
# A redelivered rejection bumps its counter instead of adding a row, and a dead letter that
# was replayed but fails again is reopened with its new reason.
_UPSERT_DEAD_LETTER = """
INSERT INTO dead_letters (fingerprint, reason, detail, topic, received_ms, last_seen_ms,
    raw, raw_size, raw_sha256)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (fingerprint) DO UPDATE SET
    occurrences = occurrences + 1,
    last_seen_ms = excluded.last_seen_ms,
    reason = excluded.reason,
    detail = excluded.detail,
    status = 'open'
"""


@dataclass(frozen=True, slots=True)
class Received:
    """A pseudonymised event, when it was received, and who it named (None: anonymous)."""

    event: Event
    received_ms: int
    identity: Identity | None = None


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


@dataclass(frozen=True, slots=True)
class DeadLetterRow:
    """A dead letter as stored."""

    id: int
    reason: str
    detail: str
    topic: str
    received_ms: int
    last_seen_ms: int
    occurrences: int
    raw: bytes
    raw_size: int
    raw_sha256: str
    status: str


@dataclass(frozen=True, slots=True)
class Status:
    """The counters ``edge-agent status`` shows."""

    stored: int
    duplicates: int
    dead_letters_by_reason: dict[str, int]
    last_event_ms: int | None
    last_stored_ms: int | None
    broker: dict[str, tuple[str, int]]
    outbox: dict[str, int]
    outbox_losses: dict[str, dict[str, int]]


class Store:
    """The agent's SQLite database. One writer (the agent), any number of readers.

    Raises StorageError from every method when SQLite fails (disk full, file not writable,
    database locked past the timeout), with the file named.
    """

    def __init__(self, path: Path, db: Database) -> None:
        self.path = path
        self.db = db

    @classmethod
    def open(cls, path: Path, synchronous: str = "FULL", readonly: bool = False) -> Store:
        """Open (creating when needed) the database in WAL mode and bring its schema up to date.

        Raises:
            StorageError: the folder or file cannot be created or opened, a migration fails, or
                the database was written by a newer edge-agent (it has schema steps this code
                does not know).
        """
        try:
            if readonly:
                if not path.exists():
                    raise StorageError(
                        f"no database at {path}: has the agent run with this config?"
                    )
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 10000")
            # Deleted rows (erasure, retention) are overwritten, not left in free pages.
            conn.execute("PRAGMA secure_delete = ON")
            db = Database(conn)
            newer = unknown_steps(db)
            if newer:
                conn.close()
                raise StorageError(
                    f"database {path} was written by a newer edge-agent (schema step "
                    f"{newer[0]} unknown here): upgrade edge-agent or restore a backup"
                )
            if not readonly:
                db.enable_wal()
                conn.execute(f"PRAGMA synchronous = {synchronous}")
                migrations.apply(db)
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"database {path} cannot be opened: {exc}") from exc
        return cls(path, db)

    def close(self) -> None:
        """Close the connection (WAL content stays durable; readers checkpoint later)."""
        self.db.conn.close()

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
        conn = self.db.conn
        stored = duplicates = erased = 0
        by_event: Counter[str] = Counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Dead letters first, so an erasure in this batch reaches them too.
                conn.executemany(
                    _UPSERT_DEAD_LETTER,
                    [
                        (
                            d.fingerprint,
                            d.reason.value,
                            d.detail,
                            d.topic,
                            d.received_ms,
                            stored_ms,
                            d.raw,
                            d.raw_size,
                            d.raw_sha256,
                        )
                        for d in dead_letters
                    ],
                )
                quality: Counter[tuple[int, str]] = Counter(
                    (hour_of(d.received_ms), f"{DEAD_LETTER_KIND}{d.reason.value}")
                    for d in dead_letters
                )
                personal = PersonalData(conn)
                # An erasure applies to what came before it, not to the person's later events:
                # the batch is stored and applied in segments that end at each erasure request.
                for segment, erasure in _segments(received):
                    fresh = self._insert(segment, schema_version, stored_ms)
                    self._mark_dirty(
                        {
                            h
                            for s in fresh
                            for h in hours_affected(s.event.timestamp_ms, s.event.name)
                        },
                        stored_ms,
                    )
                    stored += len(fresh)
                    by_event.update(s.event.name or s.event.type for s in fresh)
                    duplicates += len(segment) - len(fresh)
                    if len(fresh) < len(segment):
                        new = {s.event.message_id for s in fresh}
                        quality.update(
                            (hour_of(r.event.timestamp_ms), DUPLICATES_KIND)
                            for r in segment
                            if r.event.message_id not in new
                        )
                    personal.apply(fresh, stored_ms)
                    if erasure is not None:
                        erased += self._erase_once(personal, erasure, stored_ms)
                if duplicates:
                    self._add_counter("duplicates", duplicates)
                self._count_quality(quality, stored_ms)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            if erased:
                self._scrub()
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} could not commit a batch: {exc}") from exc
        return CommitResult(
            stored=stored,
            duplicates=duplicates,
            dead_letters=len(dead_letters),
            by_event=dict(by_event),
        )

    def _insert(
        self, received: Sequence[Received], schema_version: str, stored_ms: int
    ) -> list[Stored]:
        """Insert events, once per messageId; returns those that were new, with their row ids."""
        conn = self.db.conn
        newest = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
        conn.executemany(
            _INSERT_EVENT,
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

    def _mark_dirty(self, hours: set[int], now_ms: int) -> None:
        # The insights job recomputes these hours once they are closed (late events too).
        self.db.conn.executemany(
            "INSERT INTO dirty_hours (start_ms, marked_ms) VALUES (?, ?) "
            "ON CONFLICT (start_ms) DO UPDATE SET marked_ms = excluded.marked_ms",
            [(hour, now_ms) for hour in hours],
        )

    def _count_quality(self, counts: Counter[tuple[int, str]], now_ms: int) -> None:
        self.db.conn.executemany(
            "INSERT INTO quality_hours (start_ms, kind, count) VALUES (?, ?, ?) "
            "ON CONFLICT (start_ms, kind) DO UPDATE SET count = count + excluded.count",
            [(hour, kind, n) for (hour, kind), n in counts.items()],
        )
        self._mark_dirty({hour for hour, _ in counts}, now_ms)

    def quality(self, start_ms: int) -> dict[str, int]:
        """An hour's data-quality counts: ``duplicates`` and ``dead_letter/<reason>``.

        Raises:
            StorageError: the database cannot be read.
        """
        try:
            return dict(
                self.db.conn.execute(
                    "SELECT kind, count FROM quality_hours WHERE start_ms = ?", (start_ms,)
                ).fetchall()
            )
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc

    def dirty_hours(self, before_ms: int) -> list[tuple[int, int]]:
        """Hours with new events since their cell was computed: (start, when marked).

        Raises:
            StorageError: the database cannot be read.
        """
        try:
            return list(
                self.db.execute(
                    "SELECT start_ms, marked_ms FROM dirty_hours WHERE start_ms < ? "
                    "ORDER BY start_ms",
                    [before_ms],
                )
            )
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc

    def facts(self, start_ms: int, end_ms: int, zones_only: bool = False) -> list[Fact]:
        """The events of a period as aggregation sees them.

        The visitor key is the person (pseudonym) only for a visit linked to someone who
        granted ``analytics``; otherwise the visit. It stays in memory: cells keep hashes.

        Raises:
            StorageError: the database cannot be read.
        """
        names = _ZONE_EVENTS if zones_only else _FACT_EVENTS
        try:
            rows = self.db.conn.execute(
                "SELECT e.ts_ms, e.event, e.anonymous_id, coalesce(e.pseudonym, v.pseudonym), "
                "c.granted, e.body FROM events e "
                "LEFT JOIN visit_links v ON v.anonymous_id = e.anonymous_id "
                "LEFT JOIN consent c ON c.pseudonym = coalesce(e.pseudonym, v.pseudonym) "
                "AND c.purpose = 'analytics' "
                "WHERE e.ts_ms >= ? AND e.ts_ms < ?"
                + (" AND e.event IN ('Zone Entered', 'Zone Exited')" if zones_only else ""),
                (start_ms, end_ms),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc
        facts = []
        for ts, name, visit, person, analytics, body in rows:
            properties = orjson.loads(body).get("properties", {}) if name in names else {}
            visitor = person if (person and analytics) else visit
            facts.append(Fact(ts, name, visit, visitor, person is not None, properties))
        return facts

    def save_cell(
        self,
        cell_document: dict[str, object],
        events: int,
        marked_ms: int,
        now_ms: int,
        outgoing: dict[str, object] | None = None,
    ) -> None:
        """Store an hour's cell and clear its dirty mark unless a newer event marked it again;
        with ``outgoing``, queue that form of it for central (replacing an unsent older one).

        Raises:
            StorageError: SQLite could not write it.
        """
        start = cell_document["start_ms"]
        try:
            with self.db.atomic():
                self.db.conn.execute(
                    "INSERT INTO insight_cells (start_ms, computed_ms, events, cell) "
                    "VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (start_ms) DO UPDATE SET computed_ms = excluded.computed_ms, "
                    "events = excluded.events, cell = excluded.cell",
                    (start, now_ms, events, orjson.dumps(cell_document).decode()),
                )
                self.db.conn.execute(
                    "DELETE FROM dirty_hours WHERE start_ms = ? AND marked_ms = ?",
                    (start, marked_ms),
                )
                if outgoing is not None:
                    self.db.conn.execute(
                        "INSERT INTO outbox (kind, subject, message_id, payload, created_ms) "
                        "VALUES ('insight', NULL, ?, ?, ?) "
                        "ON CONFLICT (kind, message_id) WHERE message_id IS NOT NULL "
                        "DO UPDATE SET payload = excluded.payload, "
                        "created_ms = excluded.created_ms",
                        (f"insight:{start}", orjson.dumps(outgoing).decode(), now_ms),
                    )
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} could not store a cell: {exc}") from exc

    def cells(self, start_ms: int, end_ms: int) -> list[dict[str, object]]:
        """Stored hour cells in a period, oldest first.

        Raises:
            StorageError: the database cannot be read.
        """
        try:
            rows = self.db.conn.execute(
                "SELECT cell FROM insight_cells WHERE start_ms >= ? AND start_ms < ? "
                "ORDER BY start_ms",
                (start_ms, end_ms),
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc
        return [orjson.loads(row[0]) for row in rows]

    def _erase_once(self, personal: PersonalData, request: Received, now_ms: int) -> int:
        identity = request.identity
        assert identity is not None  # the schema requires a userId on erasure requests
        done = self.db.conn.execute(
            "SELECT 1 FROM erasure_receipts WHERE request = ?", (request.event.message_id,)
        ).fetchone()
        if done is not None:  # a redelivered request was carried out already
            return 0
        personal.erase(
            identity.pseudonym,
            identity.user_id,
            request.event.message_id,
            f"event from {request.event.device_id}",
            request.event.timestamp_ms,
            now_ms,
        )
        return 1

    def _scrub(self) -> None:
        # With secure_delete on, freed pages were zeroed; checkpointing moves that into the
        # main file and truncating the WAL leaves no old copy of an erased row on disk.
        self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def erase(self, person: Identity, request: str, now_ms: int) -> Receipt:
        """Erase a person at an operator's request (``edge-agent forget``).

        Raises:
            StorageError: SQLite could not carry it out; nothing was erased.
        """
        conn = self.db.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                receipt = PersonalData(conn).erase(
                    person.pseudonym, person.user_id, request, "operator", now_ms, now_ms
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            self._scrub()
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} could not erase: {exc}") from exc
        return receipt

    def person(self, person: Pseudonym) -> dict[str, list[dict[str, object]]]:
        """Everything held about a person, table by table (subject access).

        Raises:
            StorageError: the database cannot be read.
        """
        try:
            return PersonalData(self.db.conn).person_rows(person)
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc

    def _add_counter(self, name: str, amount: int) -> None:
        self.db.conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, amount),
        )

    def set_state(self, key: str, value: str, now_ms: int) -> None:
        """Record a piece of agent state (e.g. the broker connection) for ``status``.

        Raises:
            StorageError: SQLite could not write it.
        """
        try:
            self.db.conn.execute(
                "INSERT INTO agent_state (key, value, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET "
                "value = excluded.value, updated_ms = excluded.updated_ms",
                (key, value, now_ms),
            )
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} could not record state: {exc}") from exc

    def status(self) -> Status:
        """Counters for ``edge-agent status``.

        Raises:
            StorageError: the database cannot be read.
        """
        outbox = Outbox(self.db, self.path)
        try:
            q = self.db.execute
            stored = q("SELECT count(*) FROM events").fetchone()[0]
            row = q("SELECT value FROM counters WHERE name = 'duplicates'").fetchone()
            by_reason = dict(
                q(
                    "SELECT reason, sum(occurrences) FROM dead_letters WHERE status = 'open' "
                    "GROUP BY reason ORDER BY reason"
                ).fetchall()
            )
            last_event, last_stored = q("SELECT max(ts_ms), max(stored_ms) FROM events").fetchone()
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc
        return Status(
            stored=stored,
            duplicates=row[0] if row else 0,
            dead_letters_by_reason=by_reason,
            last_event_ms=last_event,
            last_stored_ms=last_stored,
            broker=self.state(),
            outbox=outbox.depth(),
            outbox_losses=outbox.losses(),
        )

    def read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query, for the adapters that read the store.

        Raises:
            StorageError: the database cannot be read.
        """
        try:
            return list(self.db.conn.execute(sql, tuple(params)).fetchall())
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc

    def copy_to(self, target: Path) -> None:
        """Copy the whole database into ``target`` (a new or empty file) with SQLite's online
        backup, in one step: one read transaction, so the copy is the database as of one
        commit while the agent goes on committing (in WAL mode readers do not block it). The
        copy is left in rollback-journal mode: one self-contained file, no ``-wal`` beside it.

        Raises:
            StorageError: the database cannot be read or ``target`` cannot be written.
        """
        try:
            copy = sqlite3.connect(target, isolation_level=None)
            try:
                self.db.conn.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")
            finally:
                copy.close()
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be copied to {target}: {exc}") from exc

    def problems(self) -> list[str]:
        """What ``PRAGMA integrity_check`` finds (empty: the file is sound), and whether this
        is an edge-agent database at all (its first schema step is recorded).

        Raises:
            StorageError: the file cannot be read as an SQLite database.
        """
        try:
            found = [str(row[0]) for row in self.db.conn.execute("PRAGMA integrity_check")]
            ours = {m.name for m in migrations.applied(self.db)} >= {FIRST_STEP}
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc
        problems = [] if found == ["ok"] else found
        if not ours:
            problems.append("not an edge-agent database (no edge-agent schema steps recorded)")
        return problems

    def row_counts(self) -> dict[str, int]:
        """Rows of each of the site's main tables that this database has.

        Raises:
            StorageError: the database cannot be read.
        """
        try:
            return {
                table: int(self.db.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in MAIN_TABLES
                if self.db[table].exists()
            }
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc

    def state(self) -> dict[str, tuple[str, int]]:
        """The agent's state entries: key -> (value, when it was set).

        Raises:
            StorageError: the database cannot be read.
        """
        try:
            rows = self.db.execute("SELECT key, value, updated_ms FROM agent_state").fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc
        return {k: (v, t) for k, v, t in rows}

    def dead_letters(
        self,
        reason: str | None = None,
        status: str | None = "open",
        ids: Iterable[int] | None = None,
        limit: int | None = None,
    ) -> list[DeadLetterRow]:
        """Dead letters, newest first, filtered by reason, status and/or ids.

        Raises:
            StorageError: the database cannot be read.
        """
        where: list[str] = []
        params: list[object] = []
        if reason is not None:
            where.append("reason = ?")
            params.append(reason)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if ids is not None:
            wanted = list(ids)
            where.append(f"id IN ({', '.join('?' * len(wanted))})" if wanted else "0")
            params.extend(wanted)
        # Only fixed clauses and placeholders are joined here; every value is a parameter.
        sql = (
            "SELECT id, reason, detail, topic, received_ms, last_seen_ms, occurrences, raw, "
            "raw_size, raw_sha256, status FROM dead_letters"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY id DESC"
            + (" LIMIT ?" if limit is not None else "")
        )
        if limit is not None:
            params.append(limit)
        try:
            rows = self.db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} cannot be read: {exc}") from exc
        return [DeadLetterRow(*row) for row in rows]

    def mark_replayed(self, ids: Sequence[int], now_ms: int) -> None:
        """Close dead letters whose replay stored their events.

        Raises:
            StorageError: SQLite could not write it.
        """
        try:
            self.db.conn.executemany(
                "UPDATE dead_letters SET status = 'replayed', replayed_ms = ? WHERE id = ?",
                [(now_ms, i) for i in ids],
            )
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} could not mark replays: {exc}") from exc

    def update_dead_letter(self, letter_id: int, reason: str, detail: str) -> None:
        """Give an open dead letter the reason it fails with now (after a replay).

        Raises:
            StorageError: SQLite could not write it.
        """
        try:
            self.db.conn.execute(
                "UPDATE dead_letters SET reason = ?, detail = ? WHERE id = ?",
                (reason, detail, letter_id),
            )
        except sqlite3.Error as exc:
            raise StorageError(
                f"database {self.path} could not update a dead letter: {exc}"
            ) from exc

    def expire(self, cutoffs: Cutoffs, chunk: int = 5000) -> dict[str, int]:
        """Delete raw events, dead letters and queued identified items past their time to live,
        in small transactions so that ingest is never held up for long; expired queued items
        are counted in the outbox's loss ledger.

        Raises:
            StorageError: SQLite could not delete.
        """
        removed = {"events": 0, "dead_letters": 0}
        plans = (
            ("events", "SELECT id FROM events WHERE ts_ms < ? LIMIT ?", cutoffs.events_before_ms),
            (
                "dead_letters",
                "SELECT id FROM dead_letters WHERE last_seen_ms < ? LIMIT ?",
                cutoffs.dead_letters_before_ms,
            ),
        )
        try:
            for table, select, before in plans:
                while True:
                    with self.db.atomic():
                        gone = self.db.conn.execute(
                            f"DELETE FROM {table} WHERE id IN ({select})", (before, chunk)
                        ).rowcount
                    removed[table] += gone
                    if gone < chunk:
                        break
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} could not expire old rows: {exc}") from exc
        # Identified data waiting for central is personal data: it lives no longer than events.
        removed["outbox_identified"] = Outbox(self.db, self.path).expire(
            "identified", cutoffs.events_before_ms
        )
        return removed

    def _epsilon_spent(self, day: str) -> float:
        return float(
            self.db.conn.execute(
                "SELECT coalesce(sum(epsilon), 0) FROM dp_ledger WHERE day = ?", (day,)
            ).fetchone()[0]
        )

    def epsilon_spent(self, day: str) -> float:
        """The epsilon the day's releases have spent so far.

        Raises:
            StorageError: the database cannot be read.
        """
        try:
            return self._epsilon_spent(day)
        except sqlite3.Error as exc:
            raise StorageError(
                f"database {self.path} could not read the epsilon ledger: {exc}"
            ) from exc

    def spend_epsilon(
        self, day: str, cost: float, per_day: float, what: str, now_ms: int
    ) -> float | Refusal:
        """Record a release's epsilon against the day's budget, atomically with the check.

        Returns the day's total spent after it, or the refusal (nothing recorded).

        Raises:
            StorageError: SQLite could not read or write the ledger.
        """
        try:
            with self.db.atomic():
                after = charge(self._epsilon_spent(day), cost, per_day, day)
                if not isinstance(after, Refusal):
                    self.db.conn.execute(
                        "INSERT INTO dp_ledger (day, epsilon, what, released_ms) "
                        "VALUES (?, ?, ?, ?)",
                        (day, cost, what, now_ms),
                    )
        except sqlite3.Error as exc:
            raise StorageError(
                f"database {self.path} could not use the epsilon ledger: {exc}"
            ) from exc
        return after
