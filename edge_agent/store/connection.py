"""The connection to the site database: opening it (WAL, pragmas, schema steps), its
transactions, and the one place where SQLite's errors become `StorageError`.

Every repository of `edge_agent.store` runs its SQL inside `Connection.failing`, so an
installer always reads which database failed, at what, and SQLite's own words (the cause is
kept with ``from exc``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from edge_agent.errors import StorageError
from edge_agent.store.migrations import migrations, unknown_steps

#: Values per IN list: well under SQLite's limit of bound parameters.
_IN_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Connection:
    """One SQLite connection to the database at ``path``, shared by the repositories."""

    path: Path
    db: Database

    @property
    def conn(self) -> sqlite3.Connection:
        """The underlying sqlite3 connection."""
        return self.db.conn

    @contextmanager
    def failing(self, doing: str) -> Iterator[sqlite3.Connection]:
        """Run SQL on the connection; SQLite errors become one readable `StorageError`.

        ``doing`` says what failed, e.g. ``"cannot be read"``.

        Raises:
            StorageError: SQLite failed (disk full, file not writable, locked past the timeout).
        """
        try:
            yield self.conn
        except sqlite3.Error as exc:
            raise StorageError(f"database {self.path} {doing}: {exc}") from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``): committed when the
        block ends, rolled back when it raises."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    @contextmanager
    def atomic(self) -> Iterator[sqlite3.Connection]:
        """A transaction that nests (a savepoint inside an outer one)."""
        with self.db.atomic():
            yield self.conn

    def scrub(self) -> None:
        """Leave no copy of deleted rows on disk.

        With secure_delete on, freed pages were zeroed; checkpointing moves that into the
        main file and truncating the WAL leaves no old copy of an erased row behind.
        """
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def in_chunks(self, sql: str, values: Sequence[object]) -> list[tuple[Any, ...]]:
        """The rows of ``sql`` run once per chunk of ``values``, its ``{marks}`` the chunk's
        placeholders: an IN list of any length, under SQLite's limit of bound parameters
        (inside the caller's transaction and error mapping)."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), _IN_CHUNK):
            chunk = values[start : start + _IN_CHUNK]
            # Only the placeholders are joined into the statement; values are parameters.
            rows += self.conn.execute(sql.format(marks=", ".join("?" * len(chunk))), chunk)
        return rows

    def delete_in_chunks(self, table: str, select: str, before: int, chunk: int) -> int:
        """Delete the rows of ``table`` whose ids ``select`` finds (given ``before`` and a
        ``LIMIT``), ``chunk`` rows per transaction so that ingest is never held up for long;
        returns how many (inside the caller's error mapping)."""
        removed = 0
        while True:
            with self.db.atomic():
                # Only fixed table names and clauses are joined here; values are parameters.
                gone = self.conn.execute(
                    f"DELETE FROM {table} WHERE id IN ({select})", (before, chunk)
                ).rowcount
            removed += gone
            if gone < chunk:
                return removed


def connect(path: Path, synchronous: str = "FULL", readonly: bool = False) -> Connection:
    """Open (creating when needed) the database in WAL mode and bring its schema up to date.

    Raises:
        StorageError: the folder or file cannot be created or opened, a migration fails, or
            the database was written by a newer edge-agent (it has schema steps this code
            does not know).
    """
    try:
        if readonly:
            if not path.exists():
                raise StorageError(f"no database at {path}: has the agent run with this config?")
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
    return Connection(path, db)
