"""The sync's use case run by hand: drain the outbox to central now, backoff or not."""

from __future__ import annotations

from edge_agent.app.clock import now_ms
from edge_agent.config import Settings
from edge_agent.sync.client import SyncReport, client_for, drain


def sync_now(settings: Settings) -> SyncReport:
    """Send what the outbox holds until it is empty or central asks to wait, ignoring a
    pending backoff (the scheduler's runs honour it).

    Raises:
        StorageError: the database cannot be read or written.
        ConfigError: the configured CA bundle is unreadable.
    """
    with client_for(settings) as client:
        return drain(settings, now_ms(), client, force=True)
