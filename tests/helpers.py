"""Shared test helpers: events, a checked QoS-1 publisher, polling with a deadline."""

from __future__ import annotations

import atexit
import contextlib
import functools
import io
import json
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.cli import main
from edge_agent.config import Settings
from edge_agent.mqtt.publisher import Window
from edge_agent.store.database import Store

SITE = "test-site"


def iso_now(offset_s: float = 0.0) -> str:
    """The current time as ISO 8601 UTC, shifted by ``offset_s``."""
    return datetime.fromtimestamp(time.time() + offset_s, UTC).isoformat(timespec="milliseconds")


def topic(device: str = "till-1", site: str = SITE) -> str:
    """An event topic."""
    return f"sites/{site}/devices/{device}/events"


def track(
    name: str, properties: dict[str, Any], device: str = "till-1", **extra: Any
) -> dict[str, Any]:
    """A valid track event for ``device``."""
    event: dict[str, Any] = {
        "type": "track",
        "event": name,
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "anonymousId": "visit-" + uuid.uuid4().hex[:12],
        "properties": properties,
        "context": {"device": {"id": device}},
    }
    event.update(extra)
    return event


def identify(
    user_id: str, traits: dict[str, Any], device: str = "till-1", **extra: Any
) -> dict[str, Any]:
    """A valid identify event for ``device``."""
    event: dict[str, Any] = {
        "type": "identify",
        "messageId": str(uuid.uuid4()),
        "timestamp": iso_now(),
        "userId": user_id,
        "traits": traits,
        "context": {"device": {"id": device}},
    }
    event.update(extra)
    return event


def one_of_each(device: str = "till-1") -> list[dict[str, Any]]:
    """One valid event of every kind the schemas accept."""
    product = {
        "product_id": "4710199010372",
        "sku": "4710199010372",
        "category": "110411",
        "price": 15.0,
        "quantity": 2,
    }
    user = {"userId": "loyalty-000042"}
    return [
        track("Door Counted", {"direction": "in", "count": 1}, device),
        track("Zone Entered", {"zone": "dairy"}, device),
        track("Zone Exited", {"zone": "dairy"}, device),
        track("Product Viewed", {"product_id": "4710199010372"}, device),
        track("Product Added", {**product, "cart_id": "c1"}, device),
        track("Product Removed", {**product, "cart_id": "c1"}, device),
        track(
            "Order Completed",
            {"order_id": "o1", "total": 30.0, "currency": "TWD", "products": [product]},
            device,
        ),
        track("Feedback Submitted", {"nps": 9, "ces": 2}, device),
        track("Ticket Scanned", {"ticket_id": "T-1", "gate": "north"}, device),
        track("Badge Scanned", {"badge_id": "B-1", "booth": "b12"}, device),
        track(
            "Consent Updated",
            {
                "purposes": {"analytics": True, "personalization": True, "crm_sync": False},
                "source": "loyalty-app",
            },
            device,
            **user,
        ),
        track("Erasure Requested", {"source": "kiosk"}, device, **user),
        {
            "type": "identify",
            "messageId": str(uuid.uuid4()),
            "timestamp": iso_now(),
            "anonymousId": "visit-abc",
            "userId": "loyalty-000042",
            "traits": {"first_name": "Mei"},
            "context": {"device": {"id": device}},
        },
    ]


def encode(event: object) -> bytes:
    """JSON bytes of an event or array."""
    return json.dumps(event).encode()


class Publisher:
    """A paho QoS-1 publisher whose in-flight window (`edge_agent.mqtt.publisher.Window`)
    checks every result and counts the broker's acknowledgements."""

    def __init__(self, port: int, client_id: str | None = None, window: int = 500) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-pub-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.max_inflight_messages_set(window)
        self.window = Window(window)
        self.client.on_publish = self.window.on_publish
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic_name: str, payload: bytes, retain: bool = False) -> int:
        """Publish at QoS 1 (``retain``: with the retain flag); returns paho's message id."""
        self.window.reserve(where="under test")
        info = self.client.publish(topic_name, payload, qos=1, retain=retain)
        if not self.window.handed(info.rc):
            raise RuntimeError(f"publish failed: {mqtt.error_string(info.rc)}")
        return info.mid

    def publish_all(self, items: Iterable[tuple[str, bytes]], timeout_s: float = 60.0) -> None:
        """Publish every item and wait until the broker acknowledged all of them."""
        for topic_name, payload in items:
            self.publish(topic_name, payload)
        if not self.window.drain(timeout_s):
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for PUBACK for every publish"
            )

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until it holds; fail with ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def query(db: Path, sql: str, params: Iterable[object] = ()) -> list[tuple[Any, ...]]:
    """Rows from the agent's database, read from a separate connection (as `status` does)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute(sql, tuple(params)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        conn.close()


def stored_ids(db: Path) -> list[str]:
    """messageIds in the events table (duplicates would show twice)."""
    return [row[0] for row in query(db, "SELECT message_id FROM events")]


def dead_letter_reasons(db: Path) -> dict[str, int]:
    """Open dead letters by reason (counting redelivered occurrences once)."""
    return dict(
        query(db, "SELECT reason, count(*) FROM dead_letters WHERE status = 'open' GROUP BY reason")
    )


#: Commands whose process is part of what they do (a foreground service, signals, a demo
#: that starts its own processes): run as a child process. The rest run in-process.
_OWN_PROCESS = frozenset({"run", "demo", "simulate"})


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``edge-agent ARGS`` as an installer would, capturing its output and exit code.

    Most commands run through `edge_agent.cli.main` in this process, which is what the
    console script calls too, without a new interpreter's start-up each time.
    """
    if _OWN_PROCESS.intersection(args):
        return subprocess.run(
            [sys.executable, "-m", "edge_agent", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    out, err = (io.TextIOWrapper(io.BytesIO(), encoding="utf-8") for _ in range(2))
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse refusing the arguments, or --help
            code = exc.code if isinstance(exc.code, int) else 2
        out.flush()
        err.flush()
    printed = [stream.buffer.getvalue().decode("utf-8", "replace") for stream in (out, err)]
    return subprocess.CompletedProcess(["edge-agent", *args], code, printed[0], printed[1])


def ingest(
    settings: Settings,
    events: Sequence[object],
    received_ms: int | None = None,
    junk: Sequence[bytes] = (),
    device: str = "till-1",
) -> int:
    """Store events through the agent's own ingest path (validation, pseudonymisation,
    consent rules, one commit), as received at ``received_ms`` (default now); ``junk`` are
    payloads that must be rejected. Returns how many were rejected."""
    from edge_agent import schemas
    from edge_agent.app import clock, ingest
    from edge_agent.ops import keyfile

    at = received_ms if received_ms is not None else clock.now_ms()
    received, rejected = ingest.classify(
        [(topic(device), encode(e), at) for e in events] + [(topic(device), r, at) for r in junk],
        ingest.limits_of(settings),
        schemas.load(),
        65536,
        keyfile.load_or_create(settings.site_key),
    )
    with Store.open(settings.database) as store:
        store.commit(received, rejected, "v1", at)
    return len(rejected)


@functools.cache
def _migrated() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="edge-agent-template-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    Store.open(folder / "template.db").close()
    return folder / "template.db"


def migrated_store(path: Path) -> Store:
    """A store at ``path`` that starts as a freshly migrated, empty database: a copy of one
    migrated once per test process, since migrating again for each hypothesis example would
    cost more than the example itself."""
    shutil.copyfile(_migrated(), path)
    return Store.open(path)


def chunked_post(port: int, path: str, megabytes: int, headers: str = "") -> tuple[bytes, int]:
    """POST a chunked body of ``megabytes`` MB (``headers``: more header lines, each ending in
    CRLF); the answer as soon as there is one, and how many megabytes went before it."""
    chunk = b"x" * (1024 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{headers}Transfer-Encoding: chunked\r\n\r\n".encode()
        )
        sent = 0
        while sent < megabytes and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            except OSError:
                break
            sent += 1
        return http_answer(sock), sent


def socket_slack_mb() -> int:
    """How many megabytes the loopback's socket buffers may hold between a client's ``sendall``
    and the server's reads: the kernel's receive ceiling plus the sender's (they grow up to these
    under load, and differ from one machine to another)."""
    slack = 0
    for name in ("tcp_rmem", "tcp_wmem"):
        try:
            slack += int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
        except (OSError, IndexError, ValueError):
            slack += 8 * 1024 * 1024
    return -(-slack // (1024 * 1024)) + 1


def http_answer(sock: socket.socket) -> bytes:
    """What the server answers, up to its body's JSON or the connection's end."""
    answer = b""
    with contextlib.suppress(OSError):
        while b"}" not in answer:
            part = sock.recv(4096)
            if not part:
                break
            answer += part
    return answer


def slow_clients(port: int, count: int) -> list[socket.socket]:
    """``count`` connections to ``port`` that each send part of a request head and no more
    (a slowloris client)."""
    held = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{n}: ".encode())
        held.append(sock)
    return held


def fate(sock: socket.socket, wait_s: float) -> tuple[bytes, float]:
    """What the server did with a slow client's connection within ``wait_s``: its first
    bytes (b"" when it closed the connection unanswered) and when, from now."""
    started = time.monotonic()
    sock.settimeout(wait_s)
    try:
        first = sock.recv(64)
    except TimeoutError:
        first = b"still open"
    except OSError:
        first = b""
    return first, time.monotonic() - started
