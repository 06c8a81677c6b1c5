"""What ``edge-agent status`` reports: the store's counters, read while the agent runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_agent.config import Settings

# Re-exported: `edge-agent status` judges the heartbeat by the same period.
from edge_agent.core.health import HEARTBEAT_EVERY_S as HEARTBEAT_EVERY_S
from edge_agent.store.database import Status, Store

if TYPE_CHECKING:
    pass


def counters(settings: Settings) -> Status:
    """Counters of a site's store (the agent may be running).

    Raises:
        StorageError: there is no database yet, or it cannot be read.
    """
    with Store.open(settings.database, readonly=True) as store:
        return store.status()
