"""The agent's Prometheus metrics (prometheus-client), in a registry of the agent's own.

Two sources:

- counted as things happen, in the agent's process: events stored, dead letters, duplicates
  and commit latency by the ingest loop; the receiver's unacknowledged messages; disk pressure;
  sync runs by the scheduler's sync job. They start from zero when the agent starts
  (Prometheus reads that as a counter reset).
- read from SQLite when scraped (`StoreFigures`, on a read-only connection): outbox depth and
  losses, the serving model versions, the differential-privacy budget spent today; and the
  data disk's free space.

prometheus-client's metric objects are thread-safe: the ingest loop, the scheduler's threads
and the HTTP server's threads share them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edge_agent import logs
from edge_agent.config import Settings
from edge_agent.core.health import MB
from edge_agent.core.localtime import zone
from edge_agent.core.noise import budget_day
from edge_agent.core.sync import PRIORITY
from edge_agent.errors import StorageError
from edge_agent.ops.disk import free_bytes
from edge_agent.store.database import CommitResult, Store

if TYPE_CHECKING:
    from edge_agent.sync.client import SyncReport

logger = logging.getLogger(__name__)

#: Commit latency buckets, seconds: group commit takes milliseconds; a broker backlog or a
#: pause for disk space takes minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class Metrics:
    """Every metric of one agent, and its text exposition for ``GET /metrics``."""

    def __init__(self, settings: Settings, clock: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stored = Counter(
            "edge_agent_events_stored", "New events committed, by event name", ["event"], registry=r
        )
        self.dead_letters = Counter(
            "edge_agent_dead_letters",
            "Rejected payloads kept as dead letters (redeliveries count again), by reason",
            ["reason"],
            registry=r,
        )
        self.unkept = Counter(
            "edge_agent_dead_letters_unkept",
            "Rejected payloads over the dead letters' budget ([store] dead_letters_*): counted "
            "in `edge-agent dead-letters list`, not kept",
            registry=r,
        )
        self.links_refused = Counter(
            "edge_agent_visit_links_refused",
            "Identified events stored without linking their visit, which their device may not "
            "link ([privacy] link_devices)",
            registry=r,
        )
        self.duplicates = Counter(
            "edge_agent_duplicates",
            "Events received again with a messageId already stored",
            registry=r,
        )
        self.commit_seconds = Histogram(
            "edge_agent_commit_seconds",
            "Seconds from the receiver taking a batch's first message to the commit holding it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.unacked = Gauge(
            "edge_agent_ingest_unacked_events",
            "Messages received from the broker and not yet acknowledged: in the receiver, in the "
            "pipe to the ingest loop or being committed (as the receiver last reported)",
            registry=r,
        )
        self.disk_pressure = Gauge(
            "edge_agent_disk_pressure",
            "1 while free space is under [store] min_free_mb and new events wait at the broker",
            registry=r,
        )
        self.sync_runs = Counter(
            "edge_agent_sync_runs",
            "Sync runs by outcome: done, retry (network or central busy), error, skipped",
            ["outcome"],
            registry=r,
        )
        for outcome in ("done", "retry", "error", "skipped"):
            self.sync_runs.labels(outcome)  # shown at 0 before the first run
        self.sync_batches = Counter(
            "edge_agent_sync_batches_sent", "Batches central accepted", registry=r
        )
        self.sync_items = Counter(
            "edge_agent_sync_items_sent", "Items central accepted, by kind", ["kind"], registry=r
        )
        self.sync_refused = Counter(
            "edge_agent_sync_items_refused",
            "Items central refused for good (kept in sync_dead_letters)",
            registry=r,
        )
        r.register(StoreFigures(settings, clock))

    def committed(
        self,
        result: CommitResult,
        reasons: Iterable[str],
        first_received_ms: Iterable[int],
        done_ms: int,
    ) -> None:
        """Count one commit: its new events, dead letters and duplicates, and the latency of
        each batch it held (``first_received_ms``: when each batch's first message came)."""
        for event, n in result.by_event.items():
            self.stored.labels(event).inc(n)
        for reason in reasons:
            self.dead_letters.labels(reason).inc()
        if result.duplicates:
            self.duplicates.inc(result.duplicates)
        if result.unkept:
            self.unkept.inc(result.unkept)
        if result.links_refused:
            self.links_refused.inc(len(result.links_refused))
        for received in first_received_ms:
            # Receiver and loop share the machine's clock; a step backwards is not a latency.
            self.commit_seconds.observe(max(0, done_ms - received) / 1000)

    def waiting(self, events: int) -> None:
        """Set how many received messages are not acknowledged yet."""
        self.unacked.set(max(0, events))

    def disk_short(self, short: bool) -> None:
        """Record whether ingest waits for disk space."""
        self.disk_pressure.set(1 if short else 0)

    def synced(self, report: SyncReport | None) -> None:
        """Count a sync run from its report (None: the run failed with an error)."""
        if report is None:
            self.sync_runs.labels("error").inc()
            return
        outcome = "skipped" if report.skipped else "retry" if report.problem else "done"
        self.sync_runs.labels(outcome).inc()
        self.sync_batches.inc(report.batches)
        for kind, n in report.sent.items():
            self.sync_items.labels(kind).inc(n)
        self.sync_refused.inc(report.refused)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (reads the store)."""
        return generate_latest(self.registry)


class StoreFigures(Collector):
    """Figures read when scraped: the outbox, the serving models, today's epsilon, free space.

    Each scrape opens its own read-only connection (SQLite connections stay in the thread
    that made them, and the HTTP server answers from several).
    """

    def __init__(self, settings: Settings, clock: Callable[[], int]) -> None:
        self.settings = settings
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the registry then never reads the store just to learn names."""
        return []

    def collect(self) -> Iterator[Metric]:
        """The figures; a store that cannot be read is reported, not raised."""
        s = self.settings
        readable = GaugeMetricFamily(
            "edge_agent_store_readable", "1 when the figures read from SQLite are in this scrape"
        )
        try:
            figures = list(self._from_store())
        except StorageError as exc:
            logs.log(logger, logging.WARNING, "metrics_store_unreadable", str(exc))
            figures = []
        readable.add_metric([], 1 if figures else 0)
        yield readable
        yield from figures
        disk = GaugeMetricFamily(
            "edge_agent_disk_free_bytes", "Free space on the disk of the database's folder"
        )
        try:
            disk.add_metric([], free_bytes(s.database.parent))
        except StorageError as exc:
            logs.log(logger, logging.WARNING, "metrics_disk_unreadable", str(exc))
        yield disk
        floor = GaugeMetricFamily(
            "edge_agent_disk_min_free_bytes", "[store] min_free_mb, in bytes (0: no check)"
        )
        floor.add_metric([], s.store.min_free_mb * MB)
        yield floor

    def _from_store(self) -> Iterator[Metric]:
        # Imported here: the registry loads onnxruntime, which only scrapes need from here.
        from edge_agent.serving.models import Models

        s = self.settings
        with Store.open(s.database, readonly=True) as store:
            depth = store.outbox.depth()
            losses = store.outbox.losses()
            serving = [e for e in Models(store, s.models_folder).entries() if e.status == "serving"]
            spent = store.insights.epsilon_spent(budget_day(self.clock(), zone(s.site.timezone)))
        queued = GaugeMetricFamily(
            "edge_agent_outbox_items", "Items queued for central, by kind", labels=["kind"]
        )
        for kind in sorted(set(PRIORITY) | set(depth)):
            queued.add_metric([kind], depth.get(kind, 0))
        yield queued
        lost = CounterMetricFamily(
            "edge_agent_outbox_lost_items",
            "Items the outbox gave up on (quota, expiry, withdrawn consent, refused), by class "
            "and reason, since the database was created",
            labels=["class", "reason"],
        )
        for kind, reasons in sorted(losses.items()):
            for reason, count in sorted(reasons.items()):
                lost.add_metric([kind, reason], count)
        yield lost
        models = InfoMetricFamily(
            "edge_agent_model", "The version serving, by model name", labels=["model"]
        )
        for entry in serving:
            models.add_metric([entry.name], {"version": entry.version})
        yield models
        epsilon = GaugeMetricFamily(
            "edge_agent_dp_epsilon_spent_today",
            "Differential-privacy epsilon spent by releases of today's figures (the site's day)",
        )
        epsilon.add_metric([], spent)
        yield epsilon
        budget = GaugeMetricFamily(
            "edge_agent_dp_epsilon_per_day", "[insights] epsilon_per_day, the daily budget"
        )
        budget.add_metric([], s.insights.epsilon_per_day)
        yield budget
