"""The demo: one whole site on this machine (broker, agent, simulated and faulty devices)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.collector.local import LocalCollector
from edge_agent.demo.agent import SUBSCRIBED, AgentChild
from edge_agent.demo.simulate import LOYALTY, TILLS, SimulatorOptions, run_simulator
from edge_agent.errors import EdgeAgentError, StorageError
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.service import free_port
from edge_agent.store.database import Store
from edge_agent.store.screens import Screens

DEMO_SITE = "demo-site"
#: Who signs in to the demo's central: an admin, so every page and endpoint can be seen.
DEMO_USER = "demo"
_FAULT_EVERY_S = 4.0
_STATUS_EVERY_S = 10.0


def faulty_payloads(rng: random.Random, site: str) -> Iterator[tuple[str, bytes]]:
    """What a badly set-up device sends: each one must end up as a dead letter with a reason."""
    device = "kiosk-9"
    topic = f"sites/{site}/devices/{device}/events"

    def event(**fields: object) -> bytes:
        base: dict[str, object] = {
            "type": "track",
            "messageId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "anonymousId": "kiosk-visit",
            "event": "Feedback Submitted",
            "properties": {"nps": 9},
            "context": {"device": {"id": device}},
        }
        base.update(fields)
        return json.dumps(base).encode()

    while True:
        yield from (
            (topic, event(timestamp="2031-01-01T00:00:00Z")),  # clock far ahead
            (topic, event(event="Smiley Pressed")),  # event not in the schema
            (topic, event(properties={"nps": "ten"})),  # wrong property type
            (topic, b"nps=9;ces=2"),  # not JSON at all
            (f"sites/other-shop/devices/{device}/events", event()),  # site id typo
        )


def _publish_faults(port: int, site: str, stop: threading.Event) -> None:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="demo-faulty-kiosk", protocol=mqtt.MQTTv5
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in faulty_payloads(random.Random(), site):
            if stop.wait(_FAULT_EVERY_S):
                return
            client.publish(topic, payload, qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


_SUBSCRIBE_TIMEOUT_S = 30.0
_SYNC_EVERY_S = 30
#: The packaged sales' first three trading days are replayed as the three days before now,
#: so the site starts with a history its models learn from at once.
HISTORY_DAYS = 3
_STORED_TIMEOUT_S = 120.0
_TRAIN_TIMEOUT_S = 300.0


def _train_on_history(
    config: Path, db: Path, replayed: int, log: Path, stop: threading.Event
) -> None:
    """Once the agent has stored the replayed history, run the site's training job on it
    (trending, complements, next-basket), as the nightly run would, and say what serves."""
    deadline = time.monotonic() + _STORED_TIMEOUT_S
    while not stop.wait(1.0) and time.monotonic() < deadline:
        try:
            with Store.open(db, readonly=True) as store:
                s = store.status()
        except StorageError:
            continue
        if s.stored + s.duplicates + sum(s.dead_letters_by_reason.values()) >= replayed:
            break
    if stop.is_set():
        return
    command = [sys.executable, "-m", "edge_agent", "--config", str(config), "models", "train"]
    with log.open("ab") as out:
        done = subprocess.run(
            command, stdout=subprocess.PIPE, stderr=out, timeout=_TRAIN_TIMEOUT_S, check=False
        )
    lines = done.stdout.decode(errors="replace").strip().splitlines()
    print(
        f"[{time.strftime('%H:%M:%S')}] trained on the {HISTORY_DAYS} days of history:\n  "
        + "\n  ".join(lines or [f"models train exited with {done.returncode}; see {log}"]),
        flush=True,
    )


def _site_token(central: LocalCollector) -> str:
    """The demo site's token at its collector: registered on the first run, then reused."""
    saved = central.folder / "site.token"
    if saved.exists():
        return saved.read_text().strip()
    token = central.add_site(DEMO_SITE)
    saved.write_text(token + "\n")
    saved.chmod(0o600)
    return token


def _status_line(db: Path) -> str:
    try:
        with Store.open(db, readonly=True) as store:
            s = store.status()
    except StorageError:
        return "waiting for the agent's database"
    dead = ", ".join(f"{k} {v}" for k, v in s.dead_letters_by_reason.items()) or "none"
    return f"stored {s.stored} events, {s.duplicates} duplicates, dead letters: {dead}"


def run_demo(data_dir: Path | None, rate: float, duration: float, seed: int | None) -> None:
    """Run the demo site until Ctrl-C (or ``duration`` seconds), printing where to look.

    Raises:
        BrokerError: Mosquitto is missing or cannot start.
        EdgeAgentError: the agent exits early (its log is named).
    """
    folder = (data_dir or Path("demo-sites") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    central = LocalCollector(folder / "central")
    token = _site_token(central)
    # A new password each run, printed below: the demo keeps no password in a file.
    password = central.add_user(DEMO_USER, "admin")
    central.start()
    broker = Mosquitto(folder / "broker")
    try:
        broker.start()
    except EdgeAgentError:
        central.stop()
        raise
    http_port = free_port()
    config = folder / "agent.toml"
    config.write_text(
        f'[site]\nid = "{DEMO_SITE}"\nname = "Demo gift shop"\ndata_dir = "{folder / "data"}"\n'
        # The packaged sales are a UK shop's.
        'currency = "GBP"\nlocale = "en-GB"\ntimezone = "Europe/London"\n\n'
        f"[mqtt]\nport = {broker.port}\n\n"
        # The loyalty scanner checks in visitors that the door and the zones saw first.
        f'[privacy]\nlink_devices = "{LOYALTY}"\n\n'
        f"[insights]\nevery_s = 60\n\n"
        f'[sync]\nurl = "{central.url}"\ntoken = "{token}"\nevery_s = {_SYNC_EVERY_S}\n'
        "jitter_s = 5\n\n"
        f"[http]\nenabled = true\nport = {http_port}\nmetrics_open = true\n\n"
        "[models]\ntrain_every_s = 60\n"
    )
    log = folder / "agent.log"
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    agent = AgentChild(config, log)
    agent.spawn()
    db = folder / "data" / "edge-agent.db"

    def history_sent(replayed: int) -> None:
        trainer = threading.Thread(
            target=_train_on_history, args=(config, db, replayed, log, stop), daemon=True
        )
        threads.append(trainer)
        trainer.start()

    threads = [
        threading.Thread(
            target=run_simulator,
            args=(
                SimulatorOptions(
                    host="127.0.0.1",
                    port=broker.port,
                    site=DEMO_SITE,
                    rate=rate,
                    duration=duration,
                    seed=seed if seed is not None else random.randrange(2**32),
                    history_days=HISTORY_DAYS,
                ),
                stop,
                history_sent,
            ),
            daemon=True,
        ),
        threading.Thread(target=_publish_faults, args=(broker.port, DEMO_SITE, stop), daemon=True),
    ]
    me = "edge-agent"
    print(
        f"""edge-agent demo site "{DEMO_SITE}" is running.
  data folder:   {folder}
  database:      {db}  (SQLite, WAL)
  agent log:     {log}
  broker:        mosquitto on 127.0.0.1:{broker.port} (log {broker.log})
  devices:       door counter, zone sensors, 2 tills, kiosk, loyalty scanner at
                 {rate:g} events/s, and a faulty kiosk every {_FAULT_EVERY_S:g} s
  sales:         real receipts of a UK gift shop (UCI "Online Retail", CC BY 4.0); its
                 first {HISTORY_DAYS} days are replayed as the last {HISTORY_DAYS} days, then the
                 models train on them

See it from another terminal (with the virtualenv active, or .venv/bin/{me}):
  {me} --config {config} status
  {me} --config {config} dead-letters list
  {me} --config {config} insights
  {me} --config {config} sync
Staff screens on http://127.0.0.1:{http_port} (one for each till is printed below once the
  agent is up; more with {me} --config {config} screens add --device till-1)
Central (a local collector, {central.url}, syncs every {_SYNC_EVERY_S} s):
  dashboard: {central.url}/ - sign in as {DEMO_USER}, password {password}
  (the 3 replayed days are there within a minute; live hours once each has ended)
  HTTP API: curl -H "Authorization: Bearer $(cat {central.admin_token_file})" {central.url}/v1/fleet
  {me}-collector summary --db {central.db} --by hour --k 1
Ctrl-C stops the demo.""",
        flush=True,
    )
    try:
        # Until the agent's session exists, the broker would keep nothing for it.
        agent.wait_log(SUBSCRIBED, 1, _SUBSCRIBE_TIMEOUT_S)
        with Store.open(db) as store:
            for till in TILLS:
                code = Screens(store).add(till, f"Till {till[-1]}", int(time.time() * 1000))[1]
                print(f"Staff screen at {till}: open http://127.0.0.1:{http_port}/#pair={code}")
        for thread in list(threads):
            thread.start()
        deadline = time.monotonic() + duration if duration > 0 else float("inf")
        while not stop.wait(
            _STATUS_EVERY_S
            if duration <= 0
            else min(_STATUS_EVERY_S, max(0.1, deadline - time.monotonic()))
        ):
            if agent.process is not None and agent.process.poll() is not None:
                raise EdgeAgentError(f"the agent exited with {agent.process.returncode}; see {log}")
            print(f"[{time.strftime('%H:%M:%S')}] {_status_line(db)}", flush=True)
            if time.monotonic() >= deadline:
                break
    finally:
        stop.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join(15)
        agent.stop()
        broker.stop()
        central.stop()
        signal.signal(signal.SIGINT, previous)
        print(f"demo stopped. {_status_line(db)}\nThe data stays in {folder}", flush=True)
