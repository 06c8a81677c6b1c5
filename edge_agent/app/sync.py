"""The sync's use case: drain the outbox to central (and a Segment-compatible destination)."""

from __future__ import annotations

from edge_agent.config import Settings
from edge_agent.sync.client import SyncReport, client_for, drain


def send(settings: Settings, now_ms: int, force: bool = False) -> SyncReport:
    """Send what the outbox holds until it is empty or central asks to wait; ``force``
    ignores a pending backoff (``edge-agent sync``; the scheduler's runs honour it).

    Raises:
        StorageError: the database cannot be read or written.
        ConfigError: the configured CA bundle is unreadable.
    """
    with client_for(settings) as client:
        return drain(settings, now_ms, client, force=force)
