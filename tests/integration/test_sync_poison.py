"""One poisoned item in the outbox holds nothing back: over random outboxes sent to a real
collector, every notice and every good item reaches central exactly once, and the poisoned
item alone is kept in the site's sync dead letters. Notices travel on their own and are
never dead-lettered, even when central refuses them."""

from __future__ import annotations

import gzip
import hashlib
import secrets
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.app import clock
from edge_agent.collector.app import create_app
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.wire import Limits
from edge_agent.config import Settings, load_settings
from edge_agent.core.aggregate import HOUR_MS
from edge_agent.core.cellcheck import CellLimits
from edge_agent.core.identity import Pseudonym
from edge_agent.store.database import Store
from edge_agent.sync.client import client_for, drain
from tests.collector_helpers import ADMIN_TOKEN, Server, day_start, hour_cell, rows

pytestmark = pytest.mark.integration

#: Central takes at most this many zones a cell; the agent's own bound is far higher, so a
#: cell between the two passes the agent's check and is refused by central.
CENTRAL_ZONES = 3
CENTRAL_ONLY = ("too_many_zones", "clock_ahead")
POISONS = ("too_many_zones", "clock_ahead", "nul_property", "unreadable_cell", "negative_revenue")


class Central:
    def __init__(self, folder: Path) -> None:
        self.target = str(folder / "central.db")
        self.store = CentralStore.open(self.target)
        app = create_app(self.store, ADMIN_TOKEN, Limits(CellLimits(max_zones=CENTRAL_ZONES)))
        self.server = Server(app)

    def add_site(self, site: str) -> str:
        token = secrets.token_urlsafe(24)
        self.store.add_site(site, site, hashlib.sha256(token.encode()).hexdigest())
        return token


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Central]:
    made = Central(tmp_path_factory.mktemp("central"))
    with made.server:
        yield made
    made.store.close()


def _settings(folder: Path, url: str, site: str, token: str, batch: int) -> Settings:
    config = folder / "agent.toml"
    config.write_text(
        f'[site]\nid = "{site}"\ndata_dir = "{folder}"\n'
        f'[sync]\nurl = "{url}"\ntoken = "{token}"\nbatch_max_items = {batch}\n'
        "backoff_min_s = 0.01\nbackoff_max_s = 0.05\n"
    )
    return load_settings(config, environ={})


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


class Outbox:
    """Rows written straight into a site's outbox (and the consent its identified items
    need), remembering what central should end up holding."""

    def __init__(self, store: Store, now_ms: int) -> None:
        self.db = store.db
        self.now_ms = now_ms
        self.notices: list[str] = []
        self.messages: list[str] = []
        self.hours: list[int] = []
        self.revision = 0

    def _row(self, kind: str, subject: str | None, key: str | None, payload: object) -> int:
        self.revision += 1
        cursor = self.db.execute(
            "INSERT INTO outbox (kind, subject, message_id, payload, created_ms, revision) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                kind,
                subject,
                key,
                orjson.dumps(payload).decode(),
                self.now_ms,
                self.revision if kind == "insight" else None,
            ],
        )
        return int(cursor.lastrowid or 0)

    def notice(self, n: int) -> None:
        kind = ("erasure", "consent_withdrawn")[n % 2]
        notice: dict[str, object] = {
            "type": kind,
            "subject_hash": hashlib.sha256(f"gone-{n}".encode()).hexdigest(),
            "timestamp_ms": self.now_ms - 1000,
        }
        if kind == "consent_withdrawn":
            notice["purpose"] = "crm_sync"
        row = self._row(kind, None, None, notice)
        self.notices.append(f"{kind}:{row}")

    def identified(self, n: int, poison: str | None = None) -> None:
        person = Pseudonym(hashlib.sha256(f"member-{n}".encode()).hexdigest())
        self.db.execute(
            "INSERT OR IGNORE INTO identity_vault VALUES (?, ?, '{}', ?)",
            [person, f"member-{n}", self.now_ms],
        )
        self.db.execute(
            "INSERT OR IGNORE INTO consent VALUES (?, 'crm_sync', 1, ?, 1)", [person, self.now_ms]
        )
        stamp = self.now_ms - 60_000 + n
        properties: dict[str, object] = {"total": 12.5}
        if poison == "clock_ahead":
            stamp += 365 * 24 * HOUR_MS
        if poison == "nul_property":
            properties["note"] = "bad\x00byte"
        message = f"order-{n}-{secrets.token_hex(4)}"
        item = {
            "type": "track",
            "messageId": message,
            "timestamp": _iso(stamp),
            "userId": person,
            "event": "Order Completed",
            "properties": properties,
        }
        self._row("identified", person, message, item)
        if poison is None:
            self.messages.append(message)

    def cell(self, n: int, poison: str | None = None) -> None:
        start = day_start(self.now_ms) - 24 * HOUR_MS + n * HOUR_MS
        cell: dict[str, Any] = hour_cell(start, f"c{n}", 6, 2)
        if poison == "too_many_zones":
            sketch = hour_cell(start, "z", 1, 0)["visits"]  # a real distinct-count sketch
            cell["zone_visits"] = {f"zone-{z}": sketch for z in range(CENTRAL_ZONES + 2)}
        if poison == "unreadable_cell":
            cell["paths"] = "bm90IGEgc2tldGNo"
        if poison == "negative_revenue":
            cell["revenue"] = -40.0
        self._row("insight", None, f"insight:{start}", cell)
        if poison is None:
            self.hours.append(start)


@st.composite
def outboxes(draw: st.DrawFn) -> dict[str, Any]:
    kinds = draw(
        st.lists(st.sampled_from(("notice", "identified", "cell")), min_size=1, max_size=14)
    )
    poison = draw(st.sampled_from(POISONS))
    at = draw(st.integers(0, len(kinds)))
    return {
        "kinds": kinds,
        "poison": poison,
        "at": at,
        "batch": draw(st.integers(1, 6)),
    }


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(outboxes())
def test_one_poisoned_item_holds_nothing_back(central: Central, case: dict[str, Any]) -> None:
    site = f"site-{secrets.token_hex(5)}"
    token = central.add_site(site)
    now_ms = clock.now_ms()
    with tempfile.TemporaryDirectory() as folder:
        config = _settings(Path(folder), central.server.url, site, token, case["batch"])
        with Store.open(config.database) as store:
            outbox = Outbox(store, now_ms)
            kinds = list(case["kinds"])
            poison = case["poison"]
            kinds.insert(case["at"], "poison")
            for n, kind in enumerate(kinds):
                if kind == "notice":
                    outbox.notice(n)
                elif kind == "identified":
                    outbox.identified(n)
                elif kind == "cell":
                    outbox.cell(n)
                elif poison in ("clock_ahead", "nul_property"):
                    outbox.identified(n, poison)
                else:
                    outbox.cell(n, poison)
        with client_for(config) as client:
            for _ in range(5):
                report = drain(config, clock.now_ms(), client, force=True)
                if not report.remaining:
                    break
        assert report.remaining == {}, report.as_dict()
        with Store.open(config.database) as store:
            letters = store.db.execute("SELECT items, status FROM sync_dead_letters").fetchall()
    # The poisoned item alone is kept at the site: refused by central when only central's
    # rules catch it (found by halving the batch), else never sent (status 0).
    assert letters == [(1, 422 if poison in CENTRAL_ONLY else 0)]
    # Every notice arrived once, and was acted on once.
    arrived = rows(
        central.target,
        "SELECT item_id FROM sync_items WHERE site = ? AND kind <> 'insight'",
        (site,),
    )
    assert sorted(r[0] for r in arrived) == sorted(outbox.notices)
    receipts = rows(central.target, "SELECT item_id FROM erasure_receipts WHERE site = ?", (site,))
    assert sorted(r[0] for r in receipts) == sorted(outbox.notices)
    # Every good identified item and cell arrived once; nothing of the poisoned one did.
    stored = rows(central.target, "SELECT message_id FROM identified WHERE site = ?", (site,))
    assert sorted(r[0] for r in stored) == sorted(outbox.messages)
    hours = rows(central.target, "SELECT start_ms FROM insight_cells WHERE site = ?", (site,))
    assert sorted(r[0] for r in hours) == sorted(outbox.hours)


def test_a_notice_central_refuses_stays_queued_and_holds_nothing_back(tmp_path: Path) -> None:
    # A central that refuses every notice (a bug, a version skew): the agent keeps each one,
    # sends everything else, and says so.
    seen: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(gzip.decompress(request.content))
        seen.append(body)
        items = body.get("items", [])
        if any(item["kind"] != "insight" for item in items):
            return httpx.Response(422, json={"error": "invalid_request", "detail": "no notices"})
        return httpx.Response(200, json={"stored": len(items), "duplicate": False})

    config = _settings(tmp_path, "http://central.test", "site-1", "t" * 32, 10)
    now_ms = clock.now_ms()
    with Store.open(config.database) as store:
        outbox = Outbox(store, now_ms)
        outbox.notice(0)
        outbox.cell(2)
        outbox.notice(1)
        outbox.cell(3)
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        report = drain(config, now_ms, client, force=True)
        again = drain(config, now_ms, client, force=True)
    assert report.sent == {"insight": 2}
    assert report.problem is not None
    assert "notice" in report.problem
    assert report.remaining == {"erasure": 1, "consent_withdrawn": 1}
    assert again.remaining == report.remaining  # tried again, still kept
    # Notices never shared a body with data items.
    for body in seen:
        kinds = {item["kind"] for item in body.get("items", [])}
        assert kinds <= {"insight"} or "insight" not in kinds
    with Store.open(config.database) as store:
        assert store.db.execute("SELECT count(*) FROM sync_dead_letters").fetchone() == (0,)
