"""What the venue's other agents shared: each one's latest share document and its hour cells
(`edge_agent.core.venueview`)."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from edge_agent.core.aggregate import to_document
from edge_agent.core.venueview import Share
from edge_agent.store.connection import Connection


@dataclass(frozen=True, slots=True)
class PeerAgent:
    """One peer as the ``peer_agents`` table holds it."""

    site: str
    heard_ms: int
    computed_ms: int
    day: str
    timezone: str


class Peers:
    """The ``peer_agents`` and ``peer_cells`` tables."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def save(self, share: Share, heard_ms: int, day_start_ms: int) -> int:
        """Keep a peer's document: when it was heard, and each of its cells unless a newer
        computation of that (site, hour) is held already; its cells of days before
        ``day_start_ms`` (the start of the document's day) go, so a peer costs a day of
        cells at most. Returns how many cells were written.

        Raises:
            StorageError: SQLite could not write it.
        """
        day = share.day.isoformat()
        rows = [
            (share.site, c.start_ms, share.computed_ms, orjson.dumps(to_document(c)).decode())
            for c in share.cells
        ]
        with (
            self.connection.failing("could not store a peer's cells") as conn,
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
                (share.site, heard_ms, share.computed_ms, day, share.timezone),
            )
            written = 0
            for row in rows:
                written += conn.execute(
                    "INSERT INTO peer_cells (site, start_ms, computed_ms, cell) "
                    "VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (site, start_ms) DO UPDATE SET "
                    "computed_ms = excluded.computed_ms, cell = excluded.cell "
                    "WHERE excluded.computed_ms > peer_cells.computed_ms",
                    row,
                ).rowcount
            conn.execute(
                "DELETE FROM peer_cells WHERE site = ? AND start_ms < ?",
                (share.site, day_start_ms),
            )
        return written

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
