"""Backups of the site's database, taken while the agent runs, and their restore."""

from __future__ import annotations

from pathlib import Path

from edge_agent.config import Settings
from edge_agent.store import backup as backups


def backup(settings: Settings, target: Path) -> backups.Copied:
    """Write a consistent copy of the site's database to ``target`` (the agent may be running).

    Raises:
        StorageError: there is no database, it cannot be read, or ``target`` cannot be written.
    """
    return backups.backup(settings.database, target)


def restore(settings: Settings, source: Path) -> backups.Copied:
    """Replace the site's database with the backup ``source``; the agent must be stopped.

    Raises:
        StorageError: the agent is running, ``source`` is not a sound edge-agent database this
            release can use, or the files cannot be written.
    """
    return backups.restore(settings.database, source)
