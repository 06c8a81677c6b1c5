"""Helpers for the collector's tests: databases on both engines, a real server, real cells."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gzip
import hashlib
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from psycopg import sql

from edge_agent.core.aggregate import HOUR_MS, Fact, compute_hour, to_document
from edge_agent.core.fleet import CheckIn
from edge_agent.core.identity import Pseudonym, subject_hash

ADMIN_TOKEN = "admin-" + "x" * 32
#: A 20-byte KLL sketch whose header promises more than it holds: DataSketches 5.2's
#: ``deserialize`` reads past it, and segfaults or raises depending on the heap around it.
CRASHING_KLL = "BQEPAMgACAAyAAAAAAAAAMgAAQA="


def segfault() -> None:
    """Crash the calling process the way a C extension does (SIGSEGV)."""
    ctypes.string_at(0)


@contextlib.contextmanager
def database(
    engine: str, folder: Path, request: pytest.FixtureRequest | None = None
) -> Iterator[str]:
    """A fresh, empty collector database target on ``engine``; dropped afterwards. On
    PostgreSQL it is made in the session's own cluster (the ``postgres`` fixture, started the
    first time a test asks for it through ``request``)."""
    if engine == "sqlite":
        yield str(folder / "central.db")
        return
    assert request is not None, "a PostgreSQL database needs the test's request"
    admin_dsn: str = request.getfixturevalue("postgres")
    name = f"edge_collector_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield admin_dsn.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def rows(target: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows read straight from the collector's database, on a connection of its own."""
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as pg:
            return pg.execute(query.replace("?", "%s"), params).fetchall()
    lite = sqlite3.connect(target)
    try:
        return lite.execute(query, params).fetchall()
    finally:
        lite.close()


def count(target: str, table: str) -> int:
    """Rows in ``table``."""
    return int(rows(target, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608 - test tables


class Server:
    """The collector app served by a real uvicorn on a loopback port (by default a free one),
    in a thread."""

    def __init__(
        self,
        app: FastAPI,
        port: int = 0,
        tls: tuple[Path, Path] | None = None,
        http: type[asyncio.Protocol] | None = None,
    ) -> None:
        self.socket = socket.socket()
        # A restart on the same port must not wait for the last connections' TIME_WAIT.
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", port))
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.socket.getsockname()[1]}"
        certificate, key = tls or (None, None)
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_config=None,
                access_log=False,
                lifespan="on",
                ssl_certfile=certificate,
                ssl_keyfile=key,
                http=http or "h11",
            )
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the collector did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()


def encode(body: object) -> tuple[bytes, str]:
    """The body as the agent sends it: JSON gzipped, and its Idempotency-Key."""
    raw = orjson.dumps(body)
    return gzip.compress(raw), hashlib.sha256(raw).hexdigest()


def post(
    client: httpx.Client,
    path: str,
    body: object,
    token: str | None,
    *,
    key: bool = True,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """POST ``body`` gzipped as JSON with a site token (None: no Authorization)."""
    content, digest = encode(body)
    sent = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if key:
        sent["Idempotency-Key"] = digest
    sent.update(headers or {})
    return client.post(path, content=content, headers=sent)


def hour_cell(start_ms: int, prefix: str, visits: int, orders: int) -> dict[str, object]:
    """A real hour cell (``compute_hour``): ``visits`` distinct visits, ``orders`` of them
    buying one product for 10.0, in its storage form."""
    facts = [
        Fact(start_ms + i * 1000, "Product Viewed", f"{prefix}-{i}", None, False, {})
        for i in range(visits)
    ]
    facts += [
        Fact(
            start_ms + i * 1000 + 500,
            "Order Completed",
            f"{prefix}-{i}",
            None,
            False,
            {"total": 10.0, "products": [{"product_id": "p1", "quantity": 1, "category": "c"}]},
        )
        for i in range(orders)
    ]
    return to_document(compute_hour(start_ms, facts))


def sync_body(
    site: str, venue: str, sent_ms: int, items: list[dict[str, object]], **extra: object
) -> dict[str, object]:
    """A ``POST /v1/sync`` body."""
    body = {"protocol": 1, "site": site, "venue": venue, "sent_ms": sent_ms, "items": items}
    return body | extra


def insight(cell: Mapping[str, object], k: int = 5, item_id: str | None = None) -> dict[str, Any]:
    """An insight item carrying ``cell``."""
    return {
        "kind": "insight",
        "id": item_id or f"insight:{cell['start_ms']}:{uuid.uuid4().hex[:8]}",
        "k": k,
        "cell": dict(cell),
    }


def subject(name: str) -> str:
    """The subject hash the agent would send for a person called ``name``."""
    return subject_hash(Pseudonym(hashlib.sha256(name.encode()).hexdigest()))


def segment_item(
    site: str, person: str, *, timestamp_ms: int, event: str | None = "Order Completed"
) -> dict[str, Any]:
    """An identified Segment item as the agent sends it (track, or identify if no event)."""
    item: dict[str, Any] = {
        "type": "track" if event else "identify",
        "messageId": str(uuid.uuid4()),
        "timestamp": datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(),
        "userId": f"loyalty-{person}",
        "context": {"edge": {"site": site, "subject_hash": subject(person)}},
    }
    if event:
        item["event"] = event
        item["properties"] = {"order_id": "o1", "total": 10.0}
    else:
        item["traits"] = {"email": f"{person}@example.org"}
    return item


def day_start(ms: int) -> int:
    """The start of the UTC day holding ``ms``."""
    return ms - ms % (24 * HOUR_MS)


def collector_cli(
    *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``edge-agent-collector ARGS`` as an admin would."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.collector.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=None if env is None else {**env},
    )


def shop_cell(start_ms: int, visitors: int, door_in: int, orders: int = 0) -> dict[str, object]:
    """A real hour cell: ``visitors`` people (one visit each), ``door_in`` counted in at the
    door, ``orders`` of them buying for 10.0, one answer per order (NPS 9, CES 2)."""
    facts = [
        Fact(
            start_ms + 1000,
            "Door Counted",
            None,
            None,
            False,
            {"direction": "in", "count": door_in},
        )
    ]
    for i in range(visitors):
        facts.append(
            Fact(start_ms + 2000 + i, "Product Viewed", f"v{start_ms}-{i}", f"p{i}", False, {})
        )
    for i in range(orders):
        facts.append(
            Fact(
                start_ms + 3000 + i,
                "Order Completed",
                f"v{start_ms}-{i}",
                f"p{i}",
                False,
                {
                    "total": 10.0,
                    "products": [{"product_id": "tea", "quantity": 1, "category": "c"}],
                },
            )
        )
        facts.append(
            Fact(
                start_ms + 4000 + i,
                "Feedback Submitted",
                f"v{start_ms}-{i}",
                f"p{i}",
                False,
                {"nps": 9, "ces": 2},
            )
        )
    return to_document(compute_hour(start_ms, facts))


def gate_cell(start_ms: int, gate: str, holders: int, rejected: int = 0) -> dict[str, object]:
    """A real hour cell of a venue's gate: ``holders`` tickets accepted (one visit each) and
    ``rejected`` scans refused as already used; a tenth of the holders walk on into hall
    ``A`` and a quarter show their badge at the keynote session."""
    facts = []
    for i in range(holders):
        visit = f"g{start_ms}-{gate}-{i}"
        scan = {"ticket_id": f"t{i}", "gate": gate, "result": "accepted", "ticket_class": "day"}
        facts.append(Fact(start_ms + 60_000 * (i % 50) + i, "Ticket Scanned", visit, visit,
                          False, scan))  # fmt: skip
        if i % 10 == 0:
            hall = {"ticket_id": f"t{i}", "gate": f"{gate}-A", "hall": "A", "result": "accepted"}
            facts.append(Fact(start_ms + 3_000_000 + i, "Ticket Scanned", visit, visit, False,
                              hall))  # fmt: skip
        if i % 4 == 0:
            badge = {"badge_id": f"b{i}", "place_kind": "session", "place": "keynote"}
            facts.append(Fact(start_ms + 3_100_000 + i, "Badge Scanned", visit, visit, False,
                              badge))  # fmt: skip
    for i in range(rejected):
        refused = {"ticket_id": f"t{i}", "gate": gate, "result": "rejected",
                   "reason": "already_used"}  # fmt: skip
        facts.append(Fact(start_ms + 3_200_000 + i, "Ticket Scanned", f"r{start_ms}-{i}", None,
                          False, refused))  # fmt: skip
    return to_document(compute_hour(start_ms, facts))


def check_in(site: str, sent_ms: int, name: str = "", timezone: str = "UTC") -> CheckIn:
    """A healthy site's check-in, sent at ``sent_ms``."""
    return CheckIn(
        site=site, sent_ms=sent_ms, version="1.0.0", uptime_s=7200, name=name, timezone=timezone,
        currency="EUR", broker="connected", broker_since_ms=sent_ms - 7200_000,
        outbox_items=3, outbox_oldest_ms=sent_ms - 60_000, dead_letters_last_hour=0,
        duplicates_last_hour=0, disk_free_bytes=8 * 10**9, disk_free_share=0.6,
        models={"next-basket": "3"}, last_sync_ms=sent_ms - 300_000, clock_offset_s=0.0,
    )  # fmt: skip
