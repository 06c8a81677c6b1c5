"""The agent's ingest loop: the receiver process's batches validated, pseudonymised and
committed, then acknowledged; the scheduler and the screens' server started beside it."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from multiprocessing.connection import Connection
from types import FrameType
from typing import TYPE_CHECKING, Any

from edge_agent import logs, schemas
from edge_agent.app import schedule as jobs
from edge_agent.app.clock import now_ms
from edge_agent.app.site import writing_store
from edge_agent.config import Settings
from edge_agent.core.deadletters import DeadLetter, dead_letter
from edge_agent.core.events import (
    Inbound,
    Limits,
    Parsed,
    Reason,
    Rejection,
    Schemas,
    parse_payload,
)

# Re-exported: `edge-agent status` judges the heartbeat by the same period.
from edge_agent.core.health import HEARTBEAT_EVERY_S as HEARTBEAT_EVERY_S
from edge_agent.core.identity import (
    SiteKey,
    holders_hashed,
    imitates_pseudonym,
    named_people,
    pseudonymise,
    redact,
)
from edge_agent.core.topics import SiteId
from edge_agent.errors import StorageError
from edge_agent.mqtt import receiver as mqtt
from edge_agent.mqtt.receiver import Item, ReceiverOptions
from edge_agent.ops import keyfile
from edge_agent.ops.disk import DiskWatch
from edge_agent.ops.metrics import Metrics
from edge_agent.service import Notifier, service_manager, under_journald
from edge_agent.store.database import Store
from edge_agent.store.events import Received
from edge_agent.store.lock import DatabaseLock
from edge_agent.web.changes import Changes, touched

if TYPE_CHECKING:
    import uvicorn

    from edge_agent.app.venue import VenueShare


logger = logging.getLogger(__name__)


_RETRY_COMMIT_S = 1.0


#: A receiver silent this long with its pipe empty is stalled; this long, it is restarted.
_RECEIVER_STALL_S = 5.0
_RECEIVER_RESTART_S = 30.0

#: How often the loop looks again while it waits for disk space.
_SPACE_WAIT_S = 0.2


# More than this many events waiting in the pipe are committed together: one fsync for all.
_GROUP_MAX_EVENTS = 5000


def limits_of(settings: Settings) -> Limits:
    """The core's inbound bounds from the ``[site]``, ``[ingest]`` and ``[plausibility]``
    settings."""
    i = settings.ingest
    return Limits(
        site=SiteId(settings.site.id),
        max_payload_bytes=i.max_payload_bytes,
        max_batch_events=i.max_batch_events,
        max_depth=i.max_depth,
        max_future_skew_ms=i.max_future_skew_s * 1000,
        max_past_age_ms=i.max_past_age_s * 1000,
        plausibility=settings.plausibility.bounds,
    )


def classify(
    items: Iterable[Item],
    limits: Limits,
    compiled: Schemas,
    raw_limit: int,
    key: SiteKey,
    replaying: bool = False,
) -> tuple[list[Received], list[DeadLetter]]:
    """Validate inbound messages into pseudonymised events to store and dead letters to keep.

    ``replaying``: the messages are dead letters, whose ``pseudonym:`` ids are the agent's
    own; from devices such an id is refused (`Reason.RESERVED_ID`).
    """
    received: list[Received] = []
    rejected: list[DeadLetter] = []
    for item in items:
        message = Inbound(*item)
        topic, payload, received_ms = message.topic, message.payload, message.received_ms
        try:
            parsed = parse_payload(message, limits, compiled)
        except Exception as exc:
            # A bug must not cost the event nor stop ingest: keep it, replay it once fixed.
            logs.log(
                logger, logging.ERROR, "validation_crashed", "validator raised", error=repr(exc)
            )
            crash = Rejection(Reason.INTERNAL_ERROR, f"validator raised {exc!r}"[:300], payload)
            parsed = Parsed((), (crash,))
        rejections = list(parsed.rejections)
        for event in parsed.events:
            if not replaying and event.user_id is not None and imitates_pseudonym(event.user_id):
                detail = "userId has the agent's own pseudonym form (pseudonym:...): refused"
                rejections.append(Rejection(Reason.RESERVED_ID, detail, event.body.encode()))
                continue
            stored, identity = pseudonymise(event, key, replaying)
            received.append(Received(stored, received_ms, identity, topic))
        for rejection in rejections:
            # A dead letter keeps no raw userId nor traits either; see identity.redact.
            kept = replace(rejection, raw=redact(rejection.raw, key, replaying))
            people = named_people(kept.raw[:raw_limit], key)
            rejected.append(dead_letter(message, kept, raw_limit, people))
    return received, rejected


class Agent:
    """The ingest loop: receiver process -> validate -> commit -> ack."""

    #: Opened by `run`, which may first have to wait for disk space.
    store: Store

    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        # The receiver process would only log a bad TLS file or password file and retry
        # forever; checked here, it stops the agent with one line naming the file.
        mqtt.check(settings.mqtt)
        # Before the database: one agent per database, and no restore under a running agent.
        self.lock = DatabaseLock.acquire(settings.database, "agent")
        self.key = keyfile.load_or_create(settings.site_key)
        self.schemas = schemas.load()
        self.limits = limits_of(settings)
        self.stop_requested = threading.Event()
        self.totals = {"stored": 0, "duplicates": 0, "dead_letters": 0}
        # News for the screens' streams, when the agent serves screens.
        self.changes = Changes() if settings.http.enabled else None
        self.metrics = Metrics(settings, now_ms)
        self.disk = DiskWatch(
            settings.database.parent, settings.store.min_free_mb, self.metrics.disk_short
        )
        self.notifier = notifier if notifier is not None else Notifier()
        self.broker_connection = "connecting"
        self.ready_sent = False
        # When the receiver was last heard from, and whether it is taken for stalled.
        self.receiver_heard = time.monotonic()
        self.receiver_stalled = False

    def _options(self) -> ReceiverOptions:
        s = self.settings
        return ReceiverOptions(
            mqtt=s.mqtt,
            client_id=s.mqtt.effective_client_id(s.site.id),
            topic=s.mqtt.topic.replace("{site}", s.site.id),
            max_payload_bytes=s.ingest.max_payload_bytes,
            keep_bytes=s.store.dead_letter_raw_bytes,
            batch_max_events=s.ingest.commit_max_events,
            batch_max_ms=s.ingest.commit_max_ms,
            queue_max_events=s.ingest.queue_max_events,
            queue_max_bytes=s.ingest.queue_max_mb * 1024 * 1024,
            log_level=s.log.level,
            journald=under_journald(),
        )

    def _start_receiver(self) -> tuple[subprocess.Popen[bytes], Connection]:
        # A plain child process over a socket pair: multiprocessing's spawn would also start
        # its resource-tracker process, 13 MB of memory for nothing this agent uses.
        ours, theirs = socket.socketpair()
        process = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.mqtt.receiver", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        pipe = Connection(ours.detach())
        pipe.send(self._options())
        self.receiver_heard = time.monotonic()
        return process, pipe

    def request_stop(self, *_: Any) -> None:
        """Ask the loop to finish the current commit and stop."""
        self.stop_requested.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT stop the agent cleanly."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        self.request_stop()

    def run(self) -> None:
        """Ingest until asked to stop. The receiver process is restarted if it dies."""
        s = self.settings
        store = self._open_store()
        if store is None:
            self.lock.release()
            return
        self.store = store
        # Letters kept before their people were indexed (an upgrade): index them once, so an
        # erasure never has to read them all.
        key = self.key
        try:
            indexed = store.dead_letters.index_people(lambda raw: named_people(raw, key))
        except StorageError as exc:  # e.g. a full disk: erasures read those letters meanwhile
            logs.log(logger, logging.WARNING, "dead_letters_not_indexed", str(exc))
        else:
            if indexed:
                logs.log(logger, logging.INFO, "dead_letters_indexed", "dead letters indexed",
                         letters=indexed)  # fmt: skip
        try:
            hashed = store.events.hash_holders(lambda body: holders_hashed(body, key))
        except StorageError as exc:  # stored raw until the next start
            logs.log(logger, logging.WARNING, "holders_not_hashed", str(exc))
        else:
            if hashed:
                logs.log(logger, logging.INFO, "holders_hashed", "ticket and badge ids hashed",
                         events=hashed)  # fmt: skip
        logs.log(
            logger,
            logging.INFO,
            "agent_starting",
            "agent starting",
            site=s.site.id,
            database=str(s.database),
            broker=f"{s.mqtt.host}:{s.mqtt.port}",
            schema_version=self.schemas.version,
        )
        self._note("heartbeat", "alive")
        venue = self._start_venue()
        scheduler = jobs.start(s, now_ms, on_sync=self.metrics.synced, venue=venue)
        server = _serve_http(s, self.changes, self.metrics) if self.changes else None
        process, pipe = self._start_receiver()
        last_progress = time.monotonic()
        try:
            while not self.stop_requested.is_set():
                self._report_to_systemd()
                if process.poll() is not None:
                    logs.log(
                        logger,
                        logging.ERROR,
                        "receiver_died",
                        "MQTT receiver exited; restarting",
                        exitcode=process.returncode,
                    )
                    pipe.close()
                    self.receiver_stalled = False
                    self.broker_connection = "disconnected"
                    self._note("broker", "disconnected")
                    time.sleep(_RETRY_COMMIT_S)
                    process, pipe = self._start_receiver()
                    continue
                try:
                    if not self._waiting_for_space():
                        self._drain(pipe, process)
                except (EOFError, OSError):
                    continue  # the receiver went away mid-read; the liveness check restarts it
                if time.monotonic() - last_progress >= HEARTBEAT_EVERY_S:
                    last_progress = time.monotonic()
                    # `status` tells a running agent from one that died without saying so.
                    self._note("heartbeat", "alive")
                    logs.log(
                        logger, logging.INFO, "ingest_progress", "ingest totals", **self.totals
                    )
        finally:
            self.notifier.stopping()
            if server is not None:
                server.should_exit = True
            scheduler.shutdown(wait=True)
            if venue is not None:
                venue.stop()
            self._stop_receiver(process, pipe)
            self._note("heartbeat", "stopped")
            self._note("broker", "disconnected")
            self.store.close()
            self.lock.release()
            self.notifier.close()
            logs.log(logger, logging.INFO, "agent_stopped", "agent stopped", **self.totals)

    def _start_venue(self) -> VenueShare | None:
        """The venue link, connecting, when ``[venue] share`` is on."""
        if not self.settings.venue.share:
            return None
        # Imported here: a shop alone never loads it.
        from edge_agent.app.venue import VenueShare

        venue = VenueShare(self.settings, now_ms)
        venue.start()
        return venue

    def _note(self, key: str, value: str) -> None:
        """Record the agent's or the broker's state for ``status``; on a disk too full even for
        that, say so and go on: ingest itself waits for space (`_waiting_for_space`)."""
        try:
            self.store.state.set(key, value, now_ms())
        except StorageError as exc:
            logs.log(logger, logging.WARNING, "state_unwritten", str(exc), key=key, value=value)

    def _open_store(self) -> Store | None:
        """The site's database, opened; None when asked to stop first.

        On a full disk SQLite cannot even open it (its WAL index needs a few pages): the
        agent then waits, saying so, instead of exiting, which under systemd would end in the
        start limit and a site that stays down once space is freed.
        """
        s = self.settings
        waiting = False
        while True:
            try:
                return writing_store(s)
            except StorageError as exc:
                if not self.disk.is_short():
                    raise
                if not waiting:
                    waiting = True
                    logs.log(
                        logger, logging.ERROR, "disk_full_at_start",
                        f"the database cannot be opened with the disk this full ({exc}): "
                        "waiting for space; devices' events wait at the broker",
                    )  # fmt: skip
                    # Up and saying why, rather than failing the start and being retried into
                    # systemd's start limit.
                    self.ready_sent = True
                    self.notifier.ready(f"waiting for disk space on {s.database.parent}")
                self.notifier.alive()
            if self.stop_requested.wait(_SPACE_WAIT_S * 5):
                return None

    def _waiting_for_space(self) -> bool:
        """Whether the data disk is short of space; if so, wait a moment.

        While it is, the pipe is not read at all: nothing is committed nor acknowledged, the
        receiver stops reading from the broker once its queue (or the pipe) is full, and the
        broker keeps every message of the persistent session until ingest resumes.
        """
        if not self.disk.is_short():
            return False
        self.stop_requested.wait(_SPACE_WAIT_S)
        return True

    def _drain(self, pipe: Connection, process: subprocess.Popen[bytes]) -> None:
        if not pipe.poll(0.2):
            self._check_receiver(process)
            return
        batches: list[tuple[int, list[Item]]] = []
        count = unacked = 0
        while count < _GROUP_MAX_EVENTS and pipe.poll(0):
            message = pipe.recv()
            self._heard_receiver()
            if message[0] == "batch":
                batches.append((message[1], message[2]))
                count += len(message[2])
                unacked = message[3]
            elif message[0] == "broker":
                self._broker_state(message[1], message[2])
        if batches:
            self._commit(batches)
            for seq, _ in batches:
                pipe.send(("ack", seq))
            self.metrics.waiting(unacked - count)

    def _check_receiver(self, process: subprocess.Popen[bytes]) -> None:
        """Judge a receiver that has gone quiet while its pipe is empty.

        An empty pipe means the receiver could have said it is alive (it says so every
        second) and did not: it is stopped (SIGSTOP), or its main thread hangs. The broker
        state then says ``stalled`` (so ``/readyz`` stops saying connected), and past
        `_RECEIVER_RESTART_S` the receiver is killed, which the loop answers by starting a new
        one; what it had not acknowledged the broker delivers again.
        """
        silent_s = time.monotonic() - self.receiver_heard
        if silent_s >= _RECEIVER_STALL_S and not self.receiver_stalled:
            self.receiver_stalled = True
            logs.log(
                logger, logging.ERROR, "receiver_stalled",
                f"the MQTT receiver process has not answered for {silent_s:.0f} s",
                pid=process.pid,
            )  # fmt: skip
            self._note("broker", "stalled")
        if silent_s >= _RECEIVER_RESTART_S and process.poll() is None:
            logs.log(
                logger, logging.ERROR, "receiver_killed",
                f"the MQTT receiver process has not answered for {silent_s:.0f} s: restarting it",
                pid=process.pid,
            )  # fmt: skip
            process.kill()

    def _heard_receiver(self) -> None:
        self.receiver_heard = time.monotonic()
        if self.receiver_stalled:
            self.receiver_stalled = False
            logs.log(logger, logging.INFO, "receiver_answering", "the MQTT receiver answers again")
            self._note("broker", self.broker_connection)

    def _broker_state(self, state: str, detail: str) -> None:
        level = logging.INFO if state == "connected" else logging.WARNING
        logs.log(logger, level, f"broker_{state}", f"broker {state}", detail=detail)
        self._note("broker", state)
        self._tell_systemd_broker(state)

    def _tell_systemd_broker(self, state: str) -> None:
        self.broker_connection = state
        # Ready means the database is open (since __init__) and the broker confirmed the
        # subscription: from here on events flow. systemd holds back units ordered after this
        # one, and `systemctl start` returns, only then.
        if state == "connected" and not self.ready_sent:
            self.ready_sent = True
            self.notifier.ready(self._status_line())

    def _report_to_systemd(self) -> None:
        # Called once per turn of the loop, i.e. after a commit or an idle poll of at most
        # 0.2 s: a ping vouches that ingest moves. A commit that hangs, or that keeps failing
        # in _commit's retry loop, never comes back here, so the pings stop and systemd
        # restarts the agent after WatchdogSec. Nothing is lost by that: what was not committed
        # was not acknowledged, and the broker delivers it again.
        self.notifier.alive()
        self.notifier.status(self._status_line())

    def _status_line(self) -> str:
        t = self.totals
        return (
            f"stored {t['stored']}, duplicates {t['duplicates']}, "
            f"dead letters {t['dead_letters']}, broker {self.broker_connection}"
        )

    def _commit(self, batches: list[tuple[int, list[Item]]]) -> None:
        received, rejected = classify(
            (item for _, items in batches for item in items),
            self.limits,
            self.schemas,
            self.settings.store.dead_letter_raw_bytes,
            self.key,
        )
        while True:
            try:
                result = self.store.commit(received, rejected, self.schemas.version, now_ms())
                break
            except StorageError as exc:
                # Nothing is acknowledged until this succeeds, so waiting loses nothing: the
                # receiver stops reading once its queue is full and the broker keeps the rest.
                logs.log(logger, logging.ERROR, "commit_failed", str(exc))
                if self.stop_requested.wait(_RETRY_COMMIT_S):
                    raise
        if self.changes is not None:
            self.changes.seen(*touched(r.event for r in received))
        letters = [*rejected, *result.refused]
        self.metrics.committed(
            result,
            (letter.reason.value for letter in letters),
            (items[0][2] for _, items in batches if items),
            now_ms(),
        )
        self.totals["stored"] += result.stored
        self.totals["duplicates"] += result.duplicates
        self.totals["dead_letters"] += len(letters)
        for why in result.links_refused.values():
            logs.log(logger, logging.WARNING, "link_refused", "visit not linked: " + why)
        for letter in letters:
            logs.log(
                logger,
                logging.WARNING,
                "dead_letter",
                "payload rejected",
                reason=letter.reason.value,
                topic=letter.topic,
                sha256=letter.raw_sha256,
            )

    def _stop_receiver(self, process: subprocess.Popen[bytes], pipe: Connection) -> None:
        with contextlib.suppress(OSError):  # it may already be gone
            pipe.send(("stop",))
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(5)
        pipe.close()


def _serve_http(settings: Settings, changes: Changes, metrics: Metrics) -> uvicorn.Server:
    """The staff screens' page and API under uvicorn, in a thread of the agent (stopped with
    it; open streams are cut after a short grace)."""
    import uvicorn

    from edge_agent.slowclients import guarded_http
    from edge_agent.web.app import create_app

    config = uvicorn.Config(
        create_app(settings, now_ms, changes, metrics),
        host=settings.http.host,
        port=settings.http.port,
        log_config=None,
        access_log=False,
        limit_concurrency=128,
        timeout_graceful_shutdown=2,
        http=guarded_http(settings.http.connections_per_client, settings.http.request_timeout_s),
    )
    server = uvicorn.Server(config)
    # Run from a thread, uvicorn leaves the process's signal handlers to the agent.
    threading.Thread(target=server.run, name="http", daemon=True).start()
    logs.log(
        logger, logging.INFO, "http_started", "staff screens listening",
        host=settings.http.host, port=settings.http.port,
    )  # fmt: skip
    return server


def run(settings: Settings) -> None:
    """Run the agent in the foreground until SIGTERM/SIGINT, reporting to systemd when it
    started the agent.

    Raises:
        StorageError: the database is in use by another agent or a restore, or cannot be
            opened (e.g. it was written by a newer edge-agent).
    """
    manager = service_manager()
    agent = Agent(settings, Notifier(manager.notify_socket, manager.watchdog_usec))
    agent.install_signal_handlers()
    agent.run()
