"""Broker persistence benchmark: what saving queued messages promptly costs, and what it saves.

Run it with ``python -m bench.broker``. For two Mosquitto configurations, the one edge-agent
writes (saved after every change) and a REFERENCE that differs only in saving every 30 s,
it measures with the agent's session offline (the case persistence exists for), or with
``--live`` connected and acknowledging at once:

* the publish rate a device sees (QoS 1, PUBACK awaited) and the PUBACK latency p50/p99;
* the broker's peak RSS;
* how many PUBACKed events survive a ``kill -9`` of the broker straight after the last PUBACK.

Everything it starts is stopped, and its temporary folder removed, on success and error.
"""

from __future__ import annotations

import argparse
import getpass
import re
import shutil
import tempfile
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from bench.measure import mb, percentile, vmhwm_kb
from edge_agent.core.broker import mosquitto_conf
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.service import free_port

TOPIC = "sites/bench/devices/kiosk/events"
SAVE = re.compile(r"^autosave_on_changes true\nautosave_interval (\d+)\n", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    """One configuration's figures."""

    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    rss_mb: float
    survived: int
    sent: int


def _config(folder: Path, port: int, changes: int | None) -> Path:
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    text = mosquitto_conf(
        user=getpass.getuser(),
        listener=[f"listener {port} 127.0.0.1"],
        access=["allow_anonymous true"],
        data=str(data),
        log=str(folder / "mosquitto.log"),
    )
    if not SAVE.search(text):
        raise RuntimeError("the written configuration no longer saves on changes")
    if changes is None:
        text = SAVE.sub("autosave_interval 30\n", text)
    elif changes:
        text = SAVE.sub(f"autosave_on_changes true\nautosave_interval {changes}\n", text)
    path = folder / "mosquitto.conf"
    path.write_text(text)
    return path


def _session(port: int, collect: list[bytes] | None = None) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sink", protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    subscribed = threading.Event()
    client.on_subscribe = lambda *_: subscribed.set()
    client.on_connect = lambda c, *_: c.subscribe(TOPIC, options=SubscribeOptions(qos=1))
    if collect is not None:
        client.on_message = lambda _c, _u, m: collect.append(bytes(m.payload))
    client.connect("127.0.0.1", port, clean_start=False, properties=props)
    client.loop_start()
    if not subscribed.wait(10):
        raise RuntimeError("the sink's subscription was not confirmed")
    return client


def _publish(port: int, count: int, size: int) -> tuple[float, list[float]]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="kiosk", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(20)
    # (mid, time) in order on each side; the k-th PUBACK of a mid answers its k-th publish.
    # No lock is shared with paho's thread: it holds its own while calling on_publish.
    sent: list[tuple[int, float]] = []
    acks: list[tuple[int, float]] = []
    done = threading.Semaphore(0)
    window = threading.Semaphore(20)  # as many in flight as paho sends: latency, not queueing

    def acked(_c: mqtt.Client, _u: object, mid: int, _rc: object, _p: object) -> None:
        acks.append((mid, time.perf_counter()))
        window.release()
        done.release()

    client.on_publish = acked
    client.connect("127.0.0.1", port)
    client.loop_start()
    body = b"x" * size
    begin = time.perf_counter()
    for i in range(count):
        window.acquire()
        at = time.perf_counter()
        sent.append((client.publish(TOPIC, b"%08d" % i + body, qos=1).mid, at))
    for _ in range(count):
        if not done.acquire(timeout=60):
            raise RuntimeError("the broker stopped acknowledging publishes")
    elapsed = time.perf_counter() - begin
    client.disconnect()
    client.loop_stop()
    pending: dict[int, deque[float]] = defaultdict(deque)
    for mid, at in sent:
        pending[mid].append(at)
    return count / elapsed, sorted(at - pending[mid].popleft() for mid, at in acks)


def measure(name: str, changes: int | None, count: int, size: int, live: bool) -> Run:
    """One configuration: publish to the sink's session (``live``: with the sink connected,
    else offline), kill the broker, count what the sink got before and after."""
    folder = Path(tempfile.mkdtemp(prefix="bench-broker-"))
    try:
        port = free_port()
        broker = Mosquitto(folder, port=port, config=_config(folder, port, changes))
        broker.start()
        try:
            received: list[bytes] = []
            sink = _session(broker.port, received)
            if not live:
                sink.disconnect()
                sink.loop_stop()
            rate, latencies = _publish(broker.port, count, size)
            if live:
                sink.disconnect()
                sink.loop_stop()
            assert broker.process is not None
            rss = mb(vmhwm_kb(broker.process.pid))
            broker.stop(kill=True)
            broker.start()
            sink = _session(broker.port, received)
            last, quiet_since = -1, time.monotonic()
            while time.monotonic() - quiet_since < 5:
                if len(received) != last:
                    last, quiet_since = len(received), time.monotonic()
                time.sleep(0.1)
            sink.disconnect()
            sink.loop_stop()
        finally:
            broker.stop()
        survived = len({payload[:8] for payload in received})
        return Run(
            name,
            rate,
            percentile(latencies, 0.5) * 1000,
            percentile(latencies, 0.99) * 1000,
            rss,
            survived,
            count,
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    """Measure both configurations and print one line each and the ratio."""
    parser = argparse.ArgumentParser(prog="python -m bench.broker", description=__doc__)
    parser.add_argument("--events", type=int, default=20000, help="events queued (default 20000)")
    parser.add_argument("--size", type=int, default=400, help="payload bytes (default 400)")
    parser.add_argument(
        "--changes",
        type=int,
        default=0,
        help="save after this many changes instead of what edge-agent writes (0: as written)",
    )
    parser.add_argument(
        "--live", action="store_true", help="with the agent's session connected, not offline"
    )
    args = parser.parse_args()
    written = SAVE.search(mosquitto_conf(user="u", listener=[], access=[], data="d", log="l"))
    assert written is not None
    every = args.changes or int(written.group(1))
    runs = [
        measure(f"save every {every} changes", args.changes, args.events, args.size, args.live),
        measure("reference (save every 30 s)", None, args.events, args.size, args.live),
    ]
    mode = "delivered to a connected" if args.live else "queued for an offline"
    print(f"{args.events} events of {args.size} B {mode} session, then kill -9 of the broker")
    for run in runs:
        print(
            f"{run.name:32} {run.rate:8.0f} ev/s  PUBACK p50 {run.p50_ms:6.2f} ms"
            f"  p99 {run.p99_ms:6.2f} ms  broker RSS {run.rss_mb:6.1f} MB"
            f"  survived kill -9: {run.survived}/{run.sent}"
        )
    print(f"publish rate, written/reference: {runs[0].rate / runs[1].rate:.3f}")


if __name__ == "__main__":
    main()
