"""The agent and the collector under a stand-in service manager: a datagram socket this test
owns as ``$NOTIFY_SOCKET``, read the way systemd reads it; and the unit files checked by
``systemd-analyze verify``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.mqtt.broker import Mosquitto, mosquitto_binary
from edge_agent.service import Notifier, free_port
from tests.conftest import AgentProcess
from tests.helpers import Publisher, encode, query, stored_ids, topic, track, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "systemd"
#: systemd's default for the agent is 30 s; a test wants to see several pings a second.
WATCHDOG_USEC = 1_000_000


class ServiceManager:
    """The receiving end of sd_notify: one datagram per message, ``KEY=value`` lines."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bound = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.socket.bind(bound)
        self.socket.setblocking(False)
        self.received: list[dict[str, str]] = []

    def _read(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.socket.recv(4096)
            except BlockingIOError:
                return self.received
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.received.append(fields)

    def since(self, start: int) -> list[dict[str, str]]:
        """Messages received from index ``start`` on."""
        return self._read()[start:]

    def wait(
        self,
        check: Callable[[dict[str, str]], bool],
        what: str,
        start: int = 0,
        timeout_s: float = 30,
    ) -> int:
        """Wait for a message (from index ``start``) that passes ``check``; returns its index."""
        found: list[int] = []

        def seen() -> bool:
            messages = self._read()
            found[:] = [i for i in range(start, len(messages)) if check(messages[i])]
            return bool(found)

        wait_for(seen, timeout_s, what)
        return found[0]

    def close(self) -> None:
        """Stop listening."""
        self.socket.close()


def _ready(m: dict[str, str]) -> bool:
    return m.get("READY") == "1"


def _ping(m: dict[str, str]) -> bool:
    return m.get("WATCHDOG") == "1"


def _status(text: str) -> Callable[[dict[str, str]], bool]:
    return lambda m: text in m.get("STATUS", "")


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ServiceManager]:
    listening = ServiceManager(str(tmp_path / "notify.sock"))
    yield listening
    listening.close()


def _under_systemd(
    agent_factory: Callable[..., AgentProcess], port: int, manager: ServiceManager
) -> AgentProcess:
    return agent_factory(
        port, env={"NOTIFY_SOCKET": manager.address, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    )


def test_ready_only_once_the_broker_is_up_then_pings_status_and_stopping(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], manager: ServiceManager
) -> None:
    broker.stop()
    agent = _under_systemd(agent_factory, broker.port, manager)
    agent.start(wait_connected=False)
    # The loop runs (it pings) while the broker is down, but the agent is not ready.
    first = manager.wait(_ping, "a watchdog ping")
    manager.wait(_ping, "a second watchdog ping", start=first + 1)
    agent.wait_log("broker_disconnected")
    assert not any(_ready(m) for m in manager.since(0))
    assert '"event": "broker_connected"' not in agent.log_text()

    broker.start()
    ready = manager.wait(_ready, "READY=1")
    assert '"event": "broker_connected"' in agent.log_text()
    assert "broker connected" in manager.since(ready)[0]["STATUS"]
    assert sum(_ready(m) for m in manager.since(0)) == 1

    publisher = Publisher(broker.port)
    try:
        events = [track("Door Counted", {"direction": "in", "count": 1}) for _ in range(5)]
        publisher.publish_all([(topic(), encode(e)) for e in events])
        publisher.publish_all([(topic(), encode(events[0])), (topic(), b"{not json")])
    finally:
        publisher.close()
    manager.wait(
        _status("stored 5, duplicates 1, dead letters 1, broker connected"),
        "a STATUS line with the counters",
        start=ready,
    )
    pings = sum(_ping(m) for m in manager.since(ready))
    manager.wait(_ping, "pings going on", start=len(manager.since(0)))
    assert sum(_ping(m) for m in manager.since(ready)) > pings

    assert agent.stop() == 0
    manager.wait(lambda m: m.get("STOPPING") == "1", "STOPPING=1 on SIGTERM")


def test_pings_stop_while_a_commit_cannot_finish_and_resume_after(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], manager: ServiceManager
) -> None:
    agent = _under_systemd(agent_factory, broker.port, manager)
    agent.start()
    manager.wait(_ready, "READY=1")
    # Right after a heartbeat: the next one (10 s on) finds the loop already stuck in the
    # commit, not in its own write, which would fail the agent after the busy timeout.
    beats = agent.log_text().count('"event": "ingest_progress"')
    agent.wait_log("ingest_progress", beats + 1)

    # Another connection holds the write lock: the agent's BEGIN IMMEDIATE waits out the
    # busy timeout, fails, and _commit retries, for as long as the lock is held.
    publisher = Publisher(broker.port)
    blocker = sqlite3.connect(agent.db, isolation_level=None, timeout=30)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        event = track("Door Counted", {"direction": "in", "count": 1})
        stalled = len(manager.since(0))
        publisher.publish_all([(topic(), encode(event))])
        agent.wait_log("commit_failed")
        during = manager.since(stalled)
        # Only the pings of the turns before the batch reached the loop (one or two on a busy
        # machine); a retry loop that pinged would have sent about 20 through the 10 s busy
        # timeout.
        assert sum(_ping(m) for m in during) <= 2, during
        assert not any("stored 1" in m.get("STATUS", "") for m in during)
        assert stored_ids(agent.db) == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        publisher.close()

    resumed = len(manager.since(0))
    manager.wait(_ping, "pings again once the commit went through", start=resumed)
    manager.wait(_status("stored 1,"), "the event counted", start=stalled)
    assert stored_ids(agent.db) == [event["messageId"]]


def test_notifier_reaches_an_abstract_socket_and_shrugs_off_a_missing_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listening = ServiceManager(f"@edge-agent-test-{uuid.uuid4().hex}")
    try:
        notifier = Notifier(listening.address, watchdog_usec=WATCHDOG_USEC)
        assert notifier.enabled
        notifier.ready("up")
        notifier.alive()
        notifier.alive()  # within half the watchdog time: not sent
        notifier.status("up")  # unchanged: not sent
        notifier.stopping()
        notifier.close()
        wait_for(lambda: len(listening.since(0)) >= 3, 10, "three datagrams")
        assert listening.since(0) == [
            {"READY": "1", "STATUS": "up"},
            {"WATCHDOG": "1"},
            {"STOPPING": "1", "STATUS": "stopping"},
        ]
    finally:
        listening.close()

    gone = Notifier(str(tmp_path / "nobody-listens.sock"), watchdog_usec=WATCHDOG_USEC)
    gone.ready("up")
    gone.alive()
    gone.close()
    assert [r.event for r in caplog.records] == ["systemd_notify_failed"]  # type: ignore[attr-defined]
    assert not Notifier().enabled
    Notifier().ready("nothing happens without a socket")


def test_collector_serve_is_ready_once_it_listens_pings_and_says_stopping(
    tmp_path: Path, manager: ServiceManager
) -> None:
    port = free_port()
    log = tmp_path / "collector.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "edge_agent.collector.cli", "serve",
                "--db", str(tmp_path / "central.db"), "--port", str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "EDGE_COLLECTOR_ADMIN_TOKEN": "admin-" + uuid.uuid4().hex,
                "NOTIFY_SOCKET": manager.address,
                "WATCHDOG_USEC": str(WATCHDOG_USEC),
            },
        )  # fmt: skip
    try:
        ready = manager.wait(_ready, "READY=1 from the collector")
        assert manager.since(ready)[0]["STATUS"] == f"listening on 127.0.0.1:{port}"
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # READY came once it listens
        first = manager.wait(_ping, "a watchdog ping", start=ready)
        manager.wait(_ping, "a second watchdog ping", start=first + 1)
        process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down; systemd counts death by SIGTERM
        # as a clean exit.
        assert process.wait(30) in (0, -signal.SIGTERM), log.read_text()
        manager.wait(lambda m: m.get("STOPPING") == "1", "STOPPING=1")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


# --- the unit files ----------------------------------------------------------------------


def _systemd_analyze() -> str:
    found = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
    if not Path(found).exists():
        pytest.fail("systemd-analyze is missing: run scripts/setup, which installs systemd")
    return found


def _verify(*units: Path) -> str:
    done = subprocess.run(
        [_systemd_analyze(), "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # verify exits 0 even for unknown keys and bad values (it says "ignoring"): every line it
    # prints is a finding.
    return (done.stdout + done.stderr).strip() + (
        "" if done.returncode == 0 else f" rc={done.returncode}"
    )


@pytest.mark.parametrize("name", ["edge-agent.service", "edge-agent-collector.service"])
def test_unit_files_verify_clean(tmp_path: Path, name: str) -> None:
    # The shipped units name /opt/edge-agent/.venv, which is not on this machine: verify
    # checks that ExecStart's program exists, so the copy points at this checkout's venv.
    # Nothing else changes, and the users need not exist for verify.
    text = (UNITS / name).read_text()
    assert "/opt/edge-agent/.venv/bin/" in text
    copy = tmp_path / name
    copy.write_text(text.replace("/opt/edge-agent/.venv", str(Path(sys.executable).parent.parent)))
    assert _verify(copy) == ""


def test_unit_files_verify_finds_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    copy = tmp_path / "edge-agent.service"
    text = (UNITS / "edge-agent.service").read_text()
    copy.write_text(
        text.replace("/opt/edge-agent/.venv", str(Path(sys.executable).parent.parent)).replace(
            "WatchdogSec=30", "WatchdogSecs=30"
        )
    )
    assert "Unknown key 'WatchdogSecs'" in _verify(copy)


def test_mosquitto_drop_in_verifies_on_the_broker_unit(tmp_path: Path) -> None:
    # verify reads NAME.service.d/*.conf beside the unit it is given: put the drop-in next to
    # Debian's mosquitto.service (or, where the package left none, a stand-in for it).
    debian = Path("/lib/systemd/system/mosquitto.service")
    unit = tmp_path / "mosquitto.service"
    unit.write_text(
        debian.read_text()
        if debian.exists()
        else f"[Service]\nType=notify\nExecStart={mosquitto_binary()} -c /dev/null\n"
    )
    (tmp_path / "mosquitto.service.d").mkdir()
    drop_in = tmp_path / "mosquitto.service.d" / "edge-agent.conf"
    shutil.copy(UNITS / "mosquitto.service.d" / "edge-agent.conf", drop_in)
    assert _verify(unit) == ""
    drop_in.write_text(drop_in.read_text() + "LimitNOFILES=1\n")
    assert "Unknown key 'LimitNOFILES'" in _verify(unit)


def test_the_agent_unit_says_what_it_promises() -> None:
    unit = (UNITS / "edge-agent.service").read_text()
    lines = {line.strip() for line in unit.splitlines()}
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "User=edge-agent",
        "Group=edge-agent",
        "ExecStart=/opt/edge-agent/.venv/bin/edge-agent --config /etc/edge-agent/agent.toml run",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/edge-agent",
        "StateDirectory=edge-agent",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "Wants=network-online.target mosquitto.service",
        "After=network-online.target mosquitto.service",
    ):
        assert line in lines, line
    # The only writable folder is the one the agent's data goes to, whatever the config says.
    assert "Environment=EDGE_AGENT_SITE__DATA_DIR=/var/lib/edge-agent" in lines


#: Payloads built to make a byte check backtrack (each at the 64 KiB limit): escaped quotes
#: that never close, inside nesting; brackets within strings; endless digits.
STALLING = [
    pytest.param(b"[" * 12 + b'{"a": "' + b'\\"' * 32_000, id="unterminated-escaped-quotes"),
    pytest.param(b'{"a": "' + b"\\\\" * 32_000 + b'"', id="escaped-backslashes"),
    pytest.param(b'["' + b'[\\"{' * 16_000 + b'"]', id="brackets-in-a-string"),
    pytest.param(b"[" + b"1" * 65_000 + b"]", id="one-long-number"),
    pytest.param(b'{"a":' * 10_000, id="nesting-never-closed"),
]


def test_the_watchdog_keeps_pinging_while_hostile_payloads_arrive(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], manager: ServiceManager
) -> None:
    agent = _under_systemd(agent_factory, broker.port, manager)
    agent.start()
    manager.wait(_ready, "READY=1")
    publisher = Publisher(broker.port)
    payloads: list[bytes] = [p.values[0] for p in STALLING]  # type: ignore[misc]
    assert all(len(p) <= 64 * 1024 for p in payloads)
    # When each ping arrives, read as it comes by a thread of its own.
    pinged: list[float] = []
    done = threading.Event()

    def listen() -> None:
        seen = len(manager.since(0))
        while not done.wait(0.02):
            fresh = manager.since(seen)
            seen += len(fresh)
            pinged.extend(time.monotonic() for m in fresh if _ping(m))

    listener = threading.Thread(target=listen)
    listener.start()
    began = time.monotonic()
    try:
        for n in range(30):  # each round other bytes (leading spaces): not redeliveries
            publisher.publish_all([(topic(), b" " * n + payload) for payload in payloads])
        good = track("Door Counted", {"direction": "in", "count": 1})
        publisher.publish_all([(topic(), encode(good))])
        wait_for(lambda: stored_ids(agent.db) == [good["messageId"]], 20, "the good event")
        time.sleep(1.0)
    finally:
        done.set()
        listener.join()
    # The loop pings at most every half WATCHDOG_USEC (0.5 s) while it moves: every stalling
    # payload was judged without a gap of seconds (a backtracking check took tens of seconds
    # a payload; the margin is for a loaded machine).
    ended = time.monotonic()
    gaps = [b - a for a, b in zip([began, *pinged], [*pinged, ended], strict=True)]
    assert max(gaps) < 2.5, gaps
    reasons = {r for (r,) in query(agent.db, "SELECT reason FROM dead_letters")}
    assert reasons <= {"not_json", "too_deep", "invalid_number", "invalid_shape"}, reasons
    assert agent.process is not None
    assert agent.process.poll() is None
    publisher.close()
