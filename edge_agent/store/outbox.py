"""The outbox tables as the sender sees them: pending items, consent at send time, losses.

Every method runs in its own short transaction on the store's connection, so the ingest loop
(another connection) is never held up by a slow network.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
from sqlite_utils import Database

from edge_agent.core.sync import PRIORITY, Item
from edge_agent.errors import StorageError


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox item to send."""

    id: int
    kind: str
    subject: str | None
    payload: dict[str, object]
    created_ms: int
    size: int


@dataclass(frozen=True, slots=True)
class Holder:
    """What the site may tell central about a person with ``crm_sync`` now."""

    user_id: str
    traits: dict[str, object]


class Outbox:
    """Read and settle the outbox of one store."""

    def __init__(self, db: Database, path: object) -> None:
        self.db = db
        self.conn = db.conn
        self.path = path

    def _fail(self, exc: sqlite3.Error) -> StorageError:
        return StorageError(f"database {self.path}: the outbox cannot be used: {exc}")

    def sizes(self) -> list[Item]:
        """Every queued item's kind, size and age (for the quota)."""
        try:
            rows = self.conn.execute(
                "SELECT id, kind, length(payload), created_ms FROM outbox"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        return [Item(i, k, s, c) for i, k, s, c in rows]

    def pending(self, kinds: Sequence[str], limit: int) -> list[Row]:
        """Up to ``limit`` items of ``kinds``, the highest priority and oldest first."""
        order = " ".join(f"WHEN '{k}' THEN {PRIORITY[k]}" for k in kinds)
        marks = ", ".join("?" for _ in kinds)
        try:
            rows = self.conn.execute(
                "SELECT id, kind, subject, payload, created_ms FROM outbox "
                f"WHERE kind IN ({marks}) ORDER BY CASE kind {order} END, id LIMIT ?",
                (*kinds, limit),
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        return [Row(i, k, s, orjson.loads(p), c, len(p)) for i, k, s, p, c in rows]

    def holders(self, subjects: Iterable[str]) -> dict[str, Holder]:
        """The people among ``subjects`` whose ``crm_sync`` consent holds now, with the raw id
        and traits the vault keeps for exactly that long."""
        subjects = sorted(set(subjects))
        if not subjects:
            return {}
        marks = ", ".join("?" for _ in subjects)
        try:
            rows = self.conn.execute(
                "SELECT v.pseudonym, v.user_id, v.traits FROM identity_vault v "
                "JOIN consent c ON c.pseudonym = v.pseudonym AND c.purpose = 'crm_sync' "
                f"AND c.granted WHERE v.pseudonym IN ({marks})",
                subjects,
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        return {p: Holder(u, orjson.loads(t)) for p, u, t in rows}

    def settle(self, ids: Sequence[int], loss: tuple[str, str] | None = None) -> None:
        """Remove items: sent, or lost for ``loss`` = (class, reason), which is counted."""
        if not ids:
            return
        try:
            with self.db.atomic():
                self.conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
                if loss is not None:
                    self._count(loss, len(ids))
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def drop(self, items: Sequence[Item], reason: str) -> None:
        """Remove items the site gives up on, counting each by its class."""
        try:
            with self.db.atomic():
                for item in items:
                    self.conn.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
                    self._count((item.kind, reason), 1)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def expire(self, kind: str, before_ms: int) -> int:
        """Remove items of ``kind`` queued before ``before_ms``, counted as ``expired``."""
        try:
            with self.db.atomic():
                gone = self.conn.execute(
                    "DELETE FROM outbox WHERE kind = ? AND created_ms < ?", (kind, before_ms)
                ).rowcount
                if gone:
                    self._count((kind, "expired"), gone)
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        return gone

    def _count(self, loss: tuple[str, str], n: int) -> None:
        self.conn.execute(
            "INSERT INTO outbox_losses (class, reason, count) VALUES (?, ?, ?) "
            "ON CONFLICT (class, reason) DO UPDATE SET count = count + excluded.count",
            (*loss, n),
        )

    def losses(self) -> dict[str, dict[str, int]]:
        """Everything the outbox ever lost, by class and reason (cumulative)."""
        try:
            rows = self.conn.execute("SELECT class, reason, count FROM outbox_losses").fetchall()
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
        out: dict[str, dict[str, int]] = {}
        for kind, reason, count in rows:
            out.setdefault(kind, {})[reason] = count
        return out

    def dead_letter(
        self,
        destination: str,
        status: int,
        reason: str,
        ids: Sequence[int],
        body: bytes,
        now_ms: int,
        kind: str,
    ) -> None:
        """Keep a batch central refused (with its answer), and take its items out."""
        try:
            with self.db.atomic():
                self.conn.execute(
                    "INSERT INTO sync_dead_letters (destination, status, reason, items, body, "
                    "failed_ms) VALUES (?, ?, ?, ?, ?, ?)",
                    (destination, status, reason[:2000], len(ids), body, now_ms),
                )
                self.conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
                self._count((kind, "rejected"), len(ids))
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc

    def depth(self) -> dict[str, int]:
        """Queued items by kind."""
        try:
            return dict(self.conn.execute("SELECT kind, count(*) FROM outbox GROUP BY kind"))
        except sqlite3.Error as exc:
            raise self._fail(exc) from exc
