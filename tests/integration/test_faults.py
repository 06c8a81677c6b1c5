"""Faults of the machine around the agent, with real processes: a small or full data disk,
a broker killed with SIGKILL."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.measure import peak_rss_mb
from edge_agent.mqtt.broker import Mosquitto
from tests.conftest import AgentProcess
from tests.helpers import (
    Publisher,
    cli,
    encode,
    query,
    stored_ids,
    topic,
    track,
    wait_for,
)

pytestmark = pytest.mark.integration

MakeAgent = Callable[..., AgentProcess]


def _as_root(*command: str) -> subprocess.CompletedProcess[bytes]:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    return subprocess.run([*prefix, *command], capture_output=True, check=False)


@contextlib.contextmanager
def small_filesystem(folder: Path, megabytes: int) -> Iterator[Path]:
    """A filesystem of its own at ``folder`` (tmpfs), so filling it fills nothing else."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = _as_root(
        "mount", "-t", "tmpfs", "-o", f"size={megabytes}m,uid={os.getuid()}", "tmpfs", str(folder)
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small filesystem needs root or sudo -n: {mounted.stderr.decode()[:200]}")
    try:
        yield folder
    finally:
        _as_root("umount", "-l", str(folder))


def _fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte; the file that does it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1024 * 1024, 4096, 1):  # then what the last megabyte and page left
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_one_device_flooding_garbage_cannot_stop_the_others(
    tmp_path: Path, broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    # 450 distinct 60 KB payloads, 27 MB, would not fit on a 32 MB disk the agent must keep
    # 8 MB of free: kept whole, they would stop ingest for every device.
    with small_filesystem(tmp_path / "agent0", 32):
        agent = agent_factory(broker.port, "[store]\nmin_free_mb = 8\n")
        agent.start()
        kiosk = Publisher(broker.port)
        garbage = [b"%05d" % n + os.urandom(30 * 1024).hex().encode() for n in range(450)]
        kiosk.publish_all([(topic("kiosk-9"), raw) for raw in garbage], timeout_s=120)
        wait_for(
            lambda: (
                query(
                    agent.db,
                    "SELECT (SELECT sum(occurrences) FROM dead_letters)"
                    " + coalesce((SELECT sum(occurrences) FROM dead_letters_unkept), 0)",
                )
                == [(450,)]
            ),
            60,
            "every garbage payload accounted for",
        )
        kept = query(agent.db, "SELECT count(*), sum(length(raw)) FROM dead_letters")[0]
        assert kept[0] <= 100
        assert kept[1] <= 100 * 61 * 1024
        time.sleep(1.5)  # the agent measures free space every second: let it look again
        good = [track("Door Counted", {"direction": "in", "count": 1}, "door-1") for _ in range(20)]
        kiosk.publish_all([(topic("door-1"), encode(e)) for e in good])
        wanted = {str(e["messageId"]) for e in good}
        wait_for(lambda: wanted <= set(stored_ids(agent.db)), 30, "the good device's events")
        assert not agent.logged("disk_pressure_started")
        status = cli("--config", str(agent.config), "status")
        assert f"dead letters:     450 ({450 - kept[0]} over the budget" in status.stdout
        listed = cli("--config", str(agent.config), "dead-letters", "list", "--limit", "1")
        assert f"{450 - kept[0]} more not_json from kiosk-9" in listed.stdout
        kiosk.close()
        agent.stop()


def test_the_agent_starts_on_a_full_disk_and_resumes_when_space_returns(
    tmp_path: Path, broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    with small_filesystem(tmp_path / "agent0", 16):
        agent = agent_factory(broker.port, "[store]\nmin_free_mb = 2\n")
        agent.start()
        agent.stop()
        filler = _fill(agent.folder)
        assert shutil.disk_usage(agent.folder).free < 64 * 1024
        agent.start(wait_connected=False)
        agent.wait_log("disk_full_at_start")
        devices = Publisher(broker.port)
        events = [
            track("Door Counted", {"direction": "in", "count": 1}, "door-1") for _ in range(5)
        ]
        devices.publish_all([(topic("door-1"), encode(e)) for e in events])
        assert agent.process is not None
        assert agent.process.poll() is None
        filler.unlink()
        wanted = {str(e["messageId"]) for e in events}
        wait_for(lambda: wanted <= set(stored_ids(agent.db)), 60, "the events once space is back")
        assert agent.process.poll() is None
        devices.close()
        agent.stop()


def test_a_broker_killed_after_its_pubacks_keeps_all_but_the_documented_window(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    agent.stop()  # devices go on publishing while the agent is away: the broker queues
    devices = Publisher(broker.port)
    events = [track("Door Counted", {"direction": "in", "count": 1}, "door-1") for _ in range(450)]
    devices.publish_all([(topic("door-1"), encode(e)) for e in events])  # every PUBACK came
    devices.close()
    broker.stop(kill=True)
    broker.start()
    agent.start()
    # Saved every 100 changes (docs/operations.md): at most the last 99 are lost.
    wait_for(lambda: len(stored_ids(agent.db)) >= len(events) - 99, 60, "the saved backlog")
    stored = stored_ids(agent.db)
    assert len(stored) == len(set(stored))
    assert set(stored) <= {str(e["messageId"]) for e in events}
    agent.stop()


def _peak_rss_mb(agent: AgentProcess) -> float:
    """The agent's and its receiver's peak resident memory together."""
    assert agent.process is not None
    pid = agent.process.pid
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    return sum(peak_rss_mb(p) for p in pids)


def test_payloads_far_over_the_limit_cost_the_agent_no_memory(
    tmp_path: Path, agent_factory: MakeAgent
) -> None:
    # A broker set up by hand with its own, larger packet limit: the agent is the last guard.
    folder = tmp_path / "permissive-broker"
    folder.mkdir()
    broker = Mosquitto(folder, max_payload_bytes=16 * 1024 * 1024 - 8192)
    broker.start()
    try:
        agent = agent_factory(broker.port)
        agent.start()
        before = _peak_rss_mb(agent)
        flood = Publisher(broker.port, window=4)
        payloads = [b"%04d" % n + b"x" * (15 * 1024 * 1024) for n in range(40)]
        flood.publish_all([(topic("kiosk-1"), p) for p in payloads], timeout_s=120)
        wait_for(
            lambda: query(agent.db, "SELECT count(*) FROM dead_letters") == [(40,)], 60, "all 40"
        )
        rows = query(agent.db, "SELECT reason, length(raw), raw_size, raw_sha256 FROM dead_letters")
        assert {(r[0], r[1], r[2]) for r in rows} == {
            ("payload_too_large", 64 * 1024, 15 * 1024 * 1024 + 4)
        }
        assert {r[3] for r in rows} == {hashlib.sha256(p).hexdigest() for p in payloads}
        # paho holds one packet at a time; what goes on is its first 64 KiB.
        assert _peak_rss_mb(agent) - before < 100
        flood.close()
    finally:
        broker.stop()


def test_the_written_broker_refuses_packets_far_over_the_agents_limit(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    device = Publisher(broker.port)
    device.publish(topic("kiosk-1"), b"x" * (1024 * 1024))  # never acknowledged: it knows
    wait_for(lambda: "disconnected due to oversize packet" in broker.log_tail(), 10, "a refusal")
    assert query(agent.db, "SELECT count(*) FROM dead_letters") == [(0,)]
    device.close()
