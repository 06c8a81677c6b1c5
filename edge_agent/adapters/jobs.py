"""Periodic work on apscheduler 3.x: each job opens its own connection to the store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler

from edge_agent import logs
from edge_agent.adapters.store import Store
from edge_agent.config import Settings
from edge_agent.core.retention import cutoffs
from edge_agent.errors import StorageError

logger = logging.getLogger(__name__)


def expire_once(settings: Settings, now_ms: int) -> dict[str, int]:
    """Delete what retention says has expired; returns rows removed per table.

    Raises:
        StorageError: the database cannot be opened or written.
    """
    r = settings.retention
    with Store.open(settings.database, settings.store.synchronous) as store:
        return store.expire(cutoffs(now_ms, r.events_days, r.dead_letters_days))


def _retention_job(settings: Settings, clock: Callable[[], int]) -> None:
    try:
        removed = expire_once(settings, clock())
    except StorageError as exc:
        # Retried at the next run; nothing is lost by deleting later.
        logs.log(logger, logging.ERROR, "retention_failed", str(exc))
        return
    logs.log(logger, logging.INFO, "retention_done", "expired rows removed", **removed)


def start(settings: Settings, clock: Callable[[], int]) -> BackgroundScheduler:
    """Start the agent's scheduler with the retention job (first run at start-up).

    Args:
        settings: the agent's settings.
        clock: the current time in epoch milliseconds.
    """
    scheduler = BackgroundScheduler(timezone="UTC")
    scheduler.add_job(
        _retention_job,
        "interval",
        seconds=settings.retention.every_s,
        args=(settings, clock),
        id="retention",
        max_instances=1,
        coalesce=True,
        next_run_time=datetime.now(UTC),
    )
    scheduler.start()
    return scheduler
