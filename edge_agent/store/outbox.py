"""The outbox tables: what is queued for central, consent at send time, losses.

The ``queue_*`` methods run inside the caller's transaction (the consent rules, the insights
job); every other method runs in its own short transaction on the store's connection, so the
ingest loop (another connection) is never held up by a slow network.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import orjson

from edge_agent.core.consent import purpose_for
from edge_agent.core.sync import PRIORITY, Item
from edge_agent.store.connection import Connection

_FAILING = "cannot use the outbox"


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox item to send."""

    id: int
    kind: str
    subject: str | None
    payload: dict[str, object]
    created_ms: int
    size: int
    #: An hour cell's place in the site's order of recomputations (None for other kinds).
    revision: int | None = None


@dataclass(frozen=True, slots=True)
class Holder:
    """What the site may tell central about a person whose consent allows it now."""

    user_id: str
    traits: dict[str, object]


class Outbox:
    """The ``outbox``, ``outbox_losses`` and ``sync_dead_letters`` tables."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def queue_notice(self, kind: str, subject: str | None, notice: object, now_ms: int) -> None:
        """Queue a notice for central (an erasure, a withdrawal), inside the caller's
        transaction."""
        self.connection.conn.execute(
            "INSERT INTO outbox (kind, subject, message_id, payload, created_ms) "
            "VALUES (?, ?, NULL, ?, ?)",
            (kind, subject, orjson.dumps(notice).decode(), now_ms),
        )

    def queue_identified(
        self, subject: str, message_id: str, item: dict[str, object], now_ms: int
    ) -> None:
        """Queue an identified item, once per messageId, inside the caller's transaction."""
        self.connection.conn.execute(
            "INSERT OR IGNORE INTO outbox (kind, subject, message_id, payload, created_ms) "
            "VALUES ('identified', ?, ?, ?, ?)",
            (subject, message_id, orjson.dumps(item).decode(), now_ms),
        )

    def forget_identified(self, subject: str) -> None:
        """Take a person's queued identified items out (consent withdrawn), inside the
        caller's transaction."""
        self.connection.conn.execute(
            "DELETE FROM outbox WHERE kind = 'identified' AND subject = ?", (subject,)
        )

    def replace_insight(self, message_id: str, cell: dict[str, object], now_ms: int) -> None:
        """Queue an hour's cell for central under the site's next revision, replacing an
        unsent older form of it, inside the caller's transaction.

        The revision grows by one, or jumps to the clock's ``now_ms`` when that is ahead: a
        clock set back never lowers it, and a database restored from a backup (or made anew
        for the site) climbs past the revisions it sent after that backup at once.
        """
        conn = self.connection.conn
        (revision,) = conn.execute(
            "UPDATE sync_revision SET revision = max(revision + 1, ?) RETURNING revision",
            (now_ms,),
        ).fetchone()
        conn.execute(
            "INSERT INTO outbox (kind, subject, message_id, payload, created_ms, revision) "
            "VALUES ('insight', NULL, ?, ?, ?, ?) "
            "ON CONFLICT (kind, message_id) WHERE message_id IS NOT NULL "
            "DO UPDATE SET payload = excluded.payload, "
            "created_ms = excluded.created_ms, revision = excluded.revision",
            (message_id, orjson.dumps(cell).decode(), now_ms, revision),
        )

    def sizes(self) -> list[Item]:
        """Every queued item's kind, size and age (for the quota)."""
        with self.connection.failing(_FAILING) as conn:
            rows = conn.execute(
                "SELECT id, kind, length(payload), created_ms FROM outbox"
            ).fetchall()
        return [Item(i, k, s, c) for i, k, s, c in rows]

    def pending(self, kinds: Sequence[str], limit: int, held: Collection[int] = ()) -> list[Row]:
        """Up to ``limit`` items of ``kinds``, the highest priority and oldest first, leaving
        out the ``held`` ids (items this run already tried)."""
        order = " ".join(f"WHEN '{k}' THEN {PRIORITY[k]}" for k in kinds)
        marks = ", ".join("?" for _ in kinds)
        skip = ", ".join("?" for _ in held)
        with self.connection.failing(_FAILING) as conn:
            rows = conn.execute(
                "SELECT id, kind, subject, payload, created_ms, revision FROM outbox "
                f"WHERE kind IN ({marks}) AND id NOT IN ({skip}) "
                f"ORDER BY CASE kind {order} END, id LIMIT ?",
                (*kinds, *held, limit),
            ).fetchall()
        return [Row(i, k, s, orjson.loads(p), c, len(p), r) for i, k, s, p, c, r in rows]

    def holders(self, subjects: Iterable[str]) -> dict[str, Holder]:
        """The people among ``subjects`` whose consent allows sending identified data now,
        with the raw id and traits the vault keeps for exactly that long."""
        subjects = sorted(set(subjects))
        if not subjects:
            return {}
        marks = ", ".join("?" for _ in subjects)
        with self.connection.failing(_FAILING) as conn:
            rows = conn.execute(
                "SELECT v.pseudonym, v.user_id, v.traits FROM identity_vault v "
                "JOIN consent c ON c.pseudonym = v.pseudonym AND c.purpose = ? "
                f"AND c.granted WHERE v.pseudonym IN ({marks})",
                (purpose_for("send_identified"), *subjects),
            ).fetchall()
        return {p: Holder(u, orjson.loads(t)) for p, u, t in rows}

    def settle(self, ids: Sequence[int], loss: tuple[str, str] | None = None) -> None:
        """Remove items: sent, or lost for ``loss`` = (class, reason), which is counted."""
        if not ids:
            return
        with self.connection.failing(_FAILING), self.connection.atomic() as conn:
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            if loss is not None:
                self._count(loss, len(ids))

    def drop(self, items: Sequence[Item], reason: str) -> None:
        """Remove items the site gives up on, counting each by its class."""
        with self.connection.failing(_FAILING), self.connection.atomic() as conn:
            for item in items:
                conn.execute("DELETE FROM outbox WHERE id = ?", (item.id,))
                self._count((item.kind, reason), 1)

    def expire(self, kind: str, before_ms: int) -> int:
        """Remove items of ``kind`` queued before ``before_ms``, counted as ``expired``."""
        with self.connection.failing(_FAILING), self.connection.atomic() as conn:
            gone: int = conn.execute(
                "DELETE FROM outbox WHERE kind = ? AND created_ms < ?", (kind, before_ms)
            ).rowcount
            if gone:
                self._count((kind, "expired"), gone)
        return gone

    def _count(self, loss: tuple[str, str], n: int) -> None:
        self.connection.conn.execute(
            "INSERT INTO outbox_losses (class, reason, count) VALUES (?, ?, ?) "
            "ON CONFLICT (class, reason) DO UPDATE SET count = count + excluded.count",
            (*loss, n),
        )

    def losses(self) -> dict[str, dict[str, int]]:
        """Everything the outbox ever lost, by class and reason (cumulative)."""
        with self.connection.failing(_FAILING) as conn:
            rows = conn.execute("SELECT class, reason, count FROM outbox_losses").fetchall()
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
        loss: str = "rejected",
    ) -> None:
        """Keep a batch central refused (with its answer), or an item the agent found it
        would refuse (``loss`` ``unsendable``, status 0), and take its items out."""
        with self.connection.failing(_FAILING), self.connection.atomic() as conn:
            conn.execute(
                "INSERT INTO sync_dead_letters (destination, status, reason, items, body, "
                "failed_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (destination, status, reason[:2000], len(ids), body, now_ms),
            )
            conn.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._count((kind, loss), len(ids))

    def depth(self) -> dict[str, int]:
        """Queued items by kind."""
        with self.connection.failing(_FAILING) as conn:
            return dict(conn.execute("SELECT kind, count(*) FROM outbox GROUP BY kind"))

    def oldest_ms(self) -> int | None:
        """When the oldest queued item was queued (None: the outbox is empty)."""
        with self.connection.failing(_FAILING) as conn:
            row = conn.execute("SELECT min(created_ms) FROM outbox").fetchone()
        return None if row[0] is None else int(row[0])
