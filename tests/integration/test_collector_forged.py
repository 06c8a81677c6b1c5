"""What a hostile or broken site sends the collector: forged and oversized cells, times from a
clock that ran ahead, slow and greedy connections. Each is refused alone with a 422 naming
the figure, or (a notice) taken in a form no clock can abuse; an hour's versions are ordered
by the site's revision; a slow client is cut off at its deadline (a real uvicorn)."""

from __future__ import annotations

import base64
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import datasketches as ds
import httpx
import psycopg
import pytest

from edge_agent.collector.app import create_app
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.wire import Limits
from edge_agent.core.aggregate import HOUR_MS, Fact, compute_hour, from_document, to_document
from edge_agent.core.cellcheck import CellLimits, figures_problem
from edge_agent.slowclients import guarded_http
from tests.collector_helpers import (
    ADMIN_TOKEN,
    Server,
    day_start,
    hour_cell,
    insight,
    post,
    rows,
    segment_item,
    subject,
    sync_body,
)
from tests.helpers import fate, slow_clients
from tests.inprocess import in_process
from tests.integration.test_collector import add_site

pytestmark = pytest.mark.integration

VENUE = "mall-a"
NOW_MS = time.time_ns() // 1_000_000
HOUR = day_start(NOW_MS) - 24 * HOUR_MS + 10 * HOUR_MS
YEAR_MS = 365 * 24 * HOUR_MS
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def local(store: CentralStore) -> Iterator[httpx.Client]:
    with in_process(
        create_app(store, ADMIN_TOKEN, Limits(CellLimits(max_zones=50, max_count=50_000)))
    ) as http:
        yield http


def _forged(**changes: Any) -> dict[str, Any]:
    cell = hour_cell(HOUR, "f", 8, 3)
    cell.update(changes)
    return cell


def _sketch(update: str, *values: object) -> str:
    """A real sketch's storage form, updated with each of ``values``."""
    if update == "kll":
        kll = ds.kll_doubles_sketch(200)
        for value in values:
            kll.update(float(value))  # type: ignore[arg-type]
        return base64.b64encode(kll.serialize()).decode()
    hll = ds.hll_sketch(12)
    for value in values:
        hll.update(str(value))
    return base64.b64encode(hll.serialize_compact()).decode()


FORGED = {
    "a footfall of 10^15": (_forged(footfall_in=10**15), "footfall_in"),
    "negative orders": (_forged(orders=-3), "orders"),
    "negative revenue": (_forged(revenue=-250.0), "revenue"),
    "a float count": (_forged(items=2.5), "items"),
    "visitors over --max-count": (_forged(visitors=_sketch("hll", *range(10**5))), "visitors"),
    "more identified visits than visits": (
        _forged(identified_visits=_sketch("hll", *range(5000))),
        "identified_visits",
    ),
    "a zone seen by more than the hour's visitors": (
        _forged(zone_visits={"entrance": _sketch("hll", *range(5000))}),
        "zone_visits.entrance",
    ),
    "negative dwell": (
        _forged(dwell={"entrance": _sketch("kll", -30, 40)}, zone_visits={}),
        "dwell.entrance",
    ),
    "a dwell of days": (
        _forged(dwell={"entrance": _sketch("kll", 10, 400_000)}, zone_visits={}),
        "dwell.entrance",
    ),
    "more promoters than answers": (_forged(promoters=5, nps_answers=1), "promoters"),
    "more baskets than orders": (
        _forged(basket_value=_sketch("kll", *range(40))),
        "basket_value",
    ),
    "too many zones": (
        _forged(zone_visits={f"z{n}": _sketch("hll", "v") for n in range(51)}),
        "zone_visits",
    ),
}


@pytest.mark.parametrize("name", list(FORGED))
def test_a_forged_cell_is_refused_naming_the_figure(
    local: httpx.Client, store: CentralStore, target: str, name: str
) -> None:
    token = add_site(store, "shop-a")
    cell, figure = FORGED[name]
    good = insight(hour_cell(HOUR + HOUR_MS, "g", 8, 2))
    answer = post(local, "/v1/sync", sync_body("shop-a", VENUE, 1, [good, insight(cell)]), token)
    assert answer.status_code == 422, answer.text
    message = answer.json()["detail"]
    assert message.startswith(f"items[1].cell: {figure}"), message
    assert rows(target, "SELECT count(*) FROM insight_cells") == [(0,)]
    # The same good cell alone is taken: only the forged one is refused.
    assert post(local, "/v1/sync", sync_body("shop-a", VENUE, 1, [good]), token).status_code == 200


def test_a_cell_of_300000_zones_is_refused_before_its_sketches_are_read(
    store: CentralStore,
) -> None:
    token = add_site(store, "shop-a")
    one = _sketch("hll", "v")
    cell = _forged(zone_visits={f"zone-{n}": one for n in range(300_000)})
    with in_process(create_app(store, ADMIN_TOKEN)) as http:
        started = time.monotonic()
        answer = post(http, "/v1/sync", sync_body("shop-a", VENUE, 1, [insight(cell)]), token)
        elapsed = time.monotonic() - started
    assert answer.status_code == 422, answer.text
    assert "zone_visits: 300000 entries; a cell may name at most 1000" in answer.json()["detail"]
    assert elapsed < 5


def test_real_cells_pass_the_checks() -> None:
    facts = [
        Fact(HOUR + i * 1000, "Zone Entered", f"v{i}", None, False, {"zone": "entrance"})
        for i in range(30)
    ] + [
        Fact(HOUR + 600_000 + i * 1000, "Zone Exited", f"v{i}", None, False, {"zone": "entrance"})
        for i in range(30)
    ]
    cell = compute_hour(HOUR, facts)
    assert figures_problem(from_document(to_document(cell)), CellLimits()) is None


def test_times_from_a_clock_a_year_ahead_are_refused(
    local: httpx.Client, store: CentralStore
) -> None:
    token = add_site(store, "shop-a")
    ahead = day_start(NOW_MS + YEAR_MS)
    late = insight(hour_cell(ahead, "y", 8, 2))
    answer = post(local, "/v1/sync", sync_body("shop-a", VENUE, 1, [late]), token)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("items[0].cell.start_ms:")
    assert "ahead of central's clock" in answer.json()["detail"]
    recomputed = insight(hour_cell(HOUR, "y", 8, 2)) | {"computed_ms": NOW_MS + YEAR_MS}
    answer = post(local, "/v1/sync", sync_body("shop-a", VENUE, 1, [recomputed]), token)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("items[0].computed_ms:")
    item = segment_item("shop-a", "mei", timestamp_ms=NOW_MS + YEAR_MS)
    answer = post(local, "/v1/batch", {"batch": [item]}, token)
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("batch[0].timestamp:")


def test_an_erasure_from_a_clock_ahead_is_taken_as_of_now(
    local: httpx.Client, store: CentralStore, target: str
) -> None:
    token = add_site(store, "shop-a")
    now_ms = time.time_ns() // 1_000_000
    erasure = {
        "kind": "erasure",
        "id": "erasure:1",
        "subject_hash": subject("mei"),
        "timestamp_ms": now_ms + YEAR_MS,
    }
    answer = post(local, "/v1/sync", sync_body("shop-a", VENUE, now_ms + YEAR_MS, [erasure]), token)
    assert answer.status_code == 200, answer.text
    ((requested,),) = rows(target, "SELECT requested_ms FROM erasure_receipts")
    assert now_ms <= requested < now_ms + 60_000
    # Identified data of the person from after the erasure (a new consent) is taken again.
    later = segment_item("shop-a", "mei", timestamp_ms=now_ms + 120_000)
    assert post(local, "/v1/batch", {"batch": [later]}, token).json()["stored"] == 1


def test_the_higher_revision_of_an_hour_wins_whatever_the_clocks_said(
    local: httpx.Client, store: CentralStore, target: str
) -> None:
    token = add_site(store, "shop-a")
    # A cell stored before the site sent revisions, computed while its clock ran a year ahead.
    first = insight(hour_cell(HOUR, "r", 8, 1)) | {"computed_ms": NOW_MS}
    post(local, "/v1/sync", sync_body("shop-a", VENUE, 1, [first]), token)
    future = NOW_MS + YEAR_MS
    assert _execute(target, "UPDATE insight_cells SET version_ms = ?", (future,)) == 1
    # (revision, computed_ms, orders, stored): the clock's times no longer decide.
    versions = ((10, NOW_MS - 5000, 2, 1), (12, NOW_MS - 9000, 4, 1), (11, NOW_MS, 3, 0))
    for revision, computed_ms, orders, stored in versions:
        item = insight(hour_cell(HOUR, "r", 8, orders)) | {
            "revision": revision,
            "computed_ms": computed_ms,
        }
        answer = post(local, "/v1/sync", sync_body("shop-a", VENUE, 1, [item]), token)
        assert answer.json() == {"stored": stored, "duplicate": False}, revision
    ((orders,),) = rows(target, "SELECT cell FROM insight_cells")
    assert '"orders":4' in orders.replace(" ", "")


def _execute(target: str, statement: str, params: tuple[object, ...]) -> int:
    if target.startswith("postgresql://"):
        with psycopg.connect(target) as pg:
            return pg.execute(statement.replace("?", "%s"), params).rowcount
    lite = sqlite3.connect(target)
    try:
        with lite:
            return lite.execute(statement, params).rowcount
    finally:
        lite.close()


def test_slow_and_greedy_clients_cannot_hold_the_collector(store: CentralStore) -> None:
    token = add_site(store, "shop-a")
    app = create_app(store, ADMIN_TOKEN)
    with Server(app, http=guarded_http(per_client=4, request_s=2)) as server:
        port = int(server.url.rsplit(":", 1)[1])
        held = slow_clients(port, 60)
        try:
            # A site at another address pushes while the 60 trickle their headers.
            other = httpx.HTTPTransport(local_address="127.0.0.2")
            with httpx.Client(transport=other, base_url=server.url, timeout=10) as site:
                body = sync_body("shop-a", VENUE, 1, [insight(hour_cell(HOUR, "s", 8, 2))])
                assert post(site, "/v1/sync", body, token).status_code == 200
            fates = [fate(sock, 6)[0] for sock in held]
        finally:
            for sock in held:
                sock.close()
    assert sum(f.startswith(b"HTTP/1.1 429") for f in fates) == 60 - 4
    assert fates.count(b"") == 4
