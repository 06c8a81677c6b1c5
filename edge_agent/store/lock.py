"""Who owns a database: an exclusive ``flock`` on ``<database>.lock``, held for a lifetime.

The running agent holds it from start to stop, and ``restore`` holds it while it replaces the
database, so neither can start while the other works. The kernel drops the lock when its
holder's process ends, however it ends (``kill -9``, an OOM kill, a power cut), so a stale lock
cannot keep a site down, unlike a pid file or the heartbeat in the database, which only say
what a process last wrote. The lock is a separate file because ``restore`` swaps the database's
content, and a lock on a file that can be replaced would stop guarding it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from edge_agent.errors import StorageError


def lock_path(database: Path) -> Path:
    """The lock file guarding ``database``."""
    return database.with_name(database.name + ".lock")


class DatabaseLock:
    """An exclusive, non-blocking claim on a database, released by `release` or process exit."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, database: Path, holder: str) -> DatabaseLock:
        """Claim ``database`` for ``holder`` (e.g. "agent", "restore"), or fail at once.

        Raises:
            StorageError: another process holds the claim (the message says which, as far as
                it wrote), or the lock file cannot be created.
        """
        path = lock_path(database)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except PermissionError:
                # Made by another user (flock needs no write access): claim it all the same.
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(f"lock file {path} cannot be opened: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise StorageError(
                f"database {database} is in use by {_holder(path)}: stop the agent first "
                "(systemctl stop edge-agent) or wait for the restore to finish"
            ) from exc
        except OSError as exc:
            os.close(fd)
            raise StorageError(f"lock file {path} cannot be locked: {exc.strerror}") from exc
        # Who holds it, for the message another process prints; the lock itself is the flock.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{holder} {os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Give the claim up (closing the file drops the flock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DatabaseLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _holder(path: Path) -> str:
    try:
        words = path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        words = []
    if len(words) == 2 and words[1].isdigit():
        return f"a running edge-agent {words[0]} (pid {words[1]})"
    return "another edge-agent process"
