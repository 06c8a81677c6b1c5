"""The central collector as a real uvicorn server over SQLite and PostgreSQL, spoken to with
httpx as an agent and an admin would; its refusals in-process (no socket needed)."""

from __future__ import annotations

import base64
import csv
import gzip
import hashlib
import io
import os
import secrets
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import positive_data_acceptance

from edge_agent.collector.app import create_app
from edge_agent.collector.sandbox import Sandbox, SandboxCrashed, SandboxTimedOut
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.summary import check_cells
from edge_agent.core.aggregate import HOUR_MS
from edge_agent.core.cellcheck import CellLimits
from tests.collector_helpers import (
    ADMIN_TOKEN,
    CRASHING_KLL,
    Server,
    collector_cli,
    count,
    database,
    day_start,
    encode,
    hour_cell,
    insight,
    post,
    rows,
    segfault,
    segment_item,
    subject,
    sync_body,
)
from tests.helpers import chunked_post, socket_slack_mb
from tests.inprocess import in_process

pytestmark = pytest.mark.integration

VENUE = "mall-a"
#: A day in the past whose hours the tests fill.
DAY_MS = day_start(1_795_700_000_000)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
TABLES = ("insight_cells", "identified", "idempotency", "sync_items", "erasure_receipts")


def add_site(store: CentralStore, site: str, venue: str = VENUE) -> str:
    token = secrets.token_urlsafe(32)
    store.add_site(site, venue, hashlib.sha256(token.encode()).hexdigest())
    return token


@pytest.fixture
def client(store: CentralStore) -> Iterator[httpx.Client]:
    """An httpx client of a real collector server over ``store``."""
    with (
        Server(create_app(store, ADMIN_TOKEN)) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        yield http


@pytest.fixture
def local(store: CentralStore) -> Iterator[httpx.Client]:
    """An httpx client of the collector app over ``store``, in this process."""
    with in_process(create_app(store, ADMIN_TOKEN)) as http:
        yield http


def summary(client: httpx.Client, **params: Any) -> dict[str, Any]:
    day = _day(DAY_MS)
    response = client.get("/v1/insights", params={"from": day, "to": day, **params}, headers=ADMIN)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def test_two_agents_of_a_venue_merge_hour_by_hour(
    client: httpx.Client, store: CentralStore, target: str
) -> None:
    a, b = add_site(store, "shop-a"), add_site(store, "shop-b")
    h0, h1 = DAY_MS + 10 * HOUR_MS, DAY_MS + 11 * HOUR_MS
    sent_a = sync_body(
        "shop-a",
        VENUE,
        1000,
        [insight(hour_cell(h0, "a", 6, 2)), insight(hour_cell(h1, "a1", 7, 1))],
        losses={"insight": {"dropped_quota": 0}},
    )
    sent_b = sync_body(
        "shop-b",
        VENUE,
        1000,
        [
            insight(hour_cell(h0, "b", 5, 3)),
            insight({"start_ms": h1, "hours": 1, "suppressed": True, "reason": "fewer than 5"}),
        ],
    )
    for token, body in ((a, sent_a), (b, sent_b)):
        answer = post(client, "/v1/sync", body, token)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"stored": 2, "duplicate": False}

    (day,) = summary(client, venue=VENUE)["rows"]
    assert (day["venue"], day["site"], day["sites"]) == (VENUE, None, 2)
    assert day["orders"] == 6
    assert day["visits"] == 6 + 5 + 7
    assert day["revenue"] == 60.0
    assert day["suppressed_cells"] == 1

    hours = summary(client, venue=VENUE, by="hour")["rows"]
    assert [(r["period"][-6:], r["sites"], r["orders"]) for r in hours] == [
        ("10:00Z", 2, 5),
        ("11:00Z", 2, 1),
    ]
    only_a = summary(client, venue=VENUE, site="shop-a", metric=["orders", "visits"])["rows"]
    assert only_a[0]["site"] == "shop-a"
    assert (only_a[0]["orders"], only_a[0]["visits"]) == (3, 13)
    assert "revenue" not in only_a[0]

    csv_text = client.get(
        "/v1/insights",
        params={"from": _day(DAY_MS), "to": _day(DAY_MS), "by": "hour", "format": "csv"},
        headers=ADMIN,
    )
    assert csv_text.headers["content-type"].startswith("text/csv")
    parsed = list(csv.DictReader(io.StringIO(csv_text.text)))
    assert [int(r["orders"]) for r in parsed] == [5, 1]
    assert parsed[0]["top_products"] == "p1=5"

    sites = client.get("/v1/sites", headers=ADMIN).json()["sites"]
    assert [(s["site"], s["venue"]) for s in sites] == [("shop-a", VENUE), ("shop-b", VENUE)]
    assert sites[0]["losses"] == {"insight": {"dropped_quota": 0}}
    assert sites[0]["last_seen_ms"] is not None
    assert count(target, "insight_cells") == 4


def test_a_later_version_of_an_hour_replaces_it_an_older_one_does_not(
    client: httpx.Client, store: CentralStore
) -> None:
    token = add_site(store, "shop-a")
    hour = DAY_MS + 9 * HOUR_MS
    # (the body's sent_ms, the item's computed_ms, orders in the cell, stored)
    versions = ((2000, None, 1, 1), (3000, None, 4, 1), (2500, None, 9, 0), (9000, 2900, 7, 0))
    for sent_ms, computed_ms, orders, stored in versions:
        item = insight(hour_cell(hour, "v", 6, orders))
        if computed_ms is not None:
            item["computed_ms"] = computed_ms
        answer = post(client, "/v1/sync", sync_body("shop-a", VENUE, sent_ms, [item]), token)
        assert answer.json() == {"stored": stored, "duplicate": False}
    assert summary(client, venue=VENUE)["rows"][0]["orders"] == 4
    newer = insight(hour_cell(hour, "v", 6, 5)) | {"computed_ms": 3100}
    post(client, "/v1/sync", sync_body("shop-a", VENUE, 1, [newer]), token)
    assert summary(client, venue=VENUE)["rows"][0]["orders"] == 5


def test_identified_batches_are_idempotent_and_erasure_removes_a_subject(
    client: httpx.Client, store: CentralStore, target: str
) -> None:
    token = add_site(store, "shop-a")
    ts = DAY_MS + 8 * HOUR_MS
    body = {
        "batch": [
            segment_item("shop-a", "mei", timestamp_ms=ts),
            segment_item("shop-a", "mei", timestamp_ms=ts, event=None),
            segment_item("shop-a", "ana", timestamp_ms=ts),
        ],
        "sentAt": "2026-11-26T14:05:00.000Z",
    }
    first = post(client, "/v1/batch", body, token)
    assert first.json() == {"stored": 3, "duplicate": False}
    again = post(client, "/v1/batch", body, token)
    assert again.status_code == 200
    assert again.json() == {"stored": 3, "duplicate": True}
    assert count(target, "identified") == 3

    _, key = encode(body)
    other = {**body, "sentAt": "2026-11-26T14:06:00.000Z"}
    reused = post(client, "/v1/batch", other, token, headers={"Idempotency-Key": key})
    assert reused.status_code == 409
    assert "Idempotency-Key" in reused.json()["detail"]
    assert count(target, "identified") == 3

    # Segment libraries send the write key as the Basic user name.
    basic = base64.b64encode(f"{token}:".encode()).decode()
    late = {"batch": [segment_item("shop-a", "ana", timestamp_ms=ts + 1000)]}
    answer = post(client, "/v1/batch", late, None, headers={"Authorization": f"Basic {basic}"})
    assert answer.json() == {"stored": 1, "duplicate": False}

    erasure = {
        "kind": "erasure",
        "id": "erasure:43",
        "subject_hash": subject("mei"),
        "timestamp_ms": ts + 60_000,
    }
    assert post(client, "/v1/sync", sync_body("shop-a", VENUE, 5000, [erasure]), token).json() == {
        "stored": 1,
        "duplicate": False,
    }
    assert rows(target, "SELECT subject_hash FROM identified") == [(subject("ana"),)] * 2
    assert rows(target, "SELECT subject_hash, kind, rows_removed FROM erasure_receipts") == [
        (subject("mei"), "erasure", 2)
    ]
    # Sent again (a retry without its key): nothing is erased twice.
    post(client, "/v1/sync", sync_body("shop-a", VENUE, 5001, [erasure]), token, key=False)
    assert count(target, "erasure_receipts") == 1
    # An item of mei from before the erasure, arriving after it, is not stored.
    stale = {"batch": [segment_item("shop-a", "mei", timestamp_ms=ts + 30_000)]}
    assert post(client, "/v1/batch", stale, token).json()["stored"] == 0

    withdrawn = {
        "kind": "consent_withdrawn",
        "id": "consent:44",
        "subject_hash": subject("ana"),
        "purpose": "crm_sync",
        "timestamp_ms": ts + 120_000,
    }
    post(client, "/v1/sync", sync_body("shop-a", VENUE, 6000, [withdrawn]), token)
    assert count(target, "identified") == 0
    audit = client.get("/v1/audit", params={"site": "shop-a"}, headers=ADMIN).json()["lines"]
    assert [line["action"] for line in audit] == ["consent_withdrawn", "erasure", "site_added"]
    assert audit[1]["detail"]["identified_removed"] == 2
    assert audit[0]["detail"]["purpose"] == "crm_sync"
    text = str(rows(target, "SELECT * FROM audit")) + str(
        rows(target, "SELECT * FROM erasure_receipts")
    )
    assert "loyalty-" not in text


def test_refused_requests_store_nothing_and_the_server_keeps_answering(
    local: httpx.Client, store: CentralStore, target: str
) -> None:
    client = local  # the same requests as to a real server, without the socket
    token = add_site(store, "shop-a")
    add_site(store, "shop-b")
    hour = DAY_MS + 12 * HOUR_MS
    good_sync = sync_body("shop-a", VENUE, 1000, [insight(hour_cell(hour, "a", 6, 1))])
    good_batch = {"batch": [segment_item("shop-a", "mei", timestamp_ms=hour)]}
    gz = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    bearer = {"Authorization": f"Bearer {token}"}

    def raw(path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        return client.post(path, content=content, headers={**gz, **bearer, **headers})

    bomb = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    bomb_bytes = b"".join(bomb.compress(bytes(1024 * 1024)) for _ in range(100)) + bomb.flush()
    crashing = hour_cell(hour, "a", 6, 1) | {"basket_value": CRASHING_KLL}
    bogus = hour_cell(hour, "a", 6, 1) | {"visits": "bm90IGEgc2tldGNo"}
    erasure = {"kind": "erasure", "id": "e1", "subject_hash": "not-hex", "timestamp_ms": 1}

    def chunks() -> Iterator[bytes]:
        for _ in range(5):
            yield os.urandom(1024 * 1024)

    with_anonymous = segment_item("shop-a", "x", timestamp_ms=hour) | {"anonymousId": "v"}
    naive_time = segment_item("shop-a", "x", timestamp_ms=hour) | {"timestamp": "2026-11-26T10:00"}
    other_site = {"batch": [segment_item("shop-b", "mei", timestamp_ms=hour)]}
    nul = segment_item("shop-a", "x", timestamp_ms=hour) | {"traits": {"first_name": "M\x00ei"}}
    basic = {"Authorization": "Basic eDo="}  # user "x": not a token
    # (status, what the detail must say, the answer)
    refusals: list[tuple[int, str, httpx.Response]] = [
        (401, "site token", post(client, "/v1/sync", good_sync, None)),
        (401, "site token", post(client, "/v1/sync", good_sync, "not-a-token")),
        (401, "site token", post(client, "/v1/batch", good_batch, None, headers=basic)),
        (403, "'shop-b'", post(client, "/v1/sync", {**good_sync, "site": "shop-b"}, token)),
        (403, "context.edge.site", post(client, "/v1/batch", other_site, token)),
        (400, "not valid UTF-8 JSON", raw("/v1/sync", gzip.compress(b'{"protocol": 1, ...'), {})),
        (400, "not valid gzip", raw("/v1/sync", b'{"protocol": 1}', {})),
        (400, "truncated", raw("/v1/sync", gzip.compress(b"{}")[:-4], {})),
        (
            400,
            "64 hex",
            post(client, "/v1/sync", good_sync, token, headers={"Idempotency-Key": "a"}),
        ),
        (413, "decompressed", raw("/v1/sync", bomb_bytes, {})),
        (413, "limit", raw("/v1/batch", os.urandom(4 * 1024 * 1024 + 1), {})),
        (413, "limit", client.post("/v1/batch", content=chunks(), headers={**gz, **bearer})),
        (415, "Content-Type", raw("/v1/sync", b"{}", {"Content-Type": "text/plain"})),
        (415, "only gzip", raw("/v1/sync", b"{}", {"Content-Encoding": "br"})),
        (
            422,
            "items[0].subject_hash",
            post(client, "/v1/sync", sync_body("shop-a", VENUE, 1, [erasure]), token),
        ),
        (422, "protocol", post(client, "/v1/sync", {**good_sync, "protocol": 2}, token)),
        (422, "anonymousId", post(client, "/v1/batch", {"batch": [with_anonymous]}, token)),
        (422, "timezone", post(client, "/v1/batch", {"batch": [naive_time]}, token)),
        (422, "NUL", post(client, "/v1/batch", {"batch": [nul]}, token)),
        (
            422,
            "items[0].cell",
            post(client, "/v1/sync", sync_body("shop-a", VENUE, 1, [insight(bogus)]), token),
        ),
        # Refused by the sketch library, or by the sandbox when the library crashes on it.
        (
            422,
            "insight cell",
            post(client, "/v1/sync", sync_body("shop-a", VENUE, 1, [insight(crashing)]), token),
        ),
        (401, "admin token", client.get("/v1/sites")),
        (401, "admin token", client.get("/v1/sites", headers=bearer)),
        (422, "k", client.get("/v1/insights", params={"k": 0}, headers=ADMIN)),
        (422, "unknown nope", client.get("/v1/insights", params={"metric": "nope"}, headers=ADMIN)),
        (422, "'venu'", client.get("/v1/insights", params={"venu": VENUE}, headers=ADMIN)),
        # A control character in an id never reaches the database (PostgreSQL refuses NUL).
        (422, "site", client.get("/v1/insights", params={"site": "e\x02\x00"}, headers=ADMIN)),
        (422, "venue", client.get("/v1/insights", params={"venue": "a\x00"}, headers=ADMIN)),
        (422, "site", client.get("/v1/audit", params={"site": "shop-a\x00"}, headers=ADMIN)),
        (404, "/v2/nothing", client.get("/v2/nothing")),
    ]
    for status, says, response in refusals:
        assert response.status_code == status, (response.request.url, response.text)
        answer = response.json()
        assert set(answer) == {"error", "detail"}
        assert says in answer["detail"], answer
    assert refusals[0][2].headers["WWW-Authenticate"].startswith("Bearer")

    assert client.get("/healthz").json()["status"] == "ok"
    for table in TABLES:
        assert count(target, table) == 0, table
    assert rows(target, "SELECT last_seen_ms FROM sites") == [(None,), (None,)]
    assert rows(target, "SELECT DISTINCT action FROM audit") == [("site_added",)]
    # And the same server still stores a good request.
    assert post(client, "/v1/sync", good_sync, token).json() == {"stored": 1, "duplicate": False}


def test_a_database_outage_answers_503_then_recovers(
    tmp_path: Path, request: pytest.FixtureRequest, postgres: str
) -> None:
    with database("postgresql", tmp_path, request) as target:
        store = CentralStore.open(target)
        token = add_site(store, "shop-a")
        body = sync_body("shop-a", VENUE, 1, [insight(hour_cell(DAY_MS, "a", 6, 1))])
        try:
            with (
                Server(create_app(store, ADMIN_TOKEN)) as server,
                httpx.Client(base_url=server.url, timeout=60) as http,
            ):
                assert http.get("/healthz").status_code == 200
                # What a database restart does to the collector's pooled connections.
                with psycopg.connect(postgres, autocommit=True) as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                        (target.rsplit("/", 1)[1],),
                    )
                down = post(http, "/v1/sync", body, token)
                assert down.status_code == 503, down.text
                assert down.headers["Retry-After"] == "5"
                assert "retry" in down.json()["detail"]
                answers = [post(http, "/v1/sync", body, token).status_code for _ in range(3)]
                assert 200 in answers
        finally:
            store.close()
        assert count(target, "insight_cells") == 1


def test_the_sandbox_survives_a_crashing_or_hanging_call() -> None:
    # A worker started again after a crash must answer within the timeout on a loaded
    # machine too (the suite runs two workers per core).
    sandbox = Sandbox(workers=1, timeout_s=6)
    cell = hour_cell(DAY_MS, "a", 6, 1)
    try:
        with pytest.raises(SandboxCrashed, match="crashed"):
            sandbox.call(segfault)
        assert sandbox.call(check_cells, [cell], CellLimits()) == [cell]
        with pytest.raises(SandboxTimedOut, match="no answer within 6 s"):
            sandbox.call(time.sleep, 30)
        assert sandbox.call(check_cells, [cell], CellLimits()) == [cell]
    finally:
        sandbox.close()


def test_cli_adds_a_site_and_prints_a_csv_summary(target: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    added = collector_cli("add-site", "shop-a", "--venue", VENUE, "--db", target, env=env)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    assert len(token) >= 40
    assert "shown only now" in added.stderr
    stored = rows(target, "SELECT token_sha256 FROM sites WHERE site = 'shop-a'")
    assert stored == [(hashlib.sha256(token.encode()).hexdigest(),)]
    again = collector_cli("add-site", "shop-a", "--db", target, env=env)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1
    assert "already registered" in again.stderr

    central = CentralStore.open(target)
    try:
        with Server(create_app(central, ADMIN_TOKEN)) as server:
            body = sync_body("shop-a", VENUE, 1, [insight(hour_cell(DAY_MS + HOUR_MS, "a", 6, 2))])
            with httpx.Client(base_url=server.url) as http:
                assert post(http, "/v1/sync", body, token).status_code == 200
    finally:
        central.close()

    day = _day(DAY_MS)
    done = collector_cli(
        "summary",
        "--from",
        day,
        "--to",
        day,
        "--format",
        "csv",
        "--metric",
        "orders",
        env={**env, "EDGE_COLLECTOR_DB": target},
    )
    assert done.returncode == 0, done.stderr
    (row,) = list(csv.DictReader(io.StringIO(done.stdout)))
    assert (row["venue"], row["orders"], row["suppressed"]) == (VENUE, "2", "false")
    missing = collector_cli("summary", env=env)
    assert missing.returncode == 2
    assert "EDGE_COLLECTOR_DB" in missing.stderr


# --- schemathesis: the OpenAPI document against the app ------------------------------------


def _as_site_a(case: Any) -> None:
    """Name the token's site in a generated body, so valid bodies reach the store (the site
    rule is not expressible in the schema)."""
    body = case.body
    if not isinstance(body, dict):
        return
    if "site" in body:
        body["site"] = "shop-a"
    batch = body.get("batch")
    for item in batch if isinstance(batch, list) else []:
        context = item.get("context") if isinstance(item, dict) else None
        edge = context.get("edge") if isinstance(context, dict) else None
        if isinstance(edge, dict):
            edge["site"] = "shop-a"


# A body that breaks the schema by its size (batch maxItems) is refused for its size: 413.
_SCHEMATHESIS = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422"),
                    *("428", "429", "5xx"),
                ]
            }
        }
    }
)


@pytest.mark.parametrize("mode", list(GenerationMode), ids=str)
def test_openapi_conformance(store: CentralStore, mode: GenerationMode) -> None:
    token = add_site(store, "shop-a")
    app = create_app(store, ADMIN_TOKEN)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=_SCHEMATHESIS)
    try:
        for found in schema.get_all_operations():
            operation = found.ok()  # type: ignore[union-attr]
            parts = (operation.body, operation.query, operation.headers)
            if mode == GenerationMode.NEGATIVE and not any(len(part) for part in parts):
                continue  # nothing a client sends to /healthz can be invalid

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
            def conforms(case: Any) -> None:
                _as_site_a(case)
                auth = ADMIN_TOKEN if case.method == "GET" else token
                headers = case.meta.components.get(ParameterLocation.HEADER)
                # A case whose headers are the invalid part may be the one without a token.
                negative = headers is not None and headers.mode == GenerationMode.NEGATIVE
                case.call_and_validate(
                    headers={} if negative else {"Authorization": f"Bearer {auth}"},
                    # Auth and "the body names the token's site" are not in the schema, so a
                    # body valid by the schema may rightly be refused.
                    excluded_checks=[positive_data_acceptance],
                )

            conforms()
    finally:
        app.state.sandbox.close()


@pytest.mark.parametrize("path", ["/v1/sync", "/v1/batch"])
@pytest.mark.parametrize("target", ["sqlite"], indirect=True)
def test_a_huge_chunked_push_is_refused_while_it_streams(store: CentralStore, path: str) -> None:
    token = add_site(store, "shop-a")
    with Server(create_app(store, ADMIN_TOKEN)) as server:
        port = int(server.url.rsplit(":", 1)[1])
        auth = f"Authorization: Bearer {token}\r\nContent-Encoding: gzip\r\n"
        answer, sent = chunked_post(port, path, 200, headers=auth)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
        # Read up to the intake's drain (16 MiB) so the site is told, never more: the rest is
        # what the kernel's socket buffers took on the way.
        assert sent <= 16 + socket_slack_mb(), f"{sent} MB went before the refusal"
        assert httpx.get(f"{server.url}/healthz").status_code == 200
