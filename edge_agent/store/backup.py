"""Online backups of the store, and putting one back in place of the database.

A backup is a consistent copy taken while the agent ingests (SQLite's online backup API, see
`copy`), written to a temporary file beside the target and renamed into place, so a
reader never finds half a backup under the target's name. A restore checks the file first
(SQLite opens it, ``PRAGMA integrity_check`` passes, it is an edge-agent database this release
can migrate), holds the agent's lock (`edge_agent.store.lock`) so no agent writes
meanwhile, and keeps the database it replaces as ``<database>.before-restore``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from edge_agent.errors import StorageError
from edge_agent.store.database import Store
from edge_agent.store.lock import DatabaseLock
from edge_agent.store.migrations import FIRST_STEP, migrations

#: SQLite keeps a database's write-ahead log and its index next to it under these suffixes.
_WAL_SUFFIXES = ("-wal", "-shm")
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


@dataclass(frozen=True)
class Copied:
    """A database file written by `backup` or put in place by `restore`."""

    path: Path
    size_bytes: int
    rows: dict[str, int]
    #: ``restore`` only: where the database it replaced was kept (None: there was none).
    previous: Path | None = None


def backup(database: Path, target: Path) -> Copied:
    """Write a consistent copy of ``database`` to ``target`` (mode 0600), atomically.

    Raises:
        StorageError: there is no database, it cannot be read or was written by a newer
            edge-agent, ``target`` is the database itself, or ``target`` cannot be written.
    """
    if target.exists() and target.resolve() == database.resolve():
        raise StorageError(f"{target} is the database itself: back it up to another file")
    target = target.absolute()
    with Store.open(database, readonly=True) as store:
        temporary = _temporary_beside(target, ".tmp")
        try:
            copy(store, temporary)
            with Store.open(temporary, readonly=True) as copied:
                found = problems(copied)
                if found:
                    raise StorageError(f"the copy of {database} fails its check: {found[0]}")
                rows = row_counts(copied)
            _durable_replace(temporary, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
    return Copied(target, target.stat().st_size, rows)


def check(source: Path) -> dict[str, int]:
    """Rows of ``source`` per main table, after checking it can replace a database.

    Raises:
        StorageError: ``source`` is missing, not an SQLite database, fails its integrity check,
            is not an edge-agent database, or was written by a newer edge-agent.
    """
    if not source.is_file():
        raise StorageError(f"no backup file at {source}")
    # Store.open refuses a file with schema steps this release does not know.
    with Store.open(source, readonly=True) as candidate:
        found = problems(candidate)
        if found:
            raise StorageError(
                f"{source} cannot be restored: {'; '.join(found[:3])}"
                + (f" (and {len(found) - 3} more found)" if len(found) > 3 else "")
            )
        return row_counts(candidate)


def restore(database: Path, source: Path) -> Copied:
    """Put the backup ``source`` in place of ``database``, which is kept as
    ``<database>.before-restore``. The agent must be stopped; it migrates the restored
    database on its next start when the backup comes from an older release.

    Raises:
        StorageError: the agent is running, ``source`` cannot be restored (see `check`), the
            database's folder belongs to another user (the agent could not write the restored
            file), or the files cannot be written.
    """
    folder = database.parent
    if folder.exists() and folder.stat().st_uid != os.geteuid():
        raise StorageError(
            f"{folder} belongs to another user: run restore as that user (e.g. sudo -u "
            "edge-agent edge-agent --config /etc/edge-agent/agent.toml restore FILE), so the "
            "agent can write the restored database"
        )
    with DatabaseLock.acquire(database, "restore"):
        rows = check(source)
        # The new content goes beside the database first: the final rename cannot fail for
        # lack of space, and a crash before it leaves the current database untouched.
        staged = _temporary_beside(database, ".restore")
        try:
            with Store.open(source, readonly=True) as store:
                copy(store, staged)
            previous = _set_aside(database)
            _durable_replace(staged, database)
        except BaseException:
            with contextlib.suppress(OSError):
                staged.unlink()
            raise
    return Copied(database, database.stat().st_size, rows, previous)


def copy(store: Store, target: Path) -> None:
    """Copy the whole database into ``target`` (a new or empty file) with SQLite's online
    backup, in one step: one read transaction, so the copy is the database as of one
    commit while the agent goes on committing (in WAL mode readers do not block it). The
    copy is left in rollback-journal mode: one self-contained file, no ``-wal`` beside it.

    Raises:
        StorageError: the database cannot be read or ``target`` cannot be written.
    """
    with store.connection.failing(f"cannot be copied to {target}") as conn:
        copied = sqlite3.connect(target, isolation_level=None)
        try:
            conn.backup(copied)
            copied.execute("PRAGMA journal_mode = DELETE")
        finally:
            copied.close()


@functools.cache
def _release_schema() -> frozenset[tuple[str, str, str | None]]:
    """Every schema object (type, name, SQL) that this release's steps create, after each
    step: what a database written by this release or an older one may hold."""
    scratch = Database(memory=True)
    steps = [m.name for m in migrations.pending(scratch)]
    seen: set[tuple[str, str, str | None]] = set()
    for later in [*steps[1:], None]:
        migrations.apply(scratch, stop_before=later)
        seen |= set(scratch.execute("SELECT type, name, sql FROM sqlite_master").fetchall())
    return frozenset(seen)


def problems(store: Store) -> list[str]:
    """What ``PRAGMA integrity_check`` finds (empty: the file is sound), whether this is an
    edge-agent database at all (its first schema step is recorded), and any schema object no
    release's steps create: a trigger, view, index or table added by hand could drop or alter
    events the agent has acknowledged.

    Raises:
        StorageError: the file cannot be read as an SQLite database.
    """
    with store.connection.failing("cannot be read") as conn:
        found = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
        ours = {m.name for m in migrations.applied(store.db)} >= {FIRST_STEP}
        objects = conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
    issues = [] if found == ["ok"] else found
    if not ours:
        issues.append("not an edge-agent database (no edge-agent schema steps recorded)")
    known = _release_schema()
    issues += [
        f"{'an' if kind == 'index' else 'a'} {kind} {name!r} that edge-agent never creates "
        "(or whose definition was changed)"
        for kind, name, sql in objects
        # SQLite's own tables (statistics, AUTOINCREMENT counters) are not schema of ours.
        if (kind, name, sql) not in known and not str(name).startswith("sqlite_")
    ]
    return issues


def row_counts(store: Store) -> dict[str, int]:
    """Rows of each of the site's main tables that this database has.

    Raises:
        StorageError: the database cannot be read.
    """
    with store.connection.failing("cannot be read") as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in MAIN_TABLES
            if store.db[table].exists()
        }


def _set_aside(database: Path) -> Path | None:
    """Keep the current database as ``<database>.before-restore``, with its write-ahead log.

    Files, not SQL: the database being replaced may be corrupt, or from a newer release, which
    is often why it is being replaced. The log moves with it under the name SQLite looks for
    (``<name>-wal``), so opening the kept copy recovers the commits the log still held.
    """
    if not database.exists():
        return None
    kept = database.with_name(database.name + ".before-restore")
    try:
        for suffix in _WAL_SUFFIXES:
            # A log left from an earlier kept copy would be replayed into this one.
            Path(f"{kept}{suffix}").unlink(missing_ok=True)
        kept.unlink(missing_ok=True)
        os.link(database, kept)
        wal = Path(f"{database}-wal")
        if wal.exists():
            wal.rename(f"{kept}-wal")
        # The log's index is rebuilt from the log when a connection next opens the file.
        Path(f"{database}-shm").unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot keep {database} as {kept}: {exc.strerror}") from exc
    return kept


def _temporary_beside(target: Path, suffix: str) -> Path:
    """A new empty file in ``target``'s folder (same file system, so a rename can replace the
    target), mode 0600 as mkstemp makes it: it will hold what the database holds."""
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    except OSError as exc:
        raise StorageError(f"cannot write in {target.parent}: {exc.strerror}") from exc
    os.close(fd)
    return Path(name)


def _durable_replace(temporary: Path, target: Path) -> None:
    """Rename ``temporary`` over ``target`` so that, after a power cut, the target is either
    the old file or the whole new one."""
    try:
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        temporary.chmod(0o600)
        os.replace(temporary, target)
        folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror}") from exc
