"""Ingest benchmark: the agent against a bare paho subscriber on the same MQTT stream.

Run it with ``python -m bench.ingest``. On a private Mosquitto it measures:

* the sustained rate of a REFERENCE subscriber (paho-mqtt, QoS 1, persistent session, counts
  only and auto-acks) and of the AGENT (validates, commits to SQLite, acks after commit), in
  two modes: "live" (publishers and consumer run together) and "backlog" (the broker first
  queues every event for the consumer's offline session, then the consumer drains it);
* the agent's end-to-end latency (event timestamp -> committed) at half its live rate;
* peak RSS (VmHWM) of the agent's processes and of the reference.

Every publish is checked: the run fails loudly when the broker did not acknowledge every
event. Payloads come from the demo site's simulated stream (fixed seed), re-stamped with the
current time and a unique messageId. Everything it starts is stopped, and its temporary
folder removed, on success, error and Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from queue import Empty
from types import FrameType
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.measure import mb, percentile, vmhwm_kb

# edge_agent is imported inside the functions that need it: the reference subscriber is a
# fresh interpreter that imports this module, and it must stay a bare paho client.

SITE = "bench"
TOPIC_FILTER = "sites/+/devices/+/events"
REFERENCE_CLIENT_ID = "bench-reference"

# The same session settings as the agent's ([mqtt] defaults), so the broker treats both alike.
SESSION_EXPIRY_S = 7 * 24 * 3600
RECEIVE_MAXIMUM = 1000
# paho numbers QoS 1 publishes with a 16-bit id: past 65,535 unacknowledged ones ids collide
# and messages are lost, so each publisher keeps a bounded window in flight (at most the
# broker's max_inflight_messages, which it announces as its Receive Maximum).
WINDOW = 1000

CONNECT_TIMEOUT_S = 15.0
STALL_S = 30.0  # a phase fails when nothing moves for this long
PHASE_CAP_S = 600.0  # and in any case after this long
POLL_S = 0.2
PACE_TICK_S = 0.005

TARGET_RATIO = 0.8
TARGET_P99_MS = 100.0
TARGET_RSS_MB = 100.0

# Placeholders in the payload templates, replaced by a unique id and the publish time.
MID_MARK = b"@@bench-message-id@@"
TS_MARK = b"@@bench-timestamp@@"
_ID_LENGTH = 36  # as long as the simulator's UUIDs, so payload sizes stay realistic

# Publishers are forked: they inherit their pre-built payloads instead of receiving ~80 MB
# by pickle. The reference is spawned: a forked child would count this process's memory
# (every payload) in its own peak RSS.
_FORK = multiprocessing.get_context("fork")
_SPAWN = multiprocessing.get_context("spawn")

Item = tuple[str, bytes]


class BenchError(Exception):
    """The benchmark could not measure what it set out to (lost messages, stalls, crashes)."""


def say(text: str = "") -> None:
    """Print a line at once (the run is long; progress must show)."""
    print(text, flush=True)


def iso_now() -> bytes:
    """The current time as ISO 8601 UTC with microseconds, as a device would stamp it."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z").encode()


def descendants(root: int) -> list[int]:
    """Every process below ``root``, from the ppid field of /proc/*/stat.

    /proc/<pid>/task/*/children is not available on every kernel, so the table is rebuilt.
    """
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat:
                text = stat.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = text[text.rfind(")") + 2 :].split()
        parent_of[int(entry)] = int(fields[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        children = [pid for pid, ppid in parent_of.items() if ppid in frontier]
        found.extend(children)
        frontier = children
    return found


def process_label(pid: int, root: int) -> str:
    """What one of the agent's processes is, from its command line."""
    if pid == root:
        return "agent parent (validate + SQLite)"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "edge_agent.mqtt.receiver" in command:
        return "agent child (paho receiver)"
    return command[:60]


def rate_text(rate: float) -> str:
    """A rate for humans."""
    return f"{rate:,.0f} ev/s"


# --- payloads ---------------------------------------------------------------------------


def build_templates(count: int, seed: int) -> list[Item]:
    """``count`` realistic events of the bench site as JSON with id and time placeholders."""
    from edge_agent.demo.catalogue import load_sales
    from edge_agent.demo.simulate import site_stream

    stream = site_stream(random.Random(seed), 0, SITE, load_sales())
    marks = {"messageId": MID_MARK.decode(), "timestamp": TS_MARK.decode()}
    # An erasure request is not stored and deletes the person's earlier events, so counting
    # stored events would never reach the number published: the bench leaves them out.
    kept = (p for p in stream if p.payload.get("event") != "Erasure Requested")
    return [
        (publication.topic, orjson.dumps({**publication.payload, **marks}))
        for publication in itertools.islice(kept, count)
    ]


def message_id(prefix: str, index: int) -> bytes:
    """A unique messageId of a phase; the prefix lets the store's index select the phase."""
    return f"{prefix}-{index:0{_ID_LENGTH - len(prefix) - 1}d}".encode()


def stamped(templates: Sequence[Item], prefix: str, count: int, stamp_now: bool) -> list[Item]:
    """``count`` payloads with unique ids (templates reused in turn when count exceeds them).

    With ``stamp_now`` the timestamp is set to now; otherwise the placeholder stays for the
    publisher to fill in at the moment it publishes.
    """
    now = iso_now()
    items: list[Item] = []
    for index in range(count):
        topic, template = templates[index % len(templates)]
        payload = template.replace(MID_MARK, message_id(prefix, index))
        items.append((topic, payload.replace(TS_MARK, now) if stamp_now else payload))
    return items


# --- MQTT clients -----------------------------------------------------------------------


def session_properties() -> Properties:
    """CONNECT properties of a persistent session with the agent's receive window."""
    # paho's Properties.__init__ has no annotations.
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    return props


def connect(
    client: mqtt.Client, port: int, clean_start: bool, properties: Properties | None = None
) -> bool:
    """Connect, start paho's network thread and wait for CONNACK; returns session_present.

    Raises:
        BenchError: the broker refused or did not answer.
    """
    answered = threading.Event()
    answers: list[tuple[ReasonCode, bool]] = []

    def on_connect(
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        answers.append((reason_code, flags.session_present))
        answered.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", port, keepalive=60, clean_start=clean_start, properties=properties)
    client.loop_start()
    if not answered.wait(CONNECT_TIMEOUT_S) or answers[0][0].is_failure:
        client.loop_stop()
        raise BenchError(f"broker on port {port} refused or ignored CONNECT: {answers}")
    return answers[0][1]


def new_client(client_id: str) -> mqtt.Client:
    """A paho 2.x MQTT v5 client."""
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


@contextlib.contextmanager
def short_client(port: int, client_id: str) -> Iterator[mqtt.Client]:
    """A throw-away client in this process (probes, clearing a session).

    Its network thread is joined on exit: processes are forked later and must not inherit a
    half-running paho thread.
    """
    client = new_client(client_id)
    connect(client, port, clean_start=True)
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def forget_session(port: int, client_id: str) -> None:
    """End a client's persistent session so the broker stops queueing for it.

    Clean start with the default Session Expiry Interval of 0 discards the session on
    disconnect.
    """
    with short_client(port, client_id):
        pass


# --- publishers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PublisherReport:
    """What one publisher process did; times are CLOCK_MONOTONIC, shared by all processes."""

    sent: int
    acked: int
    failed: int
    started: float
    last_ack: float


@dataclass(frozen=True)
class PublishReport:
    """All publishers of one phase."""

    label: str
    sent: int
    acked: int
    failed: int
    elapsed_s: float

    @property
    def rate(self) -> float:
        """Acknowledged publishes per second over all publishers."""
        return self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _publish_all(
    port: int, items: Sequence[Item], rate: float, ready: Queue[Any], go: ProcessEvent
) -> PublisherReport:
    from edge_agent.mqtt.publisher import Window

    window = Window(WINDOW, STALL_S)
    client = new_client(f"bench-publisher-{os.getpid()}")
    # The window above bounds what is in flight. paho's own limit is left off (0): with one
    # set, paho 2.2 walks every in-flight message on each PUBACK (_update_inflight), and a
    # limit of 1000 halves what a publisher can send (measured: 6.4k/s vs 12.4k/s, 3 procs).
    client.max_inflight_messages_set(0)
    client.on_publish = window.on_publish
    connect(client, port, clean_start=True)
    try:
        ready.put(("ready", os.getpid(), None))
        if not go.wait(60):
            raise BenchError("publisher was never told to start")
        started = time.monotonic()
        sent = 0
        for index, (topic, payload) in enumerate(items):
            if rate > 0:
                delay = started + index / rate - time.monotonic()
                if delay > 0:
                    # Wake at most every PACE_TICK_S and send what is due in one burst: a
                    # wake-up per message costs more CPU than the agent under test.
                    time.sleep(max(delay, PACE_TICK_S))
            window.reserve(where=f"127.0.0.1:{port}")
            # Stamped after the window opens: waiting for it is not part of the latency.
            body = payload.replace(TS_MARK, iso_now()) if TS_MARK in payload else payload
            window.handed(client.publish(topic, body, qos=1).rc)
            sent += 1
        window.drain(STALL_S)
        return PublisherReport(
            sent=sent,
            acked=window.acknowledged,
            failed=window.rejected + window.refused,
            started=started,
            last_ack=window.last_ack,
        )
    finally:
        client.disconnect()
        client.loop_stop()


def _publisher_main(
    port: int, items: Sequence[Item], rate: float, ready: Queue[Any], go: ProcessEvent
) -> None:
    # The parent handles Ctrl-C and stops this process itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        ready.put(("done", os.getpid(), _publish_all(port, items, rate, ready, go)))
    except Exception as exc:
        ready.put(("error", os.getpid(), f"{type(exc).__name__}: {exc}"))


# --- reference subscriber -----------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceReport:
    """What the reference subscriber received; times are CLOCK_MONOTONIC."""

    received: int
    first: float
    last: float
    session_present: bool
    vmhwm_kb: int

    @property
    def rate(self) -> float:
        """Sustained rate: messages / (last - first)."""
        span = self.last - self.first
        return self.received / span if span > 0 else 0.0


def _reference_main(port: int, expected: int, results: Queue[Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        # Plain values: this module is __mp_main__ here, so its classes would not unpickle.
        results.put(("done", os.getpid(), _receive(port, expected, results)))
    except Exception as exc:
        results.put(("error", os.getpid(), f"{type(exc).__name__}: {exc}"))


def _receive(port: int, expected: int, results: Queue[Any]) -> tuple[int, float, float, bool, int]:
    subscribed = threading.Event()
    done = threading.Event()
    first = last = 0.0
    count = 0

    def on_subscribe(
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # Counting only: the bare cost of paho receiving and acknowledging (auto-ack).
        nonlocal first, last, count
        last = time.monotonic()
        if count == 0:
            first = last
        count += 1
        if count >= expected:
            done.set()

    client = new_client(REFERENCE_CLIENT_ID)
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    present = connect(client, port, clean_start=False, properties=session_properties())
    try:
        # Like the agent, subscribe on every connect (a present session keeps it anyway).
        client.subscribe(TOPIC_FILTER, options=SubscribeOptions(qos=1))
        if not subscribed.wait(CONNECT_TIMEOUT_S):
            raise BenchError("no SUBACK from the broker")
        results.put(("ready", os.getpid(), None))
        seen, moved = 0, time.monotonic()
        deadline = time.monotonic() + PHASE_CAP_S
        while expected and not done.wait(POLL_S):
            now = time.monotonic()
            if count != seen:
                seen, moved = count, now
            elif now - moved > STALL_S or now > deadline:
                break
        return count, first, last, present, vmhwm_kb()
    finally:
        client.disconnect()
        client.loop_stop()


# --- the agent ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentFigures:
    """The agent's throughput over one phase's events, from its database."""

    stored: int
    first_received_ms: int
    last_stored_ms: int

    @property
    def rate(self) -> float:
        """Sustained committed rate: events / (last commit - first receipt)."""
        span = (self.last_stored_ms - self.first_received_ms) / 1000
        return self.stored / span if span > 0 else 0.0


@dataclass(frozen=True)
class Memory:
    """Peak RSS of a set of processes: (label, pid, VmHWM kB) each."""

    processes: tuple[tuple[str, int, int], ...]

    @property
    def total_kb(self) -> int:
        """Sum of every process's VmHWM (an upper bound of the peak of the whole)."""
        return sum(kb for _, _, kb in self.processes)


def id_range(prefix: str) -> tuple[str, str]:
    """Bounds selecting one phase's message ids through the store's unique index."""
    return f"{prefix}-", f"{prefix}."


class AgentRun:
    """One ``edge-agent run`` subprocess with a fresh data folder, and its database."""

    def __init__(self, root: Path, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.folder = root / f"agent-{name}"
        self.data = self.folder / "data"
        self.database = self.data / "edge-agent.db"
        self.log = self.folder / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Write the config and start the agent."""
        self.folder.mkdir(parents=True)
        config = self.folder / "agent.toml"
        config.write_text(
            f'[site]\nid = "{SITE}"\ndata_dir = "{self.data}"\n\n[mqtt]\nport = {self.port}\n'
        )
        # The agent reads EDGE_AGENT_* overrides: keep the caller's out of the measurement.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("EDGE_AGENT_") and k != "JOURNAL_STREAM"
        }
        from edge_agent.demo.agent import AgentChild

        self.child = AgentChild(config, self.log, env)
        # Its own process group: Ctrl-C reaches only us, and we stop it in order.
        self.child.spawn(own_session=True)
        self.process = self.child.process

    def check_alive(self) -> None:
        """Raises BenchError with the log's end when the agent has exited."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise BenchError(f"agent ({self.name}) exited with {code}:\n{self.log_tail()}")

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query ([] while the database or table does not exist yet)."""
        if not self.database.exists():
            return []
        try:
            conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        except sqlite3.Error:
            return []
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    def wait_connected(self) -> None:
        """Wait until the agent reports its broker connection.

        Raises:
            BenchError: it exits or does not connect in time.
        """
        from edge_agent.demo.agent import SUBSCRIBED
        from edge_agent.errors import EdgeAgentError

        try:
            self.child.wait_log(SUBSCRIBED, 1, CONNECT_TIMEOUT_S * 2)
        except EdgeAgentError as exc:
            raise BenchError(f"agent ({self.name}): {exc}:\n{self.log_tail()}") from exc

    def probe(self, template: Item) -> None:
        """Publish probe events until one is stored: the subscription is then live.

        Raises:
            BenchError: none is stored within the connect timeout.
        """
        topic, payload = template
        deadline = time.monotonic() + CONNECT_TIMEOUT_S * 2
        with short_client(self.port, "bench-probe") as client:
            for attempt in itertools.count():
                body = payload.replace(MID_MARK, message_id("probe", attempt))
                client.publish(topic, body.replace(TS_MARK, iso_now()), qos=1).wait_for_publish(5)
                until = time.monotonic() + 1.0
                while time.monotonic() < until:
                    self.check_alive()
                    if self.count("probe"):
                        return
                    time.sleep(0.05)
                if time.monotonic() > deadline:
                    raise BenchError(f"agent ({self.name}) stored no probe:\n{self.log_tail()}")

    def count(self, prefix: str) -> int:
        """Events of a phase stored so far."""
        rows = self.query(
            "SELECT count(*) FROM events WHERE message_id >= ? AND message_id < ?",
            id_range(prefix),
        )
        return int(rows[0][0]) if rows else 0

    def wait_stored(self, prefix: str, expected: int) -> None:
        """Wait until every event of the phase is committed.

        Raises:
            BenchError: the agent exits, or stops making progress before all are stored.
        """
        seen, moved = -1, time.monotonic()
        deadline = moved + PHASE_CAP_S
        while True:
            self.check_alive()
            stored = self.count(prefix)
            if stored >= expected:
                return
            now = time.monotonic()
            if stored != seen:
                seen, moved = stored, now
            elif now - moved > STALL_S or now > deadline:
                raise BenchError(
                    f"agent ({self.name}) stored {stored:,} of {expected:,} events and then "
                    f"nothing for {now - moved:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(POLL_S)

    def figures(self, prefix: str) -> AgentFigures:
        """Throughput of a phase from stored_ms and received_ms."""
        stored, first, last = self.query(
            "SELECT count(*), min(received_ms), max(stored_ms) FROM events "
            "WHERE message_id >= ? AND message_id < ?",
            id_range(prefix),
        )[0]
        return AgentFigures(int(stored), int(first), int(last))

    def latencies(self, prefix: str) -> list[tuple[int, int, int]]:
        """(stored - ts, received - ts, stored - received) in ms for each event of a phase."""
        return [
            (int(a), int(b), int(c))
            for a, b, c in self.query(
                "SELECT stored_ms - ts_ms, received_ms - ts_ms, stored_ms - received_ms "
                "FROM events WHERE message_id >= ? AND message_id < ?",
                id_range(prefix),
            )
        ]

    def dead_letters(self) -> dict[str, int]:
        """Dead letters by reason (a correct run has none)."""
        rows = self.query("SELECT reason, sum(occurrences) FROM dead_letters GROUP BY reason")
        return {str(reason): int(n) for reason, n in rows}

    def memory(self) -> Memory:
        """VmHWM of the agent and every process below it."""
        assert self.process is not None
        root = self.process.pid
        return Memory(
            tuple(
                (process_label(pid, root), pid, vmhwm_kb(pid)) for pid in (root, *descendants(root))
            )
        )

    def stop(self) -> int | None:
        """SIGTERM, as systemd would; SIGKILL the group after 15 s. Returns the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        # Its receiver is a daemon process; make sure none outlives the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode

    def session_present(self) -> str:
        """What the agent logged about its session on connecting."""
        for record in self.log_records():
            if record.get("event") == "broker_connected":
                return str(record.get("detail", "?"))
        return "not logged"

    def log_records(self) -> list[dict[str, Any]]:
        """The agent's JSON log lines; other lines (tracebacks) as {"raw": line}."""
        records: list[dict[str, Any]] = []
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    record = {"raw": line}
                records.append(record if isinstance(record, dict) else {"raw": line})
        return records

    def log_summary(self) -> str:
        """Lines per level, and the events of warnings and errors."""
        records = self.log_records()
        levels = Counter(str(r.get("level", "non-JSON")) for r in records)
        problems = Counter(
            f"{r.get('level')}:{r.get('event')}"
            for r in records
            if r.get("level") in ("WARNING", "ERROR", "CRITICAL")
        )
        raw = [r["raw"] for r in records if "raw" in r]
        text = f"{len(records)} lines {dict(levels)}"
        if problems:
            text += f"; warnings/errors {dict(problems)}"
        if raw:
            text += "; non-JSON output:\n    " + "\n    ".join(raw[:20])
        return text

    def log_tail(self, lines: int = 30) -> str:
        """The end of the agent's log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


# --- the benchmark ------------------------------------------------------------------------


@dataclass
class Results:
    """Figures gathered across phases for the summary."""

    reference_live: ReferenceReport | None = None
    reference_backlog: ReferenceReport | None = None
    agent_live: AgentFigures | None = None
    agent_backlog: AgentFigures | None = None
    latency: list[tuple[int, int, int]] | None = None
    latency_target_rate: float = 0.0
    agent_memory: dict[str, Memory] = field(default_factory=dict)


class Bench:
    """Runs the phases on one broker, tracking every process it starts for cleanup."""

    def __init__(self, args: argparse.Namespace, root: Path, port: int) -> None:
        self.args = args
        self.root = root
        self.port = port
        self.children: list[BaseProcess] = []
        self.agents: list[AgentRun] = []
        self.publishes: list[PublishReport] = []
        self.results = Results()
        self.templates: list[Item] = []

    def cleanup(self) -> None:
        """Stop every agent and child process still running."""
        for agent in self.agents:
            agent.stop()
        for child in self.children:
            if child.is_alive():
                child.terminate()
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join(5)

    def _start(
        self, target: Callable[..., None], *args: object, spawn: bool = False
    ) -> BaseProcess:
        context = _SPAWN if spawn else _FORK
        process = context.Process(target=target, args=args, daemon=True)
        self.children.append(process)
        process.start()
        return process

    def publish(self, label: str, items: Sequence[Item], rate: float = 0.0) -> PublishReport:
        """Publish ``items`` from the publisher processes (paced at ``rate`` in total if > 0).

        Raises:
            BenchError: a publisher failed, or the broker did not acknowledge every event.
        """
        count = self.args.publishers
        queue: Queue[Any] = _FORK.Queue()
        go = _FORK.Event()
        processes = [
            self._start(_publisher_main, self.port, items[k::count], rate / count, queue, go)
            for k in range(count)
        ]
        reports: list[PublisherReport] = []
        ready = 0
        while len(reports) < count:
            kind, _, body = self._next(queue, processes, "publisher")
            if kind == "ready":
                ready += 1
                if ready == count:
                    go.set()  # all connected: start together
            else:
                reports.append(body)
        for process in processes:
            process.join(10)
        sent = sum(r.sent for r in reports)
        acked = sum(r.acked for r in reports)
        failed = sum(r.failed for r in reports)
        elapsed = max(r.last_ack for r in reports) - min(r.started for r in reports)
        report = PublishReport(label, sent, acked, failed, elapsed)
        self.publishes.append(report)
        say(
            f"  publish [{label}]: {acked:,}/{len(items):,} acknowledged by {count} publishers "
            f"in {elapsed:.2f} s = {rate_text(report.rate)}"
            + (f" (paced at {rate_text(rate)})" if rate else "")
        )
        if sent != len(items) or acked != len(items) or failed:
            raise BenchError(
                f"PUBLISH LOST MESSAGES [{label}]: wanted {len(items):,}, sent {sent:,}, "
                f"acknowledged {acked:,}, failed {failed:,}"
            )
        return report

    def _next(
        self, queue: Queue[Any], processes: Sequence[BaseProcess], who: str
    ) -> tuple[str, int, Any]:
        """The next message of child processes; raises when one failed or all died."""
        deadline = time.monotonic() + PHASE_CAP_S
        while time.monotonic() < deadline:
            try:
                kind, pid, body = queue.get(timeout=1.0)
            except Empty:  # nothing yet: check that someone is still there to report
                if not any(p.is_alive() for p in processes):
                    raise BenchError(f"every {who} process exited without a report") from None
                continue
            if kind == "error":
                raise BenchError(f"{who} {pid} failed: {body}")
            return str(kind), int(pid), body
        raise BenchError(f"{who} processes reported nothing for {PHASE_CAP_S:.0f} s")

    # -- phases --

    def reference(self, mode: str) -> ReferenceReport:
        """The bare paho subscriber, live or draining a backlog."""
        n = self.args.events
        items = stamped(self.templates, f"ref{mode}", n, stamp_now=True)
        say(f"\n[reference, {mode}] bare paho subscriber, {n:,} events")
        queue: Queue[Any] = _SPAWN.Queue()
        if mode == "backlog":
            # The live run left the session; connect once more to be sure it exists, then
            # leave it offline while the broker queues the whole stream for it.
            self._start(_reference_main, self.port, 0, queue, spawn=True)
            self._next(queue, self.children[-1:], "reference")
            self._next(queue, self.children[-1:], "reference")
            self.publish(f"reference {mode}", items)
            consumer = self._start(_reference_main, self.port, n, queue, spawn=True)
            self._next(queue, [consumer], "reference")
        else:
            consumer = self._start(_reference_main, self.port, n, queue, spawn=True)
            self._next(queue, [consumer], "reference")
            self.publish(f"reference {mode}", items)
        _, _, values = self._next(queue, [consumer], "reference")
        report = ReferenceReport(*values)
        consumer.join(10)
        say(
            f"  reference [{mode}]: {report.received:,} received in "
            f"{report.last - report.first:.2f} s = {rate_text(report.rate)} "
            f"(session_present={report.session_present}, VmHWM {mb(report.vmhwm_kb):.1f} MB)"
        )
        if report.received < n:
            raise BenchError(f"reference received only {report.received:,} of {n:,} events")
        return report

    def agent(self, mode: str) -> AgentFigures:
        """The agent, live or draining a backlog queued for its session."""
        n = self.args.events
        prefix = f"agent{mode}"
        items = stamped(self.templates, prefix, n, stamp_now=True)
        say(f"\n[agent, {mode}] edge-agent run, {n:,} events")
        run = AgentRun(self.root, mode, self.port)
        if mode == "backlog":
            # The live run created the agent's session and stopped; the broker now queues for it.
            self.publish(f"agent {mode}", items)
            self.agents.append(run)
            run.start()
        else:
            self.agents.append(run)
            run.start()
            run.wait_connected()
            run.probe(self.templates[0])
            self.publish(f"agent {mode}", items)
        run.wait_stored(prefix, n)
        figures = run.figures(prefix)
        say(
            f"  agent [{mode}]: {figures.stored:,} committed in "
            f"{(figures.last_stored_ms - figures.first_received_ms) / 1000:.2f} s "
            f"(first received -> last committed) = {rate_text(figures.rate)}"
        )
        self._finish(run, mode)
        return figures

    def latency(self, live_rate: float) -> list[tuple[int, int, int]]:
        """The agent at half its live rate; events stamped at publish time."""
        seconds = self.args.latency_seconds
        rate = live_rate / 2
        n = max(1, round(rate * seconds))
        say(f"\n[agent, latency] {n:,} events paced at {rate_text(rate)} for {seconds:g} s")
        items = stamped(self.templates, "agentlat", n, stamp_now=False)
        run = AgentRun(self.root, "latency", self.port)
        self.agents.append(run)
        run.start()
        run.wait_connected()
        run.probe(self.templates[0])
        self.publish("agent latency", items, rate=rate)
        run.wait_stored("agentlat", n)
        values = run.latencies("agentlat")
        self._finish(run, "latency")
        self.results.latency_target_rate = rate
        for label, column in (
            ("timestamp -> committed", 0),
            ("  timestamp -> received", 1),
            ("  received -> committed", 2),
        ):
            ordered = sorted(v[column] for v in values)
            say(
                f"  {label:<24} p50 {percentile(ordered, 0.5):>5} ms   "
                f"p99 {percentile(ordered, 0.99):>5} ms   max {ordered[-1]:>5} ms   "
                f"({len(ordered):,} events)"
            )
        return values

    def _finish(self, run: AgentRun, mode: str) -> None:
        """Read memory, stop the agent, and report its log and dead letters."""
        memory = run.memory()
        letters = run.dead_letters()
        code = run.stop()
        self.results.agent_memory[mode] = memory
        for label, pid, kb in memory.processes:
            say(f"  VmHWM {label:<34} pid {pid:<7} {mb(kb):7.1f} MB")
        say(f"  VmHWM {'agent total':<34} {'':<11} {mb(memory.total_kb):7.1f} MB")
        say(f"  agent session on connect: {run.session_present()}; exit code {code}")
        say(f"  agent log: {run.log_summary()}")
        if letters:
            say(f"  DEAD LETTERS: {letters}")
        if code != 0:
            raise BenchError(f"agent ({mode}) exited with {code} on SIGTERM:\n{run.log_tail()}")

    def run(self) -> None:
        """Every phase, then the summary."""
        a = self.args
        say(
            f"bench.ingest: {a.events:,} events, {a.publishers} publishers, seed {a.seed}, "
            f"broker 127.0.0.1:{self.port}, {os.cpu_count()} CPUs, folder {self.root}"
        )
        started = time.monotonic()
        self.templates = build_templates(a.events, a.seed)
        sample = stamped(self.templates, "size", a.events, stamp_now=True)
        sizes = sorted(len(payload) for _, payload in sample)
        del sample
        say(
            f"payloads: {len(self.templates):,} simulated events built in "
            f"{time.monotonic() - started:.1f} s; size p50 {percentile(sizes, 0.5)} B, "
            f"mean {sum(sizes) / len(sizes):.0f} B, max {sizes[-1]} B"
        )
        r = self.results
        r.reference_live = self.reference("live")
        r.reference_backlog = self.reference("backlog")
        # Otherwise the broker would keep queueing every later phase for the reference too.
        forget_session(self.port, REFERENCE_CLIENT_ID)
        r.agent_live = self.agent("live")
        r.agent_backlog = self.agent("backlog")
        r.latency = self.latency(r.agent_live.rate)
        self.summary(time.monotonic() - started)

    def summary(self, elapsed: float) -> None:
        """The final block: rates, ratios, latency, memory and targets."""
        r = self.results
        assert r.reference_live
        assert r.reference_backlog
        assert r.agent_live
        assert r.agent_backlog
        assert r.latency
        a = self.args
        line = "=" * 78
        say(
            f"\n{line}\nSUMMARY  events {a.events:,}, publishers {a.publishers}, seed {a.seed}, "
            f"{elapsed:.0f} s in all\n{line}"
        )
        verdicts: list[bool] = []

        def verdict(ok: bool) -> str:
            verdicts.append(ok)
            return "PASS" if ok else "FAIL"

        say(f"{'sustained rate':<16}{'reference':>14}{'agent':>14}{'agent/ref':>11}   target")
        for mode, ref, agent in (
            ("live", r.reference_live, r.agent_live),
            ("backlog", r.reference_backlog, r.agent_backlog),
        ):
            ratio = agent.rate / ref.rate if ref.rate else 0.0
            say(
                f"{mode:<16}{rate_text(ref.rate):>14}{rate_text(agent.rate):>14}{ratio:>11.3f}"
                f"   >= {TARGET_RATIO:.1f}  {verdict(ratio >= TARGET_RATIO)}"
            )
        say("publish rate (acknowledged, all publishers):")
        for report in self.publishes:
            say(f"  {report.label:<20}{rate_text(report.rate):>14}")
        ordered = sorted(v[0] for v in r.latency)
        p99 = percentile(ordered, 0.99)
        say(
            f"latency at {rate_text(r.latency_target_rate)} (half of agent live), "
            f"{len(ordered):,} events: p50 {percentile(ordered, 0.5)} ms, p99 {p99} ms, "
            f"max {ordered[-1]} ms   target p99 <= {TARGET_P99_MS:.0f} ms  "
            f"{verdict(p99 <= TARGET_P99_MS)}"
        )
        worst_mode, worst = max(r.agent_memory.items(), key=lambda kv: kv[1].total_kb)
        parts = ", ".join(f"{mb(kb):.1f}" for _, _, kb in worst.processes)
        say(
            f"peak RSS agent ({worst_mode} run, sum of {len(worst.processes)} processes: "
            f"{parts}): {mb(worst.total_kb):.1f} MB   target <= {TARGET_RSS_MB:.0f} MB  "
            f"{verdict(mb(worst.total_kb) <= TARGET_RSS_MB)}"
        )
        ref_kb = max(r.reference_live.vmhwm_kb, r.reference_backlog.vmhwm_kb)
        say(f"peak RSS reference subscriber: {mb(ref_kb):.1f} MB")
        say(f"targets: {sum(verdicts)}/{len(verdicts)} PASS\n{line}")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when it measured everything, 1 when it could not, 130 on Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="Ingest benchmark: the agent against a bare paho subscriber.",
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per phase (200000)")
    parser.add_argument("--publishers", type=int, default=3, help="publisher processes (3)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated stream (7)")
    parser.add_argument(
        "--latency-seconds", type=float, default=20.0, help="length of the latency phase (20)"
    )
    args = parser.parse_args(argv)
    if args.events < 1 or args.publishers < 1 or args.latency_seconds <= 0:
        parser.error("--events and --publishers must be >= 1, --latency-seconds > 0")
    # SIGTERM takes the same way out as Ctrl-C, so the cleanup below runs; Ctrl-C works even
    # when started in the background, where SIGINT arrives ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from edge_agent.mqtt.broker import Mosquitto

    root = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, root, ignore_errors=True)
        (root / "broker").mkdir()
        broker = Mosquitto(root / "broker")
        cleanup.callback(broker.stop)
        bench = Bench(args, root, broker.port)
        cleanup.callback(bench.cleanup)
        try:
            broker.start()
            bench.run()
        except BenchError as exc:
            say(f"\nBENCH FAILED: {exc}")
            say(f"broker log:\n{broker.log_tail(15)}")
            return 1
        except KeyboardInterrupt:
            say("\ninterrupted; cleaning up")
            return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
