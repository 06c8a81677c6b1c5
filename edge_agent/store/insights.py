"""The insights tables: hours to recompute, data-quality counts, the hour cells, and the
differential-privacy ledger."""

from __future__ import annotations

from collections import Counter

import orjson

from edge_agent.core.noise import Refusal, charge
from edge_agent.store.connection import Connection
from edge_agent.store.outbox import Outbox


class Insights:
    """The ``dirty_hours``, ``quality_hours``, ``insight_cells`` and ``dp_ledger`` tables."""

    def __init__(self, connection: Connection, outbox: Outbox) -> None:
        self.connection = connection
        self.outbox = outbox

    def mark_dirty(self, hours: set[int], now_ms: int) -> None:
        """Mark hours for the insights job, which recomputes them once they are closed (late
        events too); inside the caller's transaction and error mapping."""
        self.connection.conn.executemany(
            "INSERT INTO dirty_hours (start_ms, marked_ms) VALUES (?, ?) "
            "ON CONFLICT (start_ms) DO UPDATE SET marked_ms = excluded.marked_ms",
            [(hour, now_ms) for hour in hours],
        )

    def count_quality(self, counts: Counter[tuple[int, str]], now_ms: int) -> None:
        """Add (hour, kind) data-quality counts and mark their hours dirty (inside the
        caller's transaction and error mapping)."""
        self.connection.conn.executemany(
            "INSERT INTO quality_hours (start_ms, kind, count) VALUES (?, ?, ?) "
            "ON CONFLICT (start_ms, kind) DO UPDATE SET count = count + excluded.count",
            [(hour, kind, n) for (hour, kind), n in counts.items()],
        )
        self.mark_dirty({hour for hour, _ in counts}, now_ms)

    def quality(self, start_ms: int) -> dict[str, int]:
        """An hour's data-quality counts: ``duplicates`` and ``dead_letter/<reason>``.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            return dict(
                conn.execute(
                    "SELECT kind, count FROM quality_hours WHERE start_ms = ?", (start_ms,)
                ).fetchall()
            )

    def dirty_hours(self, before_ms: int) -> list[tuple[int, int]]:
        """Hours with new events since their cell was computed: (start, when marked).

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            return [
                (start, marked)
                for start, marked in conn.execute(
                    "SELECT start_ms, marked_ms FROM dirty_hours WHERE start_ms < ? "
                    "ORDER BY start_ms",
                    (before_ms,),
                )
            ]

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
        with self.connection.failing("could not store a cell"), self.connection.atomic() as conn:
            conn.execute(
                "INSERT INTO insight_cells (start_ms, computed_ms, events, cell) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT (start_ms) DO UPDATE SET computed_ms = excluded.computed_ms, "
                "events = excluded.events, cell = excluded.cell",
                (start, now_ms, events, orjson.dumps(cell_document).decode()),
            )
            conn.execute(
                "DELETE FROM dirty_hours WHERE start_ms = ? AND marked_ms = ?",
                (start, marked_ms),
            )
            if outgoing is not None:
                self.outbox.replace_insight(f"insight:{start}", outgoing, now_ms)

    def cells(self, start_ms: int, end_ms: int) -> list[dict[str, object]]:
        """Stored hour cells in a period, oldest first.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute(
                "SELECT cell FROM insight_cells WHERE start_ms >= ? AND start_ms < ? "
                "ORDER BY start_ms",
                (start_ms, end_ms),
            ).fetchall()
        return [orjson.loads(row[0]) for row in rows]

    def _epsilon_spent(self, day: str) -> float:
        return float(
            self.connection.conn.execute(
                "SELECT coalesce(sum(epsilon), 0) FROM dp_ledger WHERE day = ?", (day,)
            ).fetchone()[0]
        )

    def epsilon_spent(self, day: str) -> float:
        """The epsilon the day's releases have spent so far.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("could not read the epsilon ledger"):
            return self._epsilon_spent(day)

    def spend_epsilon(
        self, day: str, cost: float, per_day: float, what: str, now_ms: int
    ) -> float | Refusal:
        """Record a release's epsilon against the day's budget, atomically with the check.

        Returns the day's total spent after it, or the refusal (nothing recorded).

        Raises:
            StorageError: SQLite could not read or write the ledger.
        """
        with (
            self.connection.failing("could not use the epsilon ledger"),
            self.connection.atomic() as conn,
        ):
            after = charge(self._epsilon_spent(day), cost, per_day, day)
            if not isinstance(after, Refusal):
                conn.execute(
                    "INSERT INTO dp_ledger (day, epsilon, what, released_ms) VALUES (?, ?, ?, ?)",
                    (day, cost, what, now_ms),
                )
        return after
