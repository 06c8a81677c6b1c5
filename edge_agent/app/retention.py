"""Retention: what has expired is deleted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.config import Settings

# Re-exported: `edge-agent status` judges the heartbeat by the same period.
from edge_agent.core.health import HEARTBEAT_EVERY_S as HEARTBEAT_EVERY_S
from edge_agent.store.database import Store

if TYPE_CHECKING:
    pass
from edge_agent.core.retention import cutoffs


def expire_once(settings: Settings, now_ms: int) -> dict[str, int]:
    """Delete what retention says has expired; returns rows removed per table.

    Raises:
        StorageError: the database cannot be opened or written.
    """
    r = settings.retention
    with Store.open(settings.database, settings.store.synchronous) as store:
        return store.expire(cutoffs(now_ms, r.events_days, r.dead_letters_days))
