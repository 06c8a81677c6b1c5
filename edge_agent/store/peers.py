"""What the venue's other agents shared: each one's latest index and its hour cells
(`edge_agent.core.venueview`), and the agents refused for a site key of their own."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from edge_agent.core.aggregate import to_document
from edge_agent.core.venueview import Hour, Index
from edge_agent.store.connection import Connection


@dataclass(frozen=True, slots=True)
class PeerAgent:
    """One peer as the ``peer_agents`` table holds it."""

    site: str
    heard_ms: int
    computed_ms: int
    day: str
    timezone: str


@dataclass(frozen=True, slots=True)
class PeerRefusal:
    """A peer whose documents this agent refuses, and why (``peer_refusals``)."""

    site: str
    reason: str
    #: When its latest document was refused (this agent's clock).
    refused_ms: int


class Peers:
    """The ``peer_agents``, ``peer_cells`` and ``peer_refusals`` tables."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def save_index(self, index: Index, heard_ms: int, day_start_ms: int) -> None:
        """Keep a peer's index: when it was heard, its day and time zone (of the newest
        index), and that it is refused no more; its cells of days before ``day_start_ms``
        (the start of the index's day) go, so a peer costs a day of cells at most.

        Raises:
            StorageError: SQLite could not write it.
        """
        head = index.head
        with (
            self.connection.failing("could not store a peer's index") as conn,
            self.connection.transaction(),
        ):
            conn.execute(
                "INSERT INTO peer_agents (site, heard_ms, computed_ms, day, timezone) "
                "VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (site) DO UPDATE SET "
                "heard_ms = max(heard_ms, excluded.heard_ms), "
                "computed_ms = max(computed_ms, excluded.computed_ms), "
                "day = iif(excluded.computed_ms >= computed_ms, excluded.day, day), "
                "timezone = iif(excluded.computed_ms >= computed_ms, "
                "excluded.timezone, timezone)",
                (head.site, heard_ms, head.computed_ms, head.day.isoformat(), head.timezone),
            )
            conn.execute(
                "DELETE FROM peer_cells WHERE site = ? AND start_ms < ?",
                (head.site, day_start_ms),
            )
            conn.execute("DELETE FROM peer_refusals WHERE site = ?", (head.site,))

    def save_hour(self, hour: Hour) -> bool:
        """Keep a peer's hour cell unless a newer computation of that (site, hour) is held
        already; whether it was written.

        Raises:
            StorageError: SQLite could not write it.
        """
        row = (
            hour.head.site,
            hour.cell.start_ms,
            hour.head.computed_ms,
            orjson.dumps(to_document(hour.cell)).decode(),
        )
        with self.connection.failing("could not store a peer's cell") as conn:
            written: int = conn.execute(
                "INSERT INTO peer_cells (site, start_ms, computed_ms, cell) "
                "VALUES (?, ?, ?, ?) "
                "ON CONFLICT (site, start_ms) DO UPDATE SET "
                "computed_ms = excluded.computed_ms, cell = excluded.cell "
                "WHERE excluded.computed_ms > peer_cells.computed_ms",
                row,
            ).rowcount
        return written > 0

    def refuse(self, site: str, reason: str, at_ms: int) -> None:
        """Record that ``site``'s documents are refused for ``reason`` (another site key),
        for ``status`` and the venue's screens to name, until it shares an index this agent
        takes (`save_index`).

        Raises:
            StorageError: SQLite could not write it.
        """
        with self.connection.failing("could not store a refused peer") as conn:
            conn.execute(
                "INSERT INTO peer_refusals (site, reason, refused_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (site) DO UPDATE SET "
                "reason = excluded.reason, refused_ms = excluded.refused_ms",
                (site, reason, at_ms),
            )

    def refusals(self) -> list[PeerRefusal]:
        """The peers refused now, by site.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute(
                "SELECT site, reason, refused_ms FROM peer_refusals ORDER BY site"
            ).fetchall()
        return [PeerRefusal(*row) for row in rows]

    def agents(self) -> list[PeerAgent]:
        """Every peer ever heard, by site.

        Raises:
            StorageError: the database cannot be read.
        """
        with self.connection.failing("cannot be read") as conn:
            rows = conn.execute(
                "SELECT site, heard_ms, computed_ms, day, timezone FROM peer_agents ORDER BY site"
            ).fetchall()
        return [PeerAgent(*row) for row in rows]

    def cells(self, start_ms: int, end_ms: int) -> dict[str, list[dict[str, object]]]:
        """The peers' stored hour cells in a period: site -> cell documents, oldest first.

        Raises:
            StorageError: the database cannot be read.
        """
        out: dict[str, list[dict[str, object]]] = {}
        with self.connection.failing("cannot be read") as conn:
            for site, cell in conn.execute(
                "SELECT site, cell FROM peer_cells WHERE start_ms >= ? AND start_ms < ? "
                "ORDER BY site, start_ms",
                (start_ms, end_ms),
            ):
                out.setdefault(site, []).append(orjson.loads(cell))
        return out
