"""Free space on the data disk, and the ingest loop's view of it (disk pressure)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent import logs
from edge_agent.core.health import MB, short_of_space
from edge_agent.errors import StorageError

logger = logging.getLogger(__name__)


def free_bytes(folder: Path) -> int:
    """Bytes an unprivileged process may still write on the disk holding ``folder``.

    Raises:
        StorageError: the folder cannot be examined.
    """
    return space(folder)[0]


def space(folder: Path) -> tuple[int, int]:
    """The free bytes (as `free_bytes`) and the size of the disk holding ``folder``.

    Raises:
        StorageError: the folder cannot be examined.
    """
    try:
        stats = os.statvfs(folder)
    except OSError as exc:
        raise StorageError(f"the free space of {folder} cannot be read: {exc.strerror}") from exc
    # f_bavail, not f_bfree: the blocks reserved for root are of no use to the agent.
    return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize


class DiskWatch:
    """Whether the data disk is short of space, measured at most every ``every_s``.

    Says so in the log once when the shortage starts and once when it ends, and tells
    ``on_change`` (e.g. a metric) each time.
    """

    def __init__(
        self,
        folder: Path,
        min_free_mb: int,
        on_change: Callable[[bool], None] = lambda _short: None,
        every_s: float = 1.0,
    ) -> None:
        self.folder = folder
        self.min_free_mb = min_free_mb
        self.on_change = on_change
        self.every_s = every_s
        self.short = False
        self.checked_at = float("-inf")

    def is_short(self) -> bool:
        """The current verdict, measured again when the last one is older than ``every_s``.

        A disk that cannot be examined counts as short: committing blind could fill it.
        """
        if self.min_free_mb == 0:
            return False
        if time.monotonic() - self.checked_at < self.every_s:
            return self.short
        self.checked_at = time.monotonic()
        try:
            free: int | None = free_bytes(self.folder)
        except StorageError as exc:
            logs.log(logger, logging.ERROR, "disk_unreadable", str(exc))
            free = None
        short = free is None or short_of_space(free, self.min_free_mb)
        if short != self.short:
            self.short = short
            self._tell(short, free)
        return short

    def _tell(self, short: bool, free: int | None) -> None:
        free_mb = None if free is None else free // MB
        if short:
            logs.log(
                logger, logging.ERROR, "disk_pressure_started",
                f"under [store] min_free_mb on the disk of {self.folder}: new events are not "
                "committed nor acknowledged (the broker keeps them) until space is freed",
                free_mb=free_mb, min_free_mb=self.min_free_mb,
            )  # fmt: skip
        else:
            logs.log(
                logger, logging.INFO, "disk_pressure_ended",
                f"space is back on the disk of {self.folder}: ingest resumes",
                free_mb=free_mb, min_free_mb=self.min_free_mb,
            )  # fmt: skip
        self.on_change(short)
