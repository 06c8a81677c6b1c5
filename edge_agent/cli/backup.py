"""``backup`` and ``restore``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from edge_agent.config import Settings

if TYPE_CHECKING:
    from edge_agent.store.backup import Copied


def _print_copy(done: Copied) -> None:
    print(f"file:    {done.path} ({done.size_bytes} bytes)")
    for table, count in done.rows.items():
        print(f"  {table:<16}{count} rows")


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    """Write a consistent copy of the database while the agent runs."""
    from edge_agent.app import backup

    done = backup.backup(settings, args.file)
    print(f"backed up {settings.database}")
    _print_copy(done)
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    """Put a backup in place of the database (the agent stopped)."""
    from edge_agent.app import backup

    done = backup.restore(settings, args.file)
    print(f"restored {args.file} to {settings.database}")
    _print_copy(done)
    if done.previous is not None:
        print(f"the database it replaced is kept as {done.previous}")
    return 0
