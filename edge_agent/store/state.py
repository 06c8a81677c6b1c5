"""The agent's own bookkeeping: state entries (broker connection, heartbeat, sync backoff)
and cumulative counters."""

from __future__ import annotations

from edge_agent.store.connection import Connection


class State:
    """The ``agent_state`` and ``counters`` tables."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def set(self, key: str, value: str, now_ms: int) -> None:
        """Record a piece of agent state (e.g. the broker connection) for ``status``.

        Raises:
            StorageError: SQLite could not write it.
        """
        with self.connection.failing("could not record state") as conn:
            conn.execute(
                "INSERT INTO agent_state (key, value, updated_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET "
                "value = excluded.value, updated_ms = excluded.updated_ms",
                (key, value, now_ms),
            )

    def all(self) -> dict[str, tuple[str, int]]:
        """The agent's state entries: key -> (value, when it was set).

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute("SELECT key, value, updated_ms FROM agent_state").fetchall()
        return {k: (v, t) for k, v, t in rows}

    def add(self, counter: str, amount: int) -> None:
        """Add to a counter (inside the caller's transaction and error mapping)."""
        self.connection.conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (counter, amount),
        )

    def counter(self, name: str) -> int:
        """A counter's value (0 when never counted).

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0
