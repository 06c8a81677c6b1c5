"""When the use cases run, on apscheduler 3.x: each job calls one of `edge_agent.app`, logs
what came of it, and keeps the scheduler running whatever it raised."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from edge_agent import logs
from edge_agent.app.insights import compute_due
from edge_agent.app.retention import expire_once
from edge_agent.config import Settings
from edge_agent.core.sync import site_offset
from edge_agent.errors import EdgeAgentError, StorageError

if TYPE_CHECKING:
    from edge_agent.app.venue import VenueShare
    from edge_agent.sync.client import SyncReport

logger = logging.getLogger(__name__)


def _insights_job(settings: Settings, clock: Callable[[], int]) -> None:
    try:
        computed = compute_due(settings, clock())
    except StorageError as exc:
        logs.log(logger, logging.ERROR, "insights_failed", str(exc))
        return
    if computed:
        logs.log(logger, logging.INFO, "insights_done", "hour cells computed", hours=computed)


def _retention_job(settings: Settings, clock: Callable[[], int]) -> None:
    try:
        removed = expire_once(settings, clock())
    except StorageError as exc:
        # Retried at the next run; nothing is lost by deleting later.
        logs.log(logger, logging.ERROR, "retention_failed", str(exc))
        return
    logs.log(logger, logging.INFO, "retention_done", "expired rows removed", **removed)


def _sync_job(
    settings: Settings,
    clock: Callable[[], int],
    on_sync: Callable[[SyncReport | None], None] = lambda _report: None,
) -> None:
    # Imported here: httpx is only needed on a site that syncs.
    from edge_agent.app.sync import send

    try:
        report = send(settings, clock())
    except EdgeAgentError as exc:
        logs.log(logger, logging.ERROR, "sync_failed", str(exc))
        on_sync(None)
        return
    on_sync(report)
    if report.skipped is None:
        logs.log(logger, logging.INFO, "sync_done", "outbox drained", **report.as_dict())


def _venue_job(venue: VenueShare, clock: Callable[[], int]) -> None:
    try:
        venue.share(clock())
    except StorageError as exc:
        # The peers keep this agent's last document meanwhile, and show it stale in time.
        logs.log(logger, logging.ERROR, "venue_share_failed", str(exc))


VENUE_EXECUTOR = "venue"
NIGHTLY_HOUR_UTC = 3
NIGHTLY_TIMEOUT_S = 3 * 3600


#: How long the periodic model jobs may take before they are stopped (and run again later).
MODEL_JOB_TIMEOUT_S = 15 * 60


def _in_child(settings: Settings, arguments: list[str], timeout_s: float) -> None:
    """Run ``edge-agent ARGUMENTS`` in a process of its own, and log what it printed.

    Model work loads onnxruntime and model files (checking a release, training, a shadow
    evaluation); in the agent's process that memory would stay its peak for good, and the
    agent must keep the footprint of ingest. The child reads the same config file and
    environment, and writes through its own connection like any other job.
    """
    config = [] if settings.source == "defaults" else ["--config", settings.source]
    command = [sys.executable, "-m", "edge_agent", *config, *arguments]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        logs.log(
            logger, logging.ERROR, "model_job_failed", "ran over its time",
            command=" ".join(arguments), timeout_s=timeout_s,
        )  # fmt: skip
        return
    # Exit 1 is an answer ("nothing to learn yet", "not promoted"); above it, an error.
    logs.log(
        logger,
        logging.INFO if done.returncode in (0, 1) else logging.ERROR,
        "model_job_done",
        (done.stdout + done.stderr).strip()[-2000:],
        command=" ".join(arguments),
        exitcode=done.returncode,
    )


def _train_job(settings: Settings, clock: Callable[[], int]) -> None:
    _in_child(settings, ["models", "train", "--quick"], MODEL_JOB_TIMEOUT_S)


def _nightly_job(settings: Settings, clock: Callable[[], int]) -> None:
    # Fitting the personal model needs several times the memory of serving it.
    _in_child(settings, ["models", "train"], NIGHTLY_TIMEOUT_S)


def _pull_job(settings: Settings, clock: Callable[[], int]) -> None:
    # Central publishes personal and complement models; trending is always the site's own.
    from edge_agent.core.recommend import COMPLEMENTS, PERSONAL

    _in_child(settings, ["models", "pull", PERSONAL, COMPLEMENTS], MODEL_JOB_TIMEOUT_S)


def start(
    settings: Settings,
    clock: Callable[[], int],
    on_sync: Callable[[SyncReport | None], None] = lambda _report: None,
    venue: VenueShare | None = None,
) -> BackgroundScheduler:
    """Start the agent's scheduler: retention, insights, training the site's own models and
    pulling releases from central (all run at start-up, then periodically), and sync when
    ``[sync] url`` is set (first at a per-site offset, then every ``every_s`` with up to
    ``jitter_s`` of jitter, so a fleet spreads out) and the check-ins (at once, then every
    ``check_in_s``); with ``venue``, its share every ``[venue] share_every_s``, from now.

    Args:
        settings: the agent's settings.
        clock: the current time in epoch milliseconds.
        on_sync: told each sync run's report (None: the run failed with an error).
        venue: the venue link, when ``[venue] share`` is on.
    """
    scheduler = BackgroundScheduler(timezone="UTC")
    now = datetime.now(UTC)
    train_first = now if settings.models.train_on_start else None
    for name, job, every_s, first in (
        ("retention", _retention_job, settings.retention.every_s, now),
        ("insights", _insights_job, settings.insights.every_s, now),
        ("train", _train_job, settings.models.train_every_s, train_first),
        *(
            [("pull", _pull_job, settings.models.pull_every_s, now)]
            if settings.sync.url and settings.models.publisher_key
            else []
        ),
    ):
        # One run at a time, missed runs folded into one: each job catches up by itself.
        scheduler.add_job(
            job,
            "interval",
            seconds=every_s,
            args=(settings, clock),
            id=name,
            max_instances=1,
            coalesce=True,
            # None: apscheduler's own first run, one interval from now.
            **({"next_run_time": first} if first is not None else {}),
        )
    # The personal model is refitted once a night, when the shop is quiet.
    scheduler.add_job(
        _nightly_job,
        "cron",
        hour=NIGHTLY_HOUR_UTC,
        args=(settings, clock),
        id="nightly",
        max_instances=1,
        coalesce=True,
    )
    if venue is not None:
        # A thread of its own, whose every run apscheduler would log at INFO: every few
        # seconds, that would drown the journal.
        scheduler.add_executor(ThreadPoolExecutor(1), VENUE_EXECUTOR)
        logging.getLogger(f"apscheduler.executors.{VENUE_EXECUTOR}").setLevel(logging.WARNING)
        scheduler.add_job(
            _venue_job,
            "interval",
            seconds=settings.venue.share_every_s,
            args=(venue, clock),
            id="venue",
            executor=VENUE_EXECUTOR,
            max_instances=1,
            coalesce=True,
            next_run_time=now,
        )
    if settings.sync.url:
        # Imported here: httpx is only needed on a site that syncs.
        from edge_agent.app.checkin import CheckIns

        check_ins = CheckIns(settings, clock())
        told = on_sync

        def on_sync(report: SyncReport | None) -> None:
            told(report)
            check_ins.synced(report)

        # Its own job, apart from the sync: it goes on while the sync fails or backs off.
        scheduler.add_job(
            lambda: check_ins.check_in(clock()),
            "interval",
            seconds=settings.sync.check_in_s,
            id="check_in",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC),
        )
        offset = site_offset(settings.site.id, settings.sync.every_s)
        scheduler.add_job(
            _sync_job,
            "interval",
            seconds=settings.sync.every_s,
            jitter=settings.sync.jitter_s or None,
            args=(settings, clock, on_sync),
            id="sync",
            max_instances=1,
            coalesce=True,
            next_run_time=datetime.now(UTC) + timedelta(seconds=offset),
        )
    scheduler.start()
    return scheduler
