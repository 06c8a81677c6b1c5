"""The dead letters table: rejected messages kept with their reason, until replayed or
expired."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import orjson

from edge_agent.core.deadletters import Budget, DeadLetter, keeps, letter_cost, source_of
from edge_agent.core.identity import Pseudonym
from edge_agent.store.connection import Connection


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


# A redelivered rejection bumps its counter instead of adding a row, and a dead letter that
# was replayed but fails again is reopened with its new reason.
_UPSERT = """
INSERT INTO dead_letters (fingerprint, reason, detail, topic, received_ms, last_seen_ms,
    raw, raw_size, raw_sha256, source, kept, indexed)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)
ON CONFLICT (fingerprint) DO UPDATE SET
    occurrences = occurrences + 1,
    last_seen_ms = excluded.last_seen_ms,
    reason = excluded.reason,
    detail = excluded.detail,
    status = 'open'
"""

_COUNT_UNKEPT = """
INSERT INTO dead_letters_unkept (source, reason, occurrences, bytes, first_ms, last_ms,
    last_sha256)
VALUES (?, ?, 1, ?, ?, ?, ?)
ON CONFLICT (source, reason) DO UPDATE SET
    occurrences = occurrences + 1,
    bytes = bytes + excluded.bytes,
    last_ms = excluded.last_ms,
    last_sha256 = excluded.last_sha256
"""


@dataclass(frozen=True, slots=True)
class Unkept:
    """Dead letters over the budget of one source and reason: counted, not kept."""

    source: str
    reason: str
    occurrences: int
    bytes: int
    first_ms: int
    last_ms: int
    last_sha256: str


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
    #: The device the topic names (`source_of`), whose budget it counts against.
    source: str
    #: "first" (within the device's first ones for the reason) or "sample" (one in many after).
    kept: str


class DeadLetters:
    """The ``dead_letters`` table."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def add(self, letters: Sequence[DeadLetter], stored_ms: int, budget: Budget) -> int:
        """Keep rejections within ``budget`` and count the rest (inside the caller's
        transaction and error mapping); returns how many were counted only.

        A letter already kept (same fingerprint: a redelivery) only counts again.
        """
        conn = self.connection.conn
        used = int(conn.execute("SELECT bytes FROM dead_letter_usage").fetchone()[0])
        counts: dict[tuple[str, str], list[int]] = {}
        unkept = 0
        for d in letters:
            source = source_of(d.topic)
            if conn.execute(
                "SELECT 1 FROM dead_letters WHERE fingerprint = ?", (d.fingerprint,)
            ).fetchone():
                kept: str | None = "again"
            else:
                group = (source, d.reason.value)
                if group not in counts:
                    counts[group] = self._counts(*group)
                seen = counts[group]
                cost = letter_cost(d)
                kept = keeps(budget, seen[0], seen[1], used, cost)
                if kept is None:
                    seen[1] += 1
                    unkept += 1
                    conn.execute(
                        _COUNT_UNKEPT,
                        (source, d.reason.value, d.raw_size, stored_ms, stored_ms, d.raw_sha256),
                    )
                    continue
                seen[0] += 1
                used += cost
            conn.execute(
                _UPSERT,
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
                    source,
                    "first" if kept == "again" else kept,
                ),
            )
            if d.people and kept != "again":
                (letter_id,) = conn.execute(
                    "SELECT id FROM dead_letters WHERE fingerprint = ?", (d.fingerprint,)
                ).fetchone()
                conn.executemany(
                    "INSERT OR IGNORE INTO dead_letter_people (pseudonym, letter_id) VALUES (?, ?)",
                    [(person, letter_id) for person in d.people],
                )
        return unkept

    def _counts(self, source: str, reason: str) -> list[int]:
        kept = self.connection.conn.execute(
            "SELECT count(*) FROM dead_letters WHERE source = ? AND reason = ? AND status = 'open'",
            (source, reason),
        ).fetchone()[0]
        row = self.connection.conn.execute(
            "SELECT occurrences FROM dead_letters_unkept WHERE source = ? AND reason = ?",
            (source, reason),
        ).fetchone()
        return [int(kept), int(row[0]) if row else 0]

    def unkept(self) -> list[Unkept]:
        """What the budget counted without keeping, by source and reason.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute(
                "SELECT source, reason, occurrences, bytes, first_ms, last_ms, last_sha256 "
                "FROM dead_letters_unkept ORDER BY occurrences DESC, source, reason"
            ).fetchall()
        return [Unkept(*row) for row in rows]

    def used_bytes(self) -> int:
        """What the kept dead letters take against the budget's bytes.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            return int(conn.execute("SELECT bytes FROM dead_letter_usage").fetchone()[0])

    def find(
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
            "raw_size, raw_sha256, status, source, kept FROM dead_letters"
            + (f" WHERE {' AND '.join(where)}" if where else "")
            + " ORDER BY id DESC"
            + (" LIMIT ?" if limit is not None else "")
        )
        if limit is not None:
            params.append(limit)
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute(sql, params).fetchall()
        return [DeadLetterRow(*row) for row in rows]

    def open_by_reason(self) -> dict[str, int]:
        """Occurrences of the open dead letters, by reason, those counted over the budget
        included.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            return dict(
                conn.execute(
                    "SELECT reason, sum(n) FROM ("
                    " SELECT reason, occurrences AS n FROM dead_letters WHERE status = 'open'"
                    " UNION ALL SELECT reason, occurrences FROM dead_letters_unkept"
                    ") GROUP BY reason ORDER BY reason"
                ).fetchall()
            )

    def seen_since(self, since_ms: int) -> int:
        """Dead letters last seen at or after ``since_ms`` (a redelivered one counts once),
        and the rejections over the budget counted since then by source and reason (once
        each: only the last of those is timed).

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            kept, unkept = conn.execute(
                "SELECT (SELECT count(*) FROM dead_letters WHERE last_seen_ms >= ?), "
                "(SELECT count(*) FROM dead_letters_unkept WHERE last_ms >= ?)",
                (since_ms, since_ms),
            ).fetchone()
        return int(kept) + int(unkept)

    def mark_replayed(self, ids: Sequence[int], now_ms: int) -> None:
        """Close dead letters whose replay stored their events.

        Raises:
            StorageError: SQLite could not write it.
        """
        with self.connection.failing("could not mark replays") as conn:
            conn.executemany(
                "UPDATE dead_letters SET status = 'replayed', replayed_ms = ? WHERE id = ?",
                [(now_ms, i) for i in ids],
            )

    def update(self, letter_id: int, reason: str, detail: str) -> None:
        """Give an open dead letter the reason it fails with now (after a replay).

        Raises:
            StorageError: SQLite could not write it.
        """
        with self.connection.failing("could not update a dead letter") as conn:
            conn.execute(
                "UPDATE dead_letters SET reason = ?, detail = ? WHERE id = ?",
                (reason, detail, letter_id),
            )

    def erase_naming(self, person: Pseudonym, raw_user_id: str | None) -> int:
        """Delete the dead letters that name ``person`` (inside the caller's transaction);
        returns how many.

        Each letter's people were found when it was written (`named_people`), so this is an
        index lookup, whatever the number of letters: no message of erasures can make ingest
        read every letter's bytes once per erasure. Only letters from before that index are
        read: a JSON one names its people by the pseudonyms its redaction wrote; bytes that are
        not JSON name the person only where they hold ``"userId": "<the raw id>"``, the id a
        whole JSON string, never where its characters merely occur.
        """
        conn = self.connection.conn
        doomed = [
            letter_id
            for (letter_id,) in conn.execute(
                "SELECT letter_id FROM dead_letter_people WHERE pseudonym = ?", (person,)
            )
        ]
        marked = person.encode()
        quoted = orjson.dumps(raw_user_id) if raw_user_id else marked
        named = re.compile(rb'"userId"\s*:\s*' + re.escape(quoted))
        doomed += [
            letter_id
            for letter_id, raw in conn.execute(
                "SELECT id, raw FROM dead_letters WHERE indexed = 0 "
                "AND (instr(raw, ?) > 0 OR instr(raw, ?) > 0)",
                (marked, quoted),
            )
            if marked in raw or (raw_user_id and named.search(raw) and not _is_json(raw))
        ]
        self.connection.in_chunks("DELETE FROM dead_letters WHERE id IN ({marks})", doomed)
        return len(doomed)

    def index_people(self, people_of: Callable[[bytes], frozenset[str]], chunk: int = 500) -> int:
        """Record who the letters written before the people index name (``people_of``: a
        letter's bytes -> its pseudonyms), ``chunk`` letters per transaction; returns how
        many letters it indexed.

        Raises:
            StorageError: SQLite could not write it.
        """
        done = 0
        with self.connection.failing("could not index the dead letters") as conn:
            while True:
                with self.connection.transaction():
                    rows = conn.execute(
                        "SELECT id, raw FROM dead_letters WHERE indexed = 0 LIMIT ?", (chunk,)
                    ).fetchall()
                    conn.executemany(
                        "INSERT OR IGNORE INTO dead_letter_people (pseudonym, letter_id) "
                        "VALUES (?, ?)",
                        [
                            (person, letter_id)
                            for letter_id, raw in rows
                            for person in people_of(raw)
                        ],
                    )
                    conn.executemany(
                        "UPDATE dead_letters SET indexed = 1 WHERE id = ?", [(r[0],) for r in rows]
                    )
                done += len(rows)
                if len(rows) < chunk:
                    return done

    def expire(self, before_ms: int, chunk: int) -> int:
        """Delete dead letters last seen before ``before_ms``; returns how many (inside the
        caller's error mapping)."""
        return self.connection.delete_in_chunks(
            "dead_letters",
            "SELECT id FROM dead_letters WHERE last_seen_ms < ? LIMIT ?",
            before_ms,
            chunk,
        )
