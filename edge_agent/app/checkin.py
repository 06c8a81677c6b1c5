"""The check-in's use case: every ``[sync] check_in_s`` the agent tells central how it is,
whether or not it has anything to send (docs/fleet-health.md).

The report is read from what ``edge-agent status`` and ``/readyz`` read (the store's counters
and state, the model registry, the data disk's space) on a read-only connection of its own,
so it never holds ingest up; it is sent apart from the sync, so a sync that fails or backs
off does not stop it. A failed check-in is logged once per outage, and once when they resume.
"""

from __future__ import annotations

import collections
import logging
import threading

from edge_agent import __version__, logs
from edge_agent.config import Settings
from edge_agent.core.catalogue import MAX_NAME
from edge_agent.core.fleet import HOUR_MS, CheckIn
from edge_agent.core.wireform import BROKER_STATES, checkin_problem
from edge_agent.errors import EdgeAgentError
from edge_agent.ops.disk import space
from edge_agent.store.database import Store
from edge_agent.sync.checkin import post
from edge_agent.sync.client import LAST_OK_KEY, SyncReport, client_for

logger = logging.getLogger(__name__)


class CheckIns:
    """One agent's check-ins: what each reports and what the earlier ones measured.

    Kept in the agent's process: the duplicates of the last hour (the store keeps only their
    running total), the broker's state since it last changed (the receiver records every
    failed reconnection again), the clock offset central's answers showed, and the products
    central last asked the names of (the top products it shows, docs/fleet-health.md).
    """

    def __init__(self, settings: Settings, started_ms: int) -> None:
        self.settings = settings
        self.started_ms = started_ms
        self.clock_offset_s: float | None = None
        self.failing_since_ms: int | None = None
        self._broker: tuple[str, int | None] | None = None
        self._duplicates: collections.deque[tuple[int, int]] = collections.deque()
        self._wanted: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def synced(self, report: SyncReport | None) -> None:
        """Take the clock offset a sync run measured (None: the run failed)."""
        if report is not None and report.clock_offset_s is not None:
            with self._lock:
                self.clock_offset_s = report.clock_offset_s

    def report(self, now_ms: int) -> CheckIn:
        """The check-in as of ``now_ms``.

        Raises:
            StorageError: the database or the data disk cannot be read.
        """
        s = self.settings
        with self._lock:
            wanted = self._wanted
        with Store.open(s.database, readonly=True) as store:
            status = store.status()
            names = store.catalogue.names_of(wanted)
            oldest = store.outbox.oldest_ms()
            dead_letters = store.dead_letters.seen_since(now_ms - HOUR_MS)
            models = {e.name: e.version for e in store.registry.entries() if e.status == "serving"}
        free, total = space(s.database.parent)
        state = status.broker
        last_ok = state.get(LAST_OK_KEY)
        broker, since = self._broker_since(state.get("broker"))
        with self._lock:
            offset = self.clock_offset_s
        return CheckIn(
            site=s.site.id,
            sent_ms=now_ms,
            version=__version__,
            uptime_s=max(0, now_ms - self.started_ms) // 1000,
            name=s.site.name,
            timezone=s.site.timezone,
            currency=s.site.currency,
            broker=broker,
            broker_since_ms=since,
            outbox_items=sum(status.outbox.values()),
            outbox_oldest_ms=oldest,
            dead_letters_last_hour=dead_letters,
            duplicates_last_hour=self._last_hour(now_ms, status.duplicates),
            disk_free_bytes=free,
            disk_free_share=round(free / total, 4) if total else 0.0,
            models=models,
            last_sync_ms=None if last_ok is None else int(last_ok[0]),
            clock_offset_s=None if offset is None else round(offset),
            # A name learned from a till may be longer than the catalogue's own limit.
            products={p: names.get(p, "")[:MAX_NAME] for p in wanted},
        )

    def _broker_since(self, state: tuple[str, int] | None) -> tuple[str, int | None]:
        value, at = state if state is not None else ("unknown", None)
        value = value if value in BROKER_STATES else "unknown"
        with self._lock:
            if self._broker is None or self._broker[0] != value:
                self._broker = (value, at)
            return self._broker

    def _last_hour(self, now_ms: int, total: int) -> int:
        """How much the running total of duplicates grew in the last hour (since the agent
        started, when that was less than an hour ago)."""
        with self._lock:
            samples = self._duplicates
            samples.append((now_ms, total))
            while len(samples) > 1 and samples[1][0] <= now_ms - HOUR_MS:
                samples.popleft()
            return max(0, total - samples[0][1])

    def check_in(self, now_ms: int) -> str | None:
        """Report to central once; returns why it failed (None: central took it). The first
        failure of an outage is logged, and the first success after it."""
        problem: str | None
        try:
            document = self.report(now_ms).as_document()
        except EdgeAgentError as exc:
            problem = f"the report cannot be read: {exc}"
        else:
            problem = checkin_problem(document)
            if problem is None:
                try:
                    with client_for(self.settings) as client:
                        answer = post(self.settings, client, document)
                except EdgeAgentError as exc:
                    problem = str(exc)
                else:
                    problem = answer.problem
                    with self._lock:
                        if answer.clock_offset_s is not None:
                            self.clock_offset_s = answer.clock_offset_s
                        if problem is None:
                            self._wanted = answer.products_wanted
            else:
                problem = f"the report is not in the form central takes: {problem}"
        self._tell(problem, now_ms)
        return problem

    def _tell(self, problem: str | None, now_ms: int) -> None:
        if problem is not None and self.failing_since_ms is None:
            self.failing_since_ms = now_ms
            logs.log(
                logger,
                logging.WARNING,
                "check_in_failed",
                f"central did not take the agent's check-in (said once per outage; the agent "
                f"keeps trying every {self.settings.sync.check_in_s} s): {problem}",
            )
        elif problem is None and self.failing_since_ms is not None:
            logs.log(
                logger,
                logging.INFO,
                "check_in_resumed",
                "central takes the agent's check-ins again",
                failing_s=(now_ms - self.failing_since_ms) // 1000,
            )
            self.failing_since_ms = None
