"""The database under central's store: SQLite (stdlib, WAL) by default, PostgreSQL (psycopg 3)
for a DSN.

One schema for both, as ordered migrations applied once each and recorded in
``schema_migrations``. Statements are written once with ``?`` placeholders; `_Dialect`
holds the few places where the engines differ (placeholders, identity columns, locking).
The store's parts (`central`, `fleet`, ...) run their statements through `Database.write`
(one transaction) and `Database.read`.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import orjson
import psycopg
import psycopg.conninfo
import psycopg.errors

from edge_agent.errors import CollectorError

#: (name, script): a migration. A script is split on ";" (none may sit in a comment);
#: ``{identity}`` is the engine's auto-increment primary key, ``{blob}`` its bytes type. A
#: script whose first line is `POSTGRESQL_ONLY` changes what SQLite has no use for
#: (partitions): it is recorded as applied on SQLite and run on PostgreSQL only.
Migration = tuple[str, str]
POSTGRESQL_ONLY = "-- postgresql only"

_MIGRATION_LOCK = 7_011_966  # any constant: serialises migrations of several PostgreSQL clients
#: Connections one process may hold open at once (``serve --pool-size``), and its bounds. One
#: process never uses more than about 43 at once: its requests' store calls run in the web
#: server's thread pool (40 threads), and its background jobs take one each (3).
POOL_SIZE = 16
MIN_POOL_SIZE = 1
MAX_POOL_SIZE = 64
_WAIT_S = 30.0


class Unavailable(CollectorError):
    """The database is busy or unreachable for now; the request may be retried."""


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


# --- engines -------------------------------------------------------------------------------

Connection = sqlite3.Connection | psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class _Dialect:
    name: str
    connect: Callable[[], Connection]
    identity: str
    blob: str
    begin_write: str
    migration_lock: str | None
    transient: tuple[type[Exception], ...]
    #: Statements are written with "?"; psycopg wants "%s" (and a literal % doubled).
    translate: Callable[[str], str]


def _sqlite(path: Path) -> _Dialect:
    def connect() -> Connection:
        conn = sqlite3.connect(path, timeout=_WAIT_S, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: an acknowledged request survives a power cut, as on the agent.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    return _Dialect(
        name="sqlite",
        connect=connect,
        identity="INTEGER PRIMARY KEY",
        blob="BLOB",
        # IMMEDIATE takes the write lock at once, so two writers queue instead of deadlocking.
        begin_write="BEGIN IMMEDIATE",
        migration_lock=None,
        transient=(sqlite3.OperationalError,),
        translate=lambda sql: sql,
    )


def _postgres(dsn: str) -> _Dialect:
    def connect() -> Connection:
        # prepare_threshold None: psycopg would otherwise prepare a statement run 5 times on
        # a connection and reuse it by name, and behind pgbouncer's transaction pooling the
        # next transaction may get another server connection, without it ("prepared
        # statement _pg3_0 does not exist"). Nothing else here keeps session state.
        return psycopg.connect(
            dsn, autocommit=True, connect_timeout=int(_WAIT_S), prepare_threshold=None
        )

    return _Dialect(
        name="postgresql",
        connect=connect,
        identity="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        blob="BYTEA",
        begin_write="BEGIN",
        migration_lock=f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})",
        transient=(
            psycopg.OperationalError,
            psycopg.errors.DeadlockDetected,
            psycopg.errors.SerializationFailure,
        ),
        translate=functools.lru_cache(maxsize=256)(
            lambda sql: sql.replace("%", "%%").replace("?", "%s")
        ),
    )


def redact(target: str) -> str:
    """A database target as it may be printed: a DSN without its password."""
    if not _is_postgres(target):
        return target
    try:
        parts = psycopg.conninfo.conninfo_to_dict(target)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable DSN)"
    parts.pop("password", None)
    return psycopg.conninfo.make_conninfo("", **parts)


def _is_postgres(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://"))


class Tx:
    """Statements inside one transaction on one connection."""

    def __init__(self, conn: Connection, dialect: _Dialect) -> None:
        self.conn = conn
        self.dialect = dialect

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Execute; returns the number of rows changed."""
        return self.conn.execute(self.dialect.translate(sql), tuple(params)).rowcount

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Execute a query; returns its rows."""
        return list(self.conn.execute(self.dialect.translate(sql), tuple(params)).fetchall())


class Database:
    """A pooled database with its schema. Thread-safe: each call takes a pooled connection.

    A subclass names its schema in ``MIGRATIONS``, applied in order by `open`.
    """

    MIGRATIONS: tuple[Migration, ...] = ()

    def __init__(self, dialect: _Dialect, pool_size: int = POOL_SIZE) -> None:
        if not MIN_POOL_SIZE <= pool_size <= MAX_POOL_SIZE:
            raise CollectorError(
                f"--pool-size {pool_size}: give {MIN_POOL_SIZE}-{MAX_POOL_SIZE} connections per "
                f"process (default {POOL_SIZE}); every process of the collector opens up to "
                "that many, so keep workers x pool size under PostgreSQL's max_connections"
            )
        self._dialect = dialect
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        # Bounds the connections open at once (PostgreSQL has a server-wide limit).
        self._slots = threading.BoundedSemaphore(pool_size)

    @classmethod
    def open(cls, target: str, *, pool_size: int = POOL_SIZE) -> Self:
        """Open ``target`` (a ``postgresql://`` DSN, else a SQLite file path) and migrate it;
        at most ``pool_size`` connections are open at once.

        Raises:
            CollectorError: the database cannot be reached, created or migrated; the pool
                size is out of `MIN_POOL_SIZE`-`MAX_POOL_SIZE`.
        """
        if _is_postgres(target):
            store = cls(_postgres(target), pool_size)
        else:
            path = Path(target)
            if not path.parent.is_dir():
                raise CollectorError(f"no folder {path.parent} for the database {path}")
            store = cls(_sqlite(path), pool_size)
        try:
            store._migrate()
            store.maintain(now_ms())
        except (sqlite3.Error, psycopg.Error, Unavailable) as exc:
            store.close()
            raise CollectorError(
                f"cannot open the database {redact(target)}: {str(exc).strip()}"
            ) from exc
        return store

    @property
    def engine(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._dialect.name

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # --- transactions ----------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if not self._slots.acquire(timeout=_WAIT_S):
            raise Unavailable("every database connection is busy")
        conn: Connection | None = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._dialect.connect()
            yield conn
        except self._dialect.transient as exc:
            # A connection that failed this way may be broken: not given back to the pool.
            if conn is not None:
                conn.close()
                conn = None
            raise Unavailable(f"the database is unavailable: {str(exc).strip()}") from exc
        finally:
            if conn is not None:
                with self._lock:
                    self._idle.append(conn)
            self._slots.release()

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """One write transaction: committed when the block ends, rolled back if it raises."""
        with self._connection() as conn:
            tx = Tx(conn, self._dialect)
            conn.execute(self._dialect.begin_write)
            try:
                yield tx
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def read(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows of one query, outside any write transaction."""
        with self._connection() as conn:
            return Tx(conn, self._dialect).rows(sql, params)

    def _migrate(self) -> None:
        with self.write() as tx:
            if self._dialect.migration_lock:
                tx.rows(self._dialect.migration_lock)
            tx.run(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name TEXT PRIMARY KEY, applied_ms BIGINT NOT NULL)"
            )
            applied = {row[0] for row in tx.rows("SELECT name FROM schema_migrations")}
            for name, script in self.MIGRATIONS:
                if name in applied:
                    continue
                if script.lstrip().startswith(POSTGRESQL_ONLY) and self.engine != "postgresql":
                    script = ""
                script = script.replace("{identity}", self._dialect.identity)
                for statement in script.replace("{blob}", self._dialect.blob).split(";"):
                    if statement.strip():
                        tx.run(statement)
                tx.run(
                    "INSERT INTO schema_migrations (name, applied_ms) VALUES (?, ?)",
                    (name, now_ms()),
                )

    def maintain(self, at_ms: int) -> None:
        """Keep the schema's upkeep done as of ``at_ms`` (`open` calls it after migrating;
        a subclass with partitions makes them here)."""

    def ping(self) -> None:
        """Raise `Unavailable` unless the database answers."""
        self.read("SELECT 1")


def audit(tx: Tx, site: str | None, action: str, detail: dict[str, object]) -> None:
    """Add a line to the audit trail in ``tx`` (``detail`` never holds a user id or a token)."""
    tx.run(
        "INSERT INTO audit (ts_ms, site, action, detail) VALUES (?, ?, ?, ?)",
        (now_ms(), site, action, orjson.dumps(detail).decode()),
    )
