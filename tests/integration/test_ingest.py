"""Ingest through a real Mosquitto into SQLite on disk, with the agent as its own process."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge_agent.mqtt.broker import Mosquitto
from tests.conftest import AgentProcess
from tests.helpers import (
    Publisher,
    dead_letter_reasons,
    encode,
    iso_now,
    one_of_each,
    query,
    stored_ids,
    topic,
    track,
    wait_for,
)

pytestmark = pytest.mark.integration

MakeAgent = Callable[..., AgentProcess]


def _door(n: int) -> list[dict[str, object]]:
    return [
        track("Door Counted", {"direction": "in", "count": 1 + i % 3}, "door-1") for i in range(n)
    ]


def _assert_all_acknowledged(agent: AgentProcess, publisher: Publisher) -> None:
    """Restart the agent and push a sentinel: an unacknowledged message would come back first."""
    agent.stop()
    before = query(agent.db, "SELECT value FROM counters WHERE name = 'duplicates'")
    agent.start()
    sentinel = track("Door Counted", {"direction": "out", "count": 1}, "door-1")
    publisher.publish_all([(topic("door-1"), encode(sentinel))])
    wait_for(lambda: sentinel["messageId"] in stored_ids(agent.db), 30, "the sentinel")
    after = query(agent.db, "SELECT value FROM counters WHERE name = 'duplicates'")
    assert after == before, "messages were redelivered: some were never acknowledged"


def test_every_event_kind_is_stored_once_and_acknowledged(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    # Erasure requests are not stored: they erase (tested with the privacy rules).
    kinds = [e for e in one_of_each() if e.get("event") != "Erasure Requested"]
    events = [
        dict(event, messageId=f"{n}-{event['messageId']}") for n in range(40) for event in kinds
    ]
    items = [(topic("till-1"), encode(e)) for e in events[:-100]]
    items.append((topic("till-1"), encode(events[-100:])))  # the rest as one array payload
    publisher.publish_all(items)
    wait_for(lambda: len(stored_ids(agent.db)) >= len(events), 60, "all events stored")
    ids = stored_ids(agent.db)
    assert sorted(ids) == sorted(str(e["messageId"]) for e in events)
    assert dead_letter_reasons(agent.db) == {}
    names = {row[0] for row in query(agent.db, "SELECT DISTINCT coalesce(event, type) FROM events")}
    assert names == {str(e.get("event", "identify")) for e in kinds}
    agent.wait_log("retention_done")  # the scheduler runs the retention job at start-up
    _assert_all_acknowledged(agent, publisher)
    publisher.close()


def test_redelivered_and_replayed_events_are_stored_once(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    events = _door(50)
    items = [(topic("door-1"), encode(e)) for e in events]
    publisher.publish_all(items + items + items[:10])
    wait_for(
        lambda: query(agent.db, "SELECT value FROM counters WHERE name = 'duplicates'") == [(60,)],
        30,
        "duplicates counted",
    )
    assert sorted(stored_ids(agent.db)) == sorted(str(e["messageId"]) for e in events)
    publisher.close()


def test_kill9_at_random_moments_loses_nothing_and_duplicates_nothing(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    rng = random.Random(20261126)
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    events = _door(6000)
    done = threading.Event()

    def publish() -> None:
        publisher.publish_all([(topic("door-1"), encode(e)) for e in events], timeout_s=120)
        done.set()

    sender = threading.Thread(target=publish)
    sender.start()
    for _ in range(3):
        wait_for(lambda: len(stored_ids(agent.db)) > 0 or done.is_set(), 30, "ingest under way")
        threading.Event().wait(rng.uniform(0.05, 0.6))
        agent.kill9()
        agent.start(wait_connected=False)
    sender.join(180)
    assert done.is_set(), "the publisher did not get every PUBACK"
    wait_for(
        lambda: len(stored_ids(agent.db)) >= len(events), 120, "every event stored after the kills"
    )
    ids = stored_ids(agent.db)
    assert len(ids) == len(set(ids)) == len(events)
    assert set(ids) == {str(e["messageId"]) for e in events}
    _assert_all_acknowledged(agent, publisher)
    publisher.close()


def test_receiver_process_exits_when_the_agent_is_killed(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    assert agent.process is not None
    children = (
        Path(f"/proc/{agent.process.pid}/task/{agent.process.pid}/children").read_text().split()
    )
    assert children, "the MQTT receiver runs as a child process"
    agent.kill9()
    wait_for(
        lambda: not any(Path(f"/proc/{pid}").exists() for pid in children),
        10,
        "the receiver to exit",
    )


def test_broker_outage_loses_nothing_the_broker_accepted(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    first = _door(1500)
    publisher = Publisher(broker.port)
    publisher.publish_all([(topic("door-1"), encode(e)) for e in first])
    broker.stop()  # SIGTERM: Mosquitto saves its persistence file, as a service restart does
    publisher.close()
    broker.start()
    agent.wait_log("broker_connected", 2)
    second = _door(500)
    publisher = Publisher(broker.port)
    publisher.publish_all([(topic("door-1"), encode(e)) for e in second])
    wanted = {str(e["messageId"]) for e in first + second}
    wait_for(lambda: wanted <= set(stored_ids(agent.db)), 60, "every accepted event stored")
    assert len(stored_ids(agent.db)) == len(wanted)
    assert '"event": "broker_disconnected"' in agent.log_text()
    publisher.close()


def test_events_queued_while_the_agent_is_down_survive_a_broker_restart(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    agent.stop()
    publisher = Publisher(broker.port)
    events = _door(3000)  # three times Mosquitto's default per-client queue
    publisher.publish_all([(topic("door-1"), encode(e)) for e in events])
    publisher.close()
    broker.stop()  # the queue for the absent agent must survive a broker restart too
    broker.start()
    publisher = Publisher(broker.port)
    agent.start()
    wait_for(lambda: len(stored_ids(agent.db)) >= len(events), 60, "the backlog stored")
    assert sorted(stored_ids(agent.db)) == sorted(str(e["messageId"]) for e in events)
    publisher.close()


HOSTILE: list[tuple[str, str, bytes, str]] = [
    ("not-json", "till-1", b"this is not json", "not_json"),
    ("invalid-utf8", "till-1", b'{"type": "track", "event": "\xff\xfe"}', "not_utf8"),
    (
        "ten-megabytes",
        "till-1",
        b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}',
        "payload_too_large",
    ),
    ("deep-nesting", "till-1", b"[" * 10_000 + b"]" * 10_000, "too_deep"),
    ("nan", "till-1", b'{"type": "track", "count": NaN}', "invalid_number"),
    ("infinity", "till-1", b'{"type": "track", "count": 1e400}', "invalid_number"),
    (
        "huge-integer",
        "door-1",
        encode(track("Door Counted", {"direction": "in", "count": 10**30}, "door-1")),
        "invalid_number",
    ),
    (
        "wrong-site",
        "till-1",
        encode(track("Door Counted", {"direction": "in", "count": 1})),
        "wrong_site",
    ),
    ("five-thousand-array", "door-1", encode(_door(5000)), "batch_too_large"),
    ("unknown-event", "till-1", encode(track("Coupon Redeemed", {"coupon": "X"})), "unknown_event"),
    (
        "unknown-type",
        "till-1",
        encode({**track("Door Counted", {}), "type": "page"}),
        "unknown_type",
    ),
    (
        "year-1970",
        "door-1",
        encode(
            {
                **track("Door Counted", {"direction": "in", "count": 1}, "door-1"),
                "timestamp": "1970-01-01T00:00:00Z",
            }
        ),
        "timestamp_too_old",
    ),
    (
        "year-2999",
        "door-1",
        encode(
            {
                **track("Door Counted", {"direction": "in", "count": 1}, "door-1"),
                "timestamp": "2999-01-01T00:00:00Z",
            }
        ),
        "timestamp_in_future",
    ),
    (
        "device-mismatch",
        "till-2",
        encode(track("Door Counted", {"direction": "in", "count": 1}, "till-1")),
        "device_mismatch",
    ),
    ("empty-array", "till-1", b"[]", "empty_batch"),
    ("scalar", "till-1", b"42", "invalid_shape"),
]
WRONG_TYPES: list[tuple[str, object, str]] = [
    ("type", 7, "unknown_type"),
    ("messageId", 12, "invalid_shape"),
    ("messageId", "", "invalid_shape"),
    ("timestamp", 1732615200, "invalid_shape"),
    ("timestamp", "yesterday", "invalid_timestamp"),
    ("anonymousId", {"a": 1}, "invalid_shape"),
    ("userId", ["u"], "invalid_shape"),
    ("event", None, "invalid_shape"),
    ("properties", "p", "invalid_shape"),
    ("traits", 3, "invalid_shape"),
    ("context", [], "invalid_shape"),
]


@pytest.fixture
def permissive_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker that carries packets up to 16 MiB, as one set up by hand might."""
    folder = tmp_path / "permissive-broker"
    folder.mkdir()
    mosquitto = Mosquitto(folder, max_payload_bytes=16 * 1024 * 1024 - 8192)
    mosquitto.start()
    yield mosquitto
    mosquitto.stop()


def test_hostile_payloads_become_dead_letters_and_good_events_still_flow(
    permissive_broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    broker = permissive_broker
    # Payloads up to 4 MiB, so the 5,000-event array is judged by its count, not its size.
    agent = agent_factory(broker.port, "[ingest]\nmax_payload_bytes = 4194304\n")
    agent.start()
    publisher = Publisher(broker.port)
    good: list[str] = []
    expected: dict[str, int] = {}
    for name, device, payload, reason in HOSTILE:
        site_topic = topic(device, site="other-site" if name == "wrong-site" else "test-site")
        ok = track("Door Counted", {"direction": "in", "count": 1}, "door-1")
        good.append(str(ok["messageId"]))
        publisher.publish_all([(site_topic, payload), (topic("door-1"), encode(ok))])
        expected[reason] = expected.get(reason, 0) + 1
    for field, value, reason in WRONG_TYPES:
        event = track("Door Counted", {"direction": "in", "count": 1}, "door-1")
        event[field] = value
        publisher.publish_all([(topic("door-1"), encode(event))])
        expected[reason] = expected.get(reason, 0) + 1
    for field, value in [("direction", "sideways"), ("count", "2"), ("count", -1), ("count", 2.5)]:
        event = track("Door Counted", {"direction": "in", "count": 1}, "door-1")
        event["properties"][field] = value
        publisher.publish_all([(topic("door-1"), encode(event))])
        expected["invalid_properties"] = expected.get("invalid_properties", 0) + 1
    total = sum(expected.values())
    wait_for(lambda: sum(dead_letter_reasons(agent.db).values()) >= total, 60, "every dead letter")
    wait_for(lambda: set(good) <= set(stored_ids(agent.db)), 30, "the good events in between")
    assert dead_letter_reasons(agent.db) == expected
    ((kept, size, digest),) = query(
        agent.db, "SELECT length(raw), raw_size, raw_sha256 FROM dead_letters WHERE raw_size > 5e6"
    )
    assert (kept, size) == (64 * 1024, 10 * 1024 * 1024 + 9)
    ten_megabytes = next(p for name, _, p, _ in HOSTILE if name == "ten-megabytes")
    assert digest == hashlib.sha256(ten_megabytes).hexdigest()  # of what came, not what was kept
    assert agent.process is not None
    assert agent.process.poll() is None
    assert "aaaaaaaaaa" not in agent.log_text(), "payloads never reach the log"
    publisher.close()


def test_an_array_keeps_its_good_events_and_dead_letters_the_bad_one(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    good = _door(3)
    bad = track("Door Counted", {"direction": "up", "count": 1}, "door-1")
    publisher.publish_all([(topic("door-1"), encode([good[0], bad, good[1], good[2]]))])
    wait_for(
        lambda: len(stored_ids(agent.db)) == 3 and bool(dead_letter_reasons(agent.db)),
        30,
        "array split",
    )
    assert dead_letter_reasons(agent.db) == {"invalid_properties": 1}
    (raw,) = query(agent.db, "SELECT raw FROM dead_letters")[0]
    assert json.loads(raw)["messageId"] == bad["messageId"]
    publisher.close()


def test_timestamps_without_timezone_are_rejected_with_advice(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    event = track("Door Counted", {"direction": "in", "count": 1}, "door-1")
    event["timestamp"] = iso_now().replace("+00:00", "")
    publisher.publish_all([(topic("door-1"), encode(event))])
    wait_for(lambda: bool(dead_letter_reasons(agent.db)), 30, "a dead letter")
    assert query(agent.db, "SELECT reason, detail FROM dead_letters") == [
        (
            "invalid_timestamp",
            f"timestamp {event['timestamp']!r} has no timezone (use e.g. 2026-11-26T10:00:00Z)",
        )
    ]
    publisher.close()


def test_an_agent_started_before_its_broker_connects_when_the_broker_comes(
    tmp_path: Path, agent_factory: MakeAgent
) -> None:
    late = Mosquitto(tmp_path / "late-broker")
    (tmp_path / "late-broker").mkdir()
    agent = agent_factory(late.port)
    agent.start(wait_connected=False)
    agent.wait_log("broker_disconnected")
    assert "cannot reach" in agent.log_text()
    late.start()
    try:
        agent.wait_log("broker_connected")
        publisher = Publisher(late.port)
        events = _door(20)
        publisher.publish_all([(topic("door-1"), encode(e)) for e in events])
        wait_for(lambda: len(stored_ids(agent.db)) == 20, 30, "events after the late start")
        publisher.close()
    finally:
        agent.stop()
        late.stop()


def test_a_killed_receiver_is_restarted_and_nothing_is_lost(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    assert agent.process is not None
    publisher = Publisher(broker.port)
    first = _door(300)
    publisher.publish_all([(topic("door-1"), encode(e)) for e in first])
    children = Path(f"/proc/{agent.process.pid}/task/{agent.process.pid}/children").read_text()
    os.kill(int(children.split()[0]), signal.SIGKILL)
    agent.wait_log("receiver_died")
    second = _door(300)
    publisher.publish_all([(topic("door-1"), encode(e)) for e in second])
    wanted = {str(e["messageId"]) for e in first + second}
    wait_for(lambda: set(stored_ids(agent.db)) == wanted, 60, "every event after the restart")
    assert len(stored_ids(agent.db)) == len(wanted)
    publisher.close()


def test_retained_messages_are_taken_once_not_on_every_resubscribe(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    publisher = Publisher(broker.port)
    (kept,) = _door(1)
    # Devices that set the retain flag: the broker keeps the last message of each topic for
    # new subscribers.
    publisher.publish(topic("door-1"), encode(kept), retain=True)
    publisher.publish(topic("door-2"), b"{retained garbage", retain=True)
    assert publisher.window.drain(10)
    agent = agent_factory(broker.port)
    agent.start()
    wait_for(lambda: stored_ids(agent.db) == [kept["messageId"]], 30, "the retained event")
    wait_for(lambda: dead_letter_reasons(agent.db) == {"not_json": 1}, 30, "the retained letter")
    for _ in range(2):
        agent.stop()
        agent.start()
        (marker,) = _door(1)
        publisher.publish_all([(topic("door-1"), encode(marker))])
        mark = str(marker["messageId"])
        wait_for(lambda: mark in stored_ids(agent.db), 30, "the marker")  # noqa: B023
    publisher.close()
    duplicates = query(agent.db, "SELECT value FROM counters WHERE name = 'duplicates'")
    assert duplicates in ([], [(0,)])
    assert query(agent.db, "SELECT occurrences FROM dead_letters") == [(1,)]


MISADDRESSED = [
    pytest.param("sites/test-site/devices/door-1/event", id="typo-in-last-level"),
    pytest.param("sites/test-site/devices/door-1/events/extra", id="extra-level"),
    pytest.param("Sites/test-site/devices/door-1/events", id="capital-letter"),
    pytest.param("sites/test-site/device/door-1/events", id="typo-in-middle"),
    pytest.param("door-1/events", id="elsewhere-entirely"),
    pytest.param("sites/test-site/devices//events", id="empty-device"),
]


def test_misaddressed_events_become_bad_topic_dead_letters_on_a_budget(
    broker: Mosquitto, agent_factory: MakeAgent
) -> None:
    agent = agent_factory(broker.port)
    agent.start()
    publisher = Publisher(broker.port)
    topics = [str(p.values[0]) for p in MISADDRESSED]
    event = encode(track("Door Counted", {"direction": "in", "count": 1}, "door-1"))
    publisher.publish_all([(t, event) for t in topics])
    wait_for(lambda: dead_letter_reasons(agent.db) == {"bad_topic": len(topics)}, 30, "each seen")
    assert {row[0] for row in query(agent.db, "SELECT topic FROM dead_letters")} == set(topics)
    # A device misaddressing in a loop takes the budget of topics naming no device, no more.
    publisher.publish_all([(f"typo/{n}", b'{"n": %d}' % n) for n in range(400)])
    wait_for(lambda: _letters(agent.db)[0] == 406, 30, "the flood kept or counted")
    # 50 kept whole for topics naming no device, 1 in 100 of the rest as samples.
    assert _letters(agent.db)[1] == 406 - 1 - 50 - 3
    good = track("Door Counted", {"direction": "in", "count": 1}, "door-1")
    publisher.publish_all([(topic("door-1"), encode(good))])
    wait_for(lambda: str(good["messageId"]) in stored_ids(agent.db), 30, "a good event after it")
    publisher.close()


def _letters(db: Path) -> tuple[int, int]:
    """Dead letters by occurrence, kept or counted; and those counted only."""
    ((kept, unkept),) = query(
        db,
        "SELECT (SELECT sum(occurrences) FROM dead_letters),"
        " (SELECT coalesce(sum(occurrences), 0) FROM dead_letters_unkept)",
    )
    return int(kept) + int(unkept), int(unkept)
