"""Retention: what has expired is deleted."""

from __future__ import annotations

from edge_agent.config import Settings
from edge_agent.core.retention import cutoffs
from edge_agent.store.database import Store


def expire_once(settings: Settings, now_ms: int) -> dict[str, int]:
    """Delete what retention says has expired; returns rows removed per table.

    Raises:
        StorageError: the database cannot be opened or written.
    """
    r = settings.retention
    with Store.open(settings.database, settings.store.synchronous) as store:
        return store.expire(cutoffs(now_ms, r.events_days, r.dead_letters_days))
