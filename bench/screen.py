"""Benchmark: the staff screen, end to end, in a real agent process behind a real broker.

Run: ``python -m bench.screen [--days 2] [--events 200] [--requests 1000]``. The demo site's
simulated days are stored and the site's models trained (as ``bench.recommend`` does), then
the agent runs with its screens' server up, on its own Mosquitto, and:

1. a screen paired in headless Chromium (Debian's ``chromium`` under Playwright) watches a
   till while ``--events`` baskets are published there one by one; each one's latency runs
   from the publish to the moment the page's basket shows it (stamped in the page by a
   MutationObserver, on the same clock). The reference is the same publish reaching a plain
   MQTT subscriber on the broker: the transport's floor.
2. 20 screens, each at a till with a visitor and a basket in front, ask for their lists
   (``GET /v1/screen``: complements and trending in onnxruntime, with reasons) as fast as
   they can; the reference is ``GET /healthz`` on the same server at the same concurrency.
3. The agent's memory (parent and receiver) with the server up after all that, against the
   same agent on the same data with the server off.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import sync_playwright

from bench.ingest import descendants
from bench.measure import mb, percentile, vmhwm_kb
from bench.sync import DAY_MS, SITE, store_days
from edge_agent.config import load_settings
from edge_agent.demo.agent import AgentChild
from edge_agent.demo.simulate import iso_timestamp
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.service import free_port
from edge_agent.store.database import Store
from edge_agent.store.screens import Screens

SCREENS = 20
_PAGE_STAMPS = """() => {
  window.stamps = {};
  new MutationObserver(() => {
    for (const li of document.querySelectorAll('#basket li')) {
      window.stamps[li.textContent] ??= Date.now();
    }
  }).observe(document.getElementById('basket'), {childList: true, subtree: true});
}"""


def _event(device: str, visit: str, name: str, properties: dict[str, object]) -> bytes:
    return orjson.dumps(
        {
            "type": "track",
            "event": name,
            "messageId": str(uuid.uuid4()),
            "timestamp": iso_timestamp(int(time.time() * 1000)),
            "anonymousId": visit,
            "properties": properties,
            "context": {"device": {"id": device}},
        }
    )


def _topic(device: str) -> str:
    return f"sites/{SITE}/devices/{device}/events"


class _Agent(AgentChild):
    """``edge-agent run`` as a process of its own, with its memory measured."""

    def rss_mb(self) -> tuple[float, float]:
        """Peak RSS of the parent and of its receiver process."""
        assert self.process is not None
        pid = self.process.pid
        return mb(vmhwm_kb(pid)), sum(mb(vmhwm_kb(child)) for child in descendants(pid))


def _wait(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench.screen: {what} did not happen within {timeout_s:g} s")
        time.sleep(0.1)


def _up(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _broker_floor(port: int, events: int) -> list[float]:
    """Publish -> a plain subscriber on the same broker, in ms (QoS 1 both ways)."""
    arrived: dict[str, float] = {}
    got = threading.Event()
    listener = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        arrived.setdefault(message.topic, time.time())
        got.set()

    listener.on_message = on_message
    listener.connect("127.0.0.1", port)
    listener.subscribe("bench/floor/#", qos=1)
    listener.loop_start()
    time.sleep(0.5)
    sender = _publisher(port)
    times = []
    for n in range(events):
        got.clear()
        sent = time.time()
        sender.publish(f"bench/floor/{n}", b"x" * 300, qos=1)
        got.wait(10)
        times.append((arrived[f"bench/floor/{n}"] - sent) * 1000)
    for client in (sender, listener):
        client.disconnect()
        client.loop_stop()
    return times


def _page_latency(base: str, code: str, port: int, events: int) -> list[float]:
    """Publish -> the page shows it, in ms, over ``events`` baskets at one till."""
    sender = _publisher(port)
    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{base}/#pair={code}")
        page.wait_for_function("document.getElementById('link').textContent === 'Live'")
        page.evaluate(_PAGE_STAMPS)
        for n in range(events):
            name = f"bench item {n}"
            product = {"product_id": f"bench-{n}", "name": name, "price": 1.0, "quantity": 1}
            sent = time.time()
            sender.publish(
                _topic("till-page"), _event("till-page", f"v-{n}", "Product Added", product), qos=1
            )
            page.wait_for_function("name => name in window.stamps", arg=name, timeout=30_000)
            times.append(page.evaluate("name => window.stamps[name]", name) - sent * 1000)
        browser.close()
    sender.disconnect()
    sender.loop_stop()
    return times


def _load(base: str, tokens: list[str], path: str, requests: int) -> tuple[float, list[float]]:
    """``requests`` GETs of ``path`` from all ``tokens`` at once: requests/s and latencies."""
    latencies: list[float] = []

    def screen(token: str, n: int) -> None:
        # Each screen from an address of its own, as on a shop's network (the agent bounds
        # the connections of one address).
        transport = httpx.HTTPTransport(local_address=f"127.0.0.{n + 2}")
        with httpx.Client(
            headers={"Authorization": f"Bearer {token}"}, timeout=60, transport=transport
        ) as client:
            for _ in range(requests // len(tokens)):
                began = time.perf_counter()
                client.get(f"{base}{path}").raise_for_status()
                latencies.append((time.perf_counter() - began) * 1000)

    began = time.perf_counter()
    workers = [threading.Thread(target=screen, args=(t, n)) for n, t in enumerate(tokens)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return len(latencies) / (time.perf_counter() - began), latencies


def _ms(times: list[float]) -> str:
    ordered = sorted(times)
    return f"p50 {percentile(ordered, 0.5):.1f} ms, p99 {percentile(ordered, 0.99):.1f} ms"


def main() -> None:
    """Store, train, run the agent, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    now = int(time.time() * 1000)
    with tempfile.TemporaryDirectory(prefix="bench-screen-") as name:
        folder = Path(name)
        broker = Mosquitto(folder / "broker")
        broker.start()
        port = free_port()
        config = folder / "agent.toml"
        site = (
            f'[site]\nid = "{SITE}"\ndata_dir = "{folder}"\n'
            f"[ingest]\nmax_past_age_s = {args.days * 86400 + 86400}\n"
            f"[mqtt]\nport = {broker.port}\n"
        )
        config.write_text(site)
        settings = load_settings(config, environ={})
        stored, _ = store_days(settings, now - args.days * DAY_MS, now, args.seed)
        subprocess.run(
            [sys.executable, "-m", "edge_agent", "--config", str(config), "models", "train"],
            capture_output=True,
            check=True,
        )
        with Store.open(settings.database) as store:
            products = [
                str(row[0])
                for row in store.db.execute(
                    "SELECT DISTINCT json_extract(value, '$.product_id') FROM events, "
                    "json_each(json_extract(body, '$.properties.products')) "
                    "WHERE event = 'Order Completed' LIMIT 500"
                )
            ]
            codes = [
                Screens(store).add(device, device, now)[1]
                for device in ["till-page"] + [f"till-{n}" for n in range(SCREENS)]
            ]

        # The same agent on the same data, without the server: the memory reference.
        plain = _Agent(config, folder / "plain.log")
        plain.spawn()
        time.sleep(15)
        plain_rss = plain.rss_mb()
        plain.stop()

        config.write_text(site + f"[http]\nenabled = true\nport = {port}\n")
        agent = _Agent(config, folder / "agent.log")
        agent.spawn()
        base = f"http://127.0.0.1:{port}"
        _wait(lambda: _up(base), "the screens' server")
        time.sleep(5)  # the start-up jobs (retention, insights, models) settle first

        floor = _broker_floor(broker.port, args.events)
        page = _page_latency(base, codes[0], broker.port, args.events)

        # Every load screen has a visitor with a basket of three of the site's products.
        rng = random.Random(args.seed)
        sender = _publisher(broker.port)
        for n in range(SCREENS):
            for item in rng.sample(products, 3):
                line = {"product_id": item, "price": 1.0, "quantity": 1}
                sender.publish(
                    _topic(f"till-{n}"),
                    _event(f"till-{n}", f"load-{n}", "Product Added", line),
                    qos=1,
                ).wait_for_publish(10)
        sender.disconnect()
        sender.loop_stop()
        paired = [httpx.post(f"{base}/v1/pair", json={"code": c}) for c in codes[1:]]
        tokens = [p.json()["token"] for p in paired]
        _wait(
            lambda: all(
                len(httpx.get(f"{base}/v1/screen", headers={"Authorization": f"Bearer {t}"})
                    .json()["basket"]) == 3
                for t in tokens
            ),
            "the load screens' baskets",
        )  # fmt: skip
        lists = httpx.get(f"{base}/v1/screen", headers={"Authorization": f"Bearer {tokens[0]}"})
        _load(base, tokens, "/v1/screen", SCREENS * 5)  # warm every thread's connection
        screen_rate, screen_times = _load(base, tokens, "/v1/screen", args.requests)
        health_rate, health_times = _load(base, tokens, "/healthz", args.requests)
        served_rss = agent.rss_mb()
        agent.stop()
        broker.stop()

    print(f"bench.screen: {stored:,} simulated events over {args.days} days stored, models trained")
    print(f"  event published -> page updated (Chromium, {args.events} baskets): {_ms(page)}")
    print(f"  reference, publish -> plain MQTT subscriber: {_ms(floor)}")
    ratio = percentile(sorted(page), 0.5) / max(percentile(sorted(floor), 0.5), 1e-3)
    print(f"  ratio p50 {ratio:.1f}x")
    shown = ", ".join(f"{k} {len(v)}" for k, v in lists.json()["lists"].items())
    print(
        f"  GET /v1/screen from {SCREENS} screens at once ({shown} picks): "
        f"{screen_rate:.0f} requests/s, {_ms(screen_times)}"
    )
    print(
        f"  reference, GET /healthz at the same concurrency: {health_rate:.0f} requests/s, "
        f"{_ms(health_times)}; ratio {screen_rate / health_rate:.2f}"
    )
    print(
        f"  agent peak RSS with the server up: parent {served_rss[0]:.1f} MB + receiver "
        f"{served_rss[1]:.1f} MB = {sum(served_rss):.1f} MB"
    )
    print(
        f"  reference, the same agent with the server off: parent {plain_rss[0]:.1f} MB + "
        f"receiver {plain_rss[1]:.1f} MB = {sum(plain_rss):.1f} MB; "
        f"ratio {sum(served_rss) / sum(plain_rss):.2f}"
    )


if __name__ == "__main__":
    main()
