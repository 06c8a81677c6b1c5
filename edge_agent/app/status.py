"""What ``edge-agent status`` reports: the store's counters, read while the agent runs."""

from __future__ import annotations

from edge_agent.config import Settings
from edge_agent.store.database import Status, Store


def counters(settings: Settings) -> Status:
    """Counters of a site's store (the agent may be running).

    Raises:
        StorageError: there is no database yet, or it cannot be read.
    """
    with Store.open(settings.database, readonly=True) as store:
        return store.status()
