"""Central's retention and hygiene (docs/sync-and-collector.md), in the background.

The collector's serve process runs `worker`: every few minutes it deletes the idempotency
keys and insight item ids older than the window (``serve --keys-kept-days``, 30 days), and
the replaced site tokens that expired as long ago (`CentralStore.rotate_token`), and makes
the day partitions of the hour cells due (`store.partitions`, PostgreSQL). Each table
is pruned in batches of `BATCH_ROWS`, one transaction each, so however large the backlog no
request waits long behind a delete. What was pruned is logged (one line per run of passes)
and counted in ``/metrics``. The audit trail, the erasure receipts, the notices' ids and the
data itself are never pruned here.

The window is safe because a key or an id only spares central work it would otherwise do
harmlessly: a request sent again after its key is gone is stored as a new one, and each of
its items is kept once by its own key. An insight cell is one row per (site, hour), replaced
only by a later version and not by the same item again; an identified item is unique by
(site, messageId), and one of a person erased or withdrawn since is refused by the receipt;
a notice's id is never pruned (`store.central.PRUNED_ITEM_KIND` says why).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.multiprocess import MultiProcessCollector

from edge_agent import logs
from edge_agent.collector.background import Worker
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import now_ms
from edge_agent.errors import CollectorError

log = logging.getLogger(__name__)

#: ``serve --keys-kept-days``'s default, and its bounds.
KEYS_KEPT_DAYS = 30
MIN_DAYS = 1
MAX_DAYS = 3650
DAY_MS = 24 * 3600 * 1000
#: Rows deleted per transaction: a few milliseconds of locks, however large the table.
BATCH_ROWS = 5000
#: Seconds between passes when nothing is left to prune.
EVERY_S = 300.0
#: Seconds between two batches of a backlog. SQLite's busy handler is not fair: a writer that
#: commits and begins again at once can keep a waiting request out; a short gap lets it in.
PAUSE_S = 0.1
#: The tables pruned, as the counter's ``table`` label and the log line's fields name them.
TABLES = ("idempotency", "sync_items", "previous_site_tokens")


@dataclass(frozen=True, slots=True)
class Retention:
    """How long central keeps what only de-duplicates requests (``serve --keys-kept-days``),
    and how the job goes about deleting it."""

    keys_kept_days: int = KEYS_KEPT_DAYS
    every_s: float = EVERY_S
    batch_rows: int = BATCH_ROWS
    pause_s: float = PAUSE_S

    def __post_init__(self) -> None:
        if not MIN_DAYS <= self.keys_kept_days <= MAX_DAYS:
            raise CollectorError(
                f"--keys-kept-days {self.keys_kept_days}: give {MIN_DAYS}-{MAX_DAYS} days "
                f"(default {KEYS_KEPT_DAYS}); an agent's retry after the window is still "
                "stored once (docs/sync-and-collector.md)"
            )
        if self.batch_rows < 1 or self.every_s <= 0 or self.pause_s < 0:
            raise CollectorError(
                "the pruning job needs a batch of at least 1 row and a period above 0 s"
            )

    def cutoff_ms(self, at_ms: int) -> int:
        """What was claimed, received or expired before this is pruned at ``at_ms``."""
        return at_ms - self.keys_kept_days * DAY_MS


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pass deleted from each table, and whether a table has more waiting."""

    idempotency: int
    sync_items: int
    previous_site_tokens: int
    more: bool

    def counts(self) -> dict[str, int]:
        """Rows deleted by table (`TABLES`)."""
        return {
            "idempotency": self.idempotency,
            "sync_items": self.sync_items,
            "previous_site_tokens": self.previous_site_tokens,
        }


def prune(store: CentralStore, retention: Retention, at_ms: int) -> Pruned:
    """One pass: at most one batch from each table, each in its own transaction.

    Raises:
        Unavailable: the database is busy or unreachable.
    """
    before = retention.cutoff_ms(at_ms)
    limit = retention.batch_rows
    keys = store.prune_idempotency_keys(before, limit)
    items = store.prune_item_ids(before, limit)
    tokens = store.prune_previous_tokens(before, limit)
    return Pruned(keys, items, tokens, more=max(keys, items, tokens) >= limit)


def install(app: FastAPI, *, shared: Path | None = None) -> None:
    """Give the collector's ``app`` the default retention (`configure` changes it) and its
    pruned rows counter, served on ``/metrics`` (call after `fleet.install`, which makes the
    registry). The counter starts at 0 when serve starts.

    ``shared``: the folder of prometheus_client's multiprocess mode (``serve --workers``
    above 1 sets ``PROMETHEUS_MULTIPROC_DIR`` to it before any worker starts). Only one
    worker runs the job, but any may answer a scrape: each then serves the counts of every
    worker that ever ran, a dead one's included, so the counter never goes back.
    """
    configure(app, Retention())
    registry: CollectorRegistry = app.state.fleet_registry
    if shared is not None:
        MultiProcessCollector(registry, str(shared))  # type: ignore[no-untyped-call]
    counter = Counter(
        "edge_collector_pruned_rows",
        "Rows the hygiene job deleted since the collector started, by table",
        ["table"],
        # Shared, the counter's own value is in the folder already: registered too, it would
        # be served twice.
        registry=None if shared is not None else registry,
    )
    for table in TABLES:
        counter.labels(table)
    app.state.pruned_rows = counter


def configure(app: FastAPI, retention: Retention) -> None:
    """Prune the store of ``app`` (made by `create_app`) with ``retention``; call it before
    the app starts, when its worker reads it."""
    app.state.retention = retention


def worker(store: CentralStore, retention: Retention, counter: Counter | None = None) -> Worker:
    """The serve process's pruning thread. A backlog is worked through a batch at a time,
    `Retention.pause_s` apart; the counts of a run of passes are logged when it ends."""
    totals = dict.fromkeys(TABLES, 0)

    def one_pass() -> bool:
        at = now_ms()
        # The days ahead get their partitions of the hour cells (PostgreSQL) before they come.
        store.maintain(at)
        pruned = prune(store, retention, at)
        for table, n in pruned.counts().items():
            totals[table] += n
            if counter is not None and n:
                counter.labels(table).inc(n)
        if pruned.more:
            time.sleep(retention.pause_s)
            return True
        if any(totals.values()):
            logs.log(
                log,
                logging.INFO,
                "pruned",
                "pruned idempotency keys, insight item ids and expired site tokens older "
                "than the window",
                keys_kept_days=retention.keys_kept_days,
                **totals,
            )
            totals.update(dict.fromkeys(TABLES, 0))
        return False

    return Worker("pruning keys and ids", one_pass, retention.every_s)
