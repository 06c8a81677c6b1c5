"""Readiness, Prometheus metrics and disk pressure of a running agent (a real broker, the agent
as a process with its HTTP server)."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.core.health import MB
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.service import free_port
from tests.conftest import AgentProcess
from tests.helpers import (
    Publisher,
    encode,
    one_of_each,
    query,
    stored_ids,
    topic,
    track,
    wait_for,
)
from tests.screens import answers, serving

pytestmark = pytest.mark.integration

TOKEN = "metrics-token-for-tests"  # noqa: S105 (a test value)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(base: str, headers: dict[str, str] | None = None) -> Samples:
    answer = httpx.get(f"{base}/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _counted(samples: Samples) -> tuple[int, int]:
    """Events stored and dead letters, all names and reasons together."""
    return (
        round(sum(v for (n, _), v in samples.items() if n == "edge_agent_events_stored_total")),
        round(sum(v for (n, _), v in samples.items() if n == "edge_agent_dead_letters_total")),
    )


def _ready(base: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"{base}/readyz")
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


def _check(base: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in _ready(base)[1]["checks"] if c["name"] == name)
    return found


def test_metrics_count_what_the_broker_delivered(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    agent, base = serving(broker, agent_factory, "metrics_open = true\n")
    before = _scrape(base)
    assert _value(before, "edge_agent_duplicates_total") == 0
    assert _value(before, "edge_agent_store_readable") == 1
    assert _value(before, "edge_agent_disk_free_bytes") > 0
    assert _value(before, "edge_agent_disk_min_free_bytes") == 200 * MB
    assert _value(before, "edge_agent_outbox_items", kind="insight") == 0
    assert _value(before, "edge_agent_sync_runs_total", outcome="error") == 0
    assert _value(before, "edge_agent_dp_epsilon_spent_today") == 0

    events = one_of_each()
    # Every kind once; an erasure request erases, it is not stored.
    kinds = {e.get("event", e["type"]) for e in events} - {"Erasure Requested"}
    publisher = Publisher(broker.port)
    try:
        publisher.publish_all(
            [(topic(), encode(e)) for e in events] + [(topic(), b"{not json"), (topic(), b"[]")]
        )
        wait_for(
            lambda: _counted(_scrape(base)) == (len(kinds), 2), 20, "the events and rejections"
        )
        # The same message again: stored once, counted as a duplicate.
        publisher.publish_all([(topic(), encode(events[0]))])
        wait_for(
            lambda: _value(_scrape(base), "edge_agent_duplicates_total") == 1,
            20,
            "the duplicate counted",
        )
    finally:
        publisher.close()

    after = _scrape(base)
    stored = {
        dict(labels)["event"]: value
        for (name, labels), value in after.items()
        if name == "edge_agent_events_stored_total"
    }
    assert stored == dict.fromkeys(kinds, 1.0)
    assert _value(after, "edge_agent_dead_letters_total", reason="not_json") == 1
    assert _value(after, "edge_agent_dead_letters_total", reason="empty_batch") == 1
    assert _value(after, "edge_agent_commit_seconds_count") >= 2
    assert _value(after, "edge_agent_commit_seconds_sum") > 0
    # The erasure request queued its notice for central, read from the store when scraped.
    queued = query(agent.db, "SELECT count(*) FROM outbox WHERE kind = 'erasure'")[0][0]
    assert _value(after, "edge_agent_outbox_items", kind="erasure") == queued == 1
    serving_models = dict(
        query(agent.db, "SELECT name, version FROM models WHERE status = 'serving'")
    )
    shown = {
        dict(labels)["model"]: dict(labels)["version"]
        for (name, labels), _ in after.items()
        if name == "edge_agent_model_info"
    }
    assert shown == serving_models
    assert _value(after, "edge_agent_disk_pressure") == 0
    assert _value(after, "edge_agent_ingest_unacked_events") == 0


def test_metrics_need_the_token_when_one_is_set(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    # Listening on every address is allowed with a token.
    _, base = serving(broker, agent_factory, f'host = "0.0.0.0"\nmetrics_token = "{TOKEN}"\n')
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token-of-some-length"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"bearer{TOKEN}"},
        {"Authorization": "Bearer " + "x" * 5000},
    ):
        answer = httpx.get(f"{base}/metrics", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.json()["error"] == "unauthorized"
        assert "metrics_token" in answer.json()["detail"]
        assert TOKEN not in answer.text
    assert (
        _value(_scrape(base, {"Authorization": f"Bearer {TOKEN}"}), "edge_agent_disk_pressure") == 0
    )
    # A header past what the HTTP parser takes is refused by the server itself.
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer "
            + b"x" * 200_000
            + b"\r\n\r\n"
        )
        assert raw.recv(64).split()[1] in (b"400", b"413", b"431")
    assert answers(base)
    # Health answers need no token.
    assert httpx.get(f"{base}/readyz").status_code in (200, 503)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("", id="loopback"),
        pytest.param('host = "0.0.0.0"\nmetrics_open = true\n', id="open-beyond-loopback"),
    ],
)
def test_metrics_need_a_token_unless_opened_on_loopback(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], extra: str
) -> None:
    _, base = serving(broker, agent_factory, extra)
    answer = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer anything-at-all"})
    assert answer.status_code == 403
    assert set(answer.json()) == {"error", "detail"}
    assert "[http] metrics_token" in answer.json()["detail"]
    assert answers(base)


def test_ready_only_while_the_broker_is_connected(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    broker.stop()
    port = free_port()
    agent = agent_factory(broker.port, f"[http]\nenabled = true\nport = {port}\n")
    agent.start(wait_connected=False)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: answers(base), 20, "the agent's HTTP server")

    status, body = _ready(base)
    assert status == 503
    assert body["status"] == "not_ready"
    assert {c["name"] for c in body["checks"]} == {"broker", "database", "disk", "models"}
    broker_down = _check(base, "broker")
    assert broker_down["ok"] is False
    assert "[mqtt]" in broker_down["reason"]

    broker.start()
    wait_for(lambda: _ready(base)[0] == 200, 30, "ready once the broker is up")
    status, body = _ready(base)
    assert body["status"] == "ready"
    assert all(c["ok"] for c in body["checks"])

    broker.stop()
    wait_for(lambda: _ready(base)[0] == 503, 30, "not ready while the broker is down")
    assert _check(base, "broker")["state"] == "disconnected"
    assert [c["name"] for c in _ready(base)[1]["checks"] if not c["ok"]] == ["broker"]
    broker.start()
    wait_for(lambda: _ready(base)[0] == 200, 30, "ready again")
    assert agent.process is not None
    assert agent.process.poll() is None


def _set_disk_floor(agent: AgentProcess, min_free_mb: int) -> None:
    text = agent.config.read_text()
    head = text.split("[store]")[0]
    agent.config.write_text(f"{head}[store]\nmin_free_mb = {min_free_mb}\n")


def test_under_disk_pressure_nothing_is_committed_nor_lost(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    agent, base = serving(broker, agent_factory, "metrics_open = true\n")
    publisher = Publisher(broker.port)
    try:
        first = track("Door Counted", {"direction": "in", "count": 1})
        publisher.publish_all([(topic(), encode(first))])
        wait_for(lambda: len(stored_ids(agent.db)) == 1, 20, "the first event stored")
        assert agent.stop() == 0

        # A floor above the disk's free space: the same as a disk that filled up.
        stats = os.statvfs(agent.db.parent)
        _set_disk_floor(agent, stats.f_bavail * stats.f_frsize // MB + 1_000_000)
        # Under pressure the loop does not read what the receiver sends, "connected" included.
        agent.start(wait_connected=False)
        wait_for(lambda: answers(base), 20, "the agent's HTTP server")
        wait_for(lambda: not _check(base, "disk")["ok"], 20, "/readyz to name the disk")
        disk = _check(base, "disk")
        assert disk["state"] == "low"
        assert "min_free_mb" in disk["reason"]
        assert _ready(base)[0] == 503
        assert _value(_scrape(base), "edge_agent_disk_pressure") == 1

        # More than the receiver's pipe holds (a few hundred KB), so its sends block too.
        late = [
            track("Product Viewed", {"product_id": f"p{i}", "name": "x" * 200}) for i in range(1500)
        ]
        publisher.publish_all([(topic(), encode(e)) for e in late])
        for _ in range(20):
            samples = _scrape(base)
            assert _value(samples, "edge_agent_disk_pressure") == 1
            assert not any(n == "edge_agent_events_stored_total" for n, _ in samples)
            assert stored_ids(agent.db) == [first["messageId"]]
        agent.wait_log("disk_pressure_started")
        assert agent.log_text().count('"event": "disk_pressure_started"') == 1
        assert '"event": "disk_pressure_ended"' not in agent.log_text()
        agent.stop()
        assert stored_ids(agent.db) == [first["messageId"]]

        # Space again: the broker redelivers everything the agent never acknowledged.
        _set_disk_floor(agent, 1)
        agent.start(wait_connected=False)
        expected = {first["messageId"], *(e["messageId"] for e in late)}
        wait_for(lambda: len(stored_ids(agent.db)) >= len(expected), 60, "every event stored")
        ids = stored_ids(agent.db)
        assert len(ids) == len(set(ids)) == len(expected)
        assert set(ids) == expected
        wait_for(lambda: _ready(base)[0] == 200, 30, "ready once space is back")
        assert _value(_scrape(base), "edge_agent_disk_pressure") == 0
    finally:
        publisher.close()


def _receiver_pid(agent: AgentProcess) -> int:
    assert agent.process is not None
    pid = agent.process.pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if b"edge_agent.mqtt.receiver" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise AssertionError("the agent has no receiver process")


def test_a_stopped_receiver_is_not_ready_and_is_replaced(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess]
) -> None:
    port = free_port()
    agent = agent_factory(broker.port, f"[http]\nenabled = true\nport = {port}\n")
    agent.start()
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ready(base)[0] == 200, 30, "ready")
    stopped = _receiver_pid(agent)
    os.kill(stopped, signal.SIGSTOP)  # alive to the kernel, but nothing flows
    publisher = Publisher(broker.port)
    events = [track("Door Counted", {"direction": "in", "count": 1}, "door-1") for _ in range(50)]
    publisher.publish_all([(topic("door-1"), encode(e)) for e in events])
    wait_for(lambda: _check(base, "broker")["state"] == "stalled", 15, "/readyz to say stalled")
    assert _ready(base)[0] == 503
    agent.wait_log("receiver_killed", timeout_s=40)
    wait_for(lambda: _ready(base)[0] == 200, 30, "ready with a new receiver")
    assert _receiver_pid(agent) != stopped
    wanted = {str(e["messageId"]) for e in events}
    wait_for(lambda: wanted <= set(stored_ids(agent.db)), 30, "what came while it was stopped")
    publisher.close()
