"""The central team's workspace API on both engines: cells arrive through ``/v1/sync`` as an
agent sends them, the rollup makes each site's own days of them, and the overview, the
comparison, the trend and the site page read those days."""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.collector import insights
from edge_agent.collector.app import create_app
from edge_agent.collector.exports import columns, schema
from edge_agent.collector.rollup import roll_up
from edge_agent.collector.sandbox import Sandbox
from edge_agent.collector.store.central import CentralStore
from edge_agent.collector.store.engine import now_ms
from tests.collector_helpers import (
    ADMIN_TOKEN,
    check_in,
    collector_cli,
    insight,
    post,
    shop_cell,
    sync_body,
)
from tests.inprocess import in_process

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: Taipei is UTC+8 all year: its day 2026-11-02 runs from 2026-11-01 16:00 UTC.
TAIPEI_DAY_MS = int(datetime(2026, 11, 1, 16, tzinfo=UTC).timestamp() * 1000)
HOUR = 3_600_000


def add_site(store: CentralStore, site: str, timezone: str | None, venue: str | None = None) -> str:
    token = secrets.token_urlsafe(32)
    store.add_site(site, venue or site, hashlib.sha256(token.encode()).hexdigest())
    if timezone is not None:
        with store.write() as tx:
            tx.run(
                "UPDATE sites SET timezone = ?, name = ? WHERE site = ?",
                (timezone, f"{site} shop", site),
            )
    return token


def send(
    client: httpx.Client,
    site: str,
    token: str,
    *cells: dict[str, object],
    revision: int | None = None,
) -> None:
    items = []
    for c in cells:
        item = insight(c)
        if revision is not None:
            item["revision"] = revision
        items.append(item)
    response = post(client, "/v1/sync", sync_body(site, site, TAIPEI_DAY_MS, items), token)
    assert response.status_code == 200, response.text


def rolled(store: CentralStore, sandbox: Sandbox) -> None:
    while True:
        done = roll_up(store, sandbox)
        assert done.failed == 0
        if done.queued == 0:
            return


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    made = Sandbox(workers=1)
    yield made
    made.close()


@pytest.fixture
def local(store: CentralStore) -> Iterator[httpx.Client]:
    with in_process(create_app(store, ADMIN_TOKEN)) as http:
        yield http


def get(client: httpx.Client, path: str, **params: Any) -> Any:
    response = client.get(path, params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_site_s_hours_make_its_own_days_and_the_overview_adds_them_up(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox
) -> None:
    taipei = add_site(store, "taipei", "Asia/Taipei")
    # 01:00 and 11:00 in Taipei on 2026-11-02 (the first is still 11-01 in UTC); 01:00 on
    # 11-03; and 10:00 on 10-31, in the period before.
    send(
        local,
        "taipei",
        taipei,
        shop_cell(TAIPEI_DAY_MS + HOUR, 6, 40, orders=3),
        shop_cell(TAIPEI_DAY_MS + 10 * HOUR, 7, 60, orders=2),
        shop_cell(TAIPEI_DAY_MS + 25 * HOUR, 5, 20),
        shop_cell(TAIPEI_DAY_MS - 2 * 24 * HOUR + 10 * HOUR, 6, 50, orders=1),
    )
    rolled(store, sandbox)
    days = {d.day: d for d in store.site_days("2026-10-01", "2026-12-01", "taipei")}
    assert sorted(days) == ["2026-10-31", "2026-11-02", "2026-11-03"]
    assert days["2026-11-02"].sums["footfall_in"] == 100
    assert days["2026-11-02"].sums["orders"] == 5
    assert days["2026-11-02"].hours == 2
    assert days["2026-11-02"].timezone == "Asia/Taipei"

    answer = get(local, "/v1/overview", **{"from": "2026-11-02", "to": "2026-11-03"})
    assert answer["figures"]["footfall"] == 120
    assert answer["figures"]["orders"] == 5
    assert answer["figures"]["revenue"] == {"unknown": 50.0}
    assert answer["figures"]["nps"] == 100.0
    assert answer["figures"]["ces"] == 2.0
    assert answer["figures"]["conversion"] == round(5 / 120, 4)
    assert answer["previous_figures"]["footfall"] == 50
    assert answer["change"]["footfall"] == round((120 - 50) / 50, 4)
    assert answer["sites"] == answer["sites_reporting"] == 1
    assert answer["days_to_roll_up"] == 0


def test_a_replaced_hour_is_rolled_up_again(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox
) -> None:
    token = add_site(store, "taipei", "Asia/Taipei")
    start = TAIPEI_DAY_MS + 10 * HOUR
    send(local, "taipei", token, shop_cell(start, 6, 40), revision=1)
    rolled(store, sandbox)
    send(local, "taipei", token, shop_cell(start, 6, 90), revision=2)
    rolled(store, sandbox)
    (day,) = store.site_days("2026-11-02", "2026-11-02", "taipei")
    assert day.sums["footfall_in"] == 90


def test_a_site_that_moves_to_another_time_zone_has_its_days_made_again(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox
) -> None:
    token = add_site(store, "shop", None)
    # 20:00 UTC on 11-01: 11-01 in UTC, 11-02 in Taipei.
    send(local, "shop", token, shop_cell(TAIPEI_DAY_MS + 4 * HOUR, 6, 40))
    rolled(store, sandbox)
    assert [d.day for d in store.site_days("2026-10-01", "2026-12-01", "shop")] == ["2026-11-01"]
    # Its check-in says it keeps Taipei's time now.
    store.record_check_in(
        "shop", check_in("shop", TAIPEI_DAY_MS, timezone="Asia/Taipei"), TAIPEI_DAY_MS
    )
    rolled(store, sandbox)
    assert [d.day for d in store.site_days("2026-10-01", "2026-12-01", "shop")] == ["2026-11-02"]


def test_the_comparison_ranks_sites_and_marks_the_partial_ones(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox
) -> None:
    tokens = {site: add_site(store, site, "UTC") for site in ("big", "small", "quiet", "idle")}
    day = TAIPEI_DAY_MS + 8 * HOUR  # 2026-11-02 00:00 UTC
    send(local, "big", tokens["big"], shop_cell(day + 10 * HOUR, 8, 200, orders=4))
    send(
        local,
        "small",
        tokens["small"],
        shop_cell(day + 10 * HOUR, 6, 30),
        shop_cell(day + 11 * HOUR, 2, 5),
    )
    # Fewer visitors than k in its only hour: a day shown as suppressed, never dropped.
    send(local, "quiet", tokens["quiet"], shop_cell(day + 10 * HOUR, 2, 9))
    rolled(store, sandbox)
    answer = get(local, "/v1/comparison", **{"from": "2026-11-02", "to": "2026-11-02"})
    by_site = {row["site"]: row for row in answer["sites"]}
    # Sites with no figure (none released, or none sent) come last, by id.
    assert [row["site"] for row in answer["sites"]] == ["big", "small", "idle", "quiet"]
    assert by_site["big"]["rank"] == 1
    assert by_site["small"]["rank"] == 2
    assert by_site["big"]["name"] == "big shop"
    assert by_site["small"]["figures"]["footfall"] == 30
    assert by_site["small"]["marked"]
    assert by_site["small"]["coverage"]["suppressed_hours"] == 1
    assert by_site["quiet"]["marked"]
    assert by_site["quiet"]["coverage"]["suppressed_days"] == 1
    assert not by_site["big"]["marked"]
    assert not by_site["idle"]["reporting"]

    ascending = get(
        local, "/v1/comparison", **{"from": "2026-11-02", "to": "2026-11-02", "order": "asc"}
    )
    assert [r["site"] for r in ascending["sites"]] == ["small", "big", "idle", "quiet"]
    assert by_site["quiet"]["figures"]["footfall"] is None
    assert by_site["quiet"]["rank"] is None

    response = local.get(
        "/v1/comparison",
        params={"from": "2026-11-02", "to": "2026-11-02", "format": "csv"},
        headers=ADMIN,
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    lines = list(csv.DictReader(io.StringIO(response.text)))
    assert [line["site"] for line in lines] == ["big", "small", "idle", "quiet"]
    assert lines[0]["partial"] == "false"
    assert lines[1]["partial"] == "true"

    refused = local.get("/v1/comparison", params={"sort": "shoe_size"}, headers=ADMIN)
    assert refused.status_code == 422
    assert "shoe_size" in refused.text


def test_a_trend_has_a_point_for_every_day_and_a_gap_where_nothing_came(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox
) -> None:
    token = add_site(store, "shop", "UTC")
    day = TAIPEI_DAY_MS + 8 * HOUR  # 2026-11-02 00:00 UTC
    send(
        local,
        "shop",
        token,
        shop_cell(day + 10 * HOUR, 6, 40),
        shop_cell(day + 2 * 24 * HOUR, 6, 10),
    )
    rolled(store, sandbox)
    answer = get(local, "/v1/trend", **{"from": "2026-11-01", "to": "2026-11-05", "site": "shop"})
    points = {p["period"]: p["figures"] for p in answer["points"]}
    assert list(points) == ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]
    assert points["2026-11-01"] is None
    assert points["2026-11-03"] is None
    assert points["2026-11-02"]["footfall"] == 40
    assert points["2026-11-04"]["footfall"] == 10
    weeks = get(
        local,
        "/v1/trend",
        **{"from": "2026-11-01", "to": "2026-11-05", "site": "shop", "by": "week"},
    )
    # 11-01 is a Sunday: its week began on 10-26.
    assert [(p["period"], (p["figures"] or {}).get("footfall")) for p in weeks["points"]] == [
        ("2026-10-26", None),
        ("2026-11-02", 50),
    ]


def test_a_site_page_shows_its_hours_in_its_own_clock(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox
) -> None:
    token = add_site(store, "taipei", "Asia/Taipei")
    # 02:00 UTC on Monday 2026-11-02 is 10:00 in Taipei.
    send(local, "taipei", token, shop_cell(TAIPEI_DAY_MS + 10 * HOUR, 6, 40))
    rolled(store, sandbox)
    page = get(local, "/v1/sites/taipei/page", **{"from": "2026-11-02", "to": "2026-11-02"})
    cells = page["heat_map"]["cells"]
    assert cells[0][10] == 40
    assert sum(v for row in cells for v in row if v is not None) == 40
    assert page["days"][0]["day"] == "2026-11-02"
    assert page["site"]["timezone"] == "Asia/Taipei"
    missing = local.get("/v1/sites/nowhere/page", headers=ADMIN)
    assert missing.status_code == 404


def test_a_venue_page_merges_its_agents_and_names_their_products(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox
) -> None:
    tokens = {site: add_site(store, site, "Asia/Taipei", "fair") for site in ("hall-a", "hall-b")}
    # The same hour at two agents: visitors p0-p5 and p0-p8, so 9 people, not 15; the
    # door counts add up (they count different doors).
    send(local, "hall-a", tokens["hall-a"], shop_cell(TAIPEI_DAY_MS + 10 * HOUR, 6, 40, 2))
    send(local, "hall-b", tokens["hall-b"], shop_cell(TAIPEI_DAY_MS + 10 * HOUR, 9, 20, 3))
    rolled(store, sandbox)
    # The rollup listed "tea" among hall-a's top products: its next check-in names it.
    report = replace(check_in("hall-a", now_ms(), timezone="Asia/Taipei"), products={})
    assert store.record_check_in("hall-a", report, now_ms()) == ["tea"]
    named = replace(report, sent_ms=now_ms() + 1, products={"tea": "Oolong tea"})
    assert store.record_check_in("hall-a", named, now_ms()) == []

    day = {"from": "2026-11-02", "to": "2026-11-02"}
    page = get(local, "/v1/venues/fair/page", **day)
    assert [a["site"] for a in page["agents"]] == ["hall-a", "hall-b"]
    assert page["timezone"] == "Asia/Taipei"
    assert page["total"]["visitors"] == 9
    assert page["heat_map"]["cells"][0][10] == 60
    assert page["total"]["top_products"] == [["tea", 5]]
    assert page["product_names"] == {"tea": "Oolong tea"}
    site = get(local, "/v1/sites/hall-b/page", **day)
    # hall-b never named it: its own page shows the id alone.
    assert site["product_names"] == {}
    lines = list(
        csv.DictReader(io.StringIO(local.get("/v1/export", params=day, headers=ADMIN).text))
    )
    products = {
        (line["site"], line["dimension"], line["dimension_name"])
        for line in lines
        if line["metric"] == "top_product_count"
    }
    assert products == {("hall-a", "tea", "Oolong tea"), ("hall-b", "tea", "")}
    assert all(
        line["dimension_name"] == "" for line in lines if line["metric"] != "top_product_count"
    )
    assert local.get("/v1/venues/nowhere/page", headers=ADMIN).status_code == 404


def test_the_workspace_is_not_open_to_anyone(local: httpx.Client) -> None:
    for path in ("/v1/overview", "/v1/comparison", "/v1/trend", "/v1/venues/v/page"):
        assert local.get(path).status_code == 401


def test_the_exports_keep_one_schema_whatever_the_data(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox
) -> None:
    tokens = {site: add_site(store, site, "Asia/Taipei") for site in ("taipei", "quiet")}
    send(local, "taipei", tokens["taipei"], shop_cell(TAIPEI_DAY_MS + 10 * HOUR, 6, 40, orders=2))
    send(local, "quiet", tokens["quiet"], shop_cell(TAIPEI_DAY_MS + 10 * HOUR, 2, 9))
    rolled(store, sandbox)
    span = {"from": "2026-11-02", "to": "2026-11-02"}

    wide = local.get("/v1/export", params={**span, "shape": "wide"}, headers=ADMIN)
    assert wide.status_code == 200, wide.text
    assert 'filename="edge-wide-2026-11-02-2026-11-02.csv"' in wide.headers["content-disposition"]
    lines = list(csv.DictReader(io.StringIO(wide.text)))
    assert tuple(lines[0]) == columns("wide")
    by_site = {line["site"]: line for line in lines}
    assert by_site["taipei"]["period_start"] == "2026-11-02T00:00:00+08:00"
    assert by_site["taipei"]["footfall_in"] == "40"
    assert by_site["taipei"]["revenue"] == "20.0"
    assert by_site["taipei"]["suppressed"] == "false"
    assert by_site["taipei"]["site_name"] == "taipei shop"
    # A suppressed day is a line with empty figures, not a zero and not a missing line.
    assert by_site["quiet"]["suppressed"] == "true"
    assert by_site["quiet"]["footfall_in"] == ""

    long = local.get("/v1/export", params=span, headers=ADMIN)
    tidy = list(csv.DictReader(io.StringIO(long.text)))
    assert tuple(tidy[0]) == columns("long")
    products = [(t["dimension"], t["value"]) for t in tidy if t["metric"] == "top_product_count"]
    assert products == [("tea", "2.0")]

    for shape in ("long", "wide"):
        answer = local.get(
            "/v1/export", params={**span, "shape": shape, "format": "parquet"}, headers=ADMIN
        )
        assert answer.status_code == 200
        table = pq.read_table(io.BytesIO(answer.content))
        assert table.schema == schema(shape)
        assert set(table.column("site").to_pylist()) == {"taipei", "quiet"}

    # No day in the period: the same columns, no line.
    empty = local.get(
        "/v1/export",
        params={"from": "2025-01-01", "to": "2025-01-02", "format": "parquet"},
        headers=ADMIN,
    )
    table = pq.read_table(io.BytesIO(empty.content))
    assert table.schema == schema("long")
    assert table.num_rows == 0


def test_the_export_command_writes_the_same_files(
    store: CentralStore, target: str, local: httpx.Client, sandbox: Sandbox, tmp_path: Path
) -> None:
    token = add_site(store, "taipei", "Asia/Taipei")
    send(local, "taipei", token, shop_cell(TAIPEI_DAY_MS + 10 * HOUR, 6, 40))
    rolled(store, sandbox)
    span = ("--from", "2026-11-02", "--to", "2026-11-02")
    printed = collector_cli("export", "--db", target, *span, "--shape", "wide")
    assert printed.returncode == 0, printed.stderr
    served = local.get(
        "/v1/export",
        params={"from": "2026-11-02", "to": "2026-11-02", "shape": "wide"},
        headers=ADMIN,
    )
    assert printed.stdout == served.text
    out = tmp_path / "days.parquet"
    written = collector_cli(
        "export", "--db", target, *span, "--format", "parquet", "--out", str(out)
    )
    assert written.returncode == 0, written.stderr
    assert pq.read_table(out).schema == schema("long")


def test_reading_commands_refuse_a_database_that_is_not_there(tmp_path: Path) -> None:
    typo = tmp_path / "centrl.db"
    for command in ("summary", "export", "fleet"):
        result = collector_cli(command, "--db", str(typo))
        assert result.returncode != 0, command
        assert f"no collector database at {typo}" in result.stderr
    assert not typo.exists()


def test_a_summary_without_cells_says_why(target: str, store: CentralStore) -> None:
    add_site(store, "taipei", "Asia/Taipei")
    result = collector_cli("summary", "--db", target, "--from", "2026-11-02", "--to", "2026-11-02")
    assert result.returncode == 0, result.stderr
    assert "no insight cells from 2026-11-02 to 2026-11-02" in result.stderr


def test_a_bi_role_reads_the_views_and_nothing_else(
    store: CentralStore, target: str, local: httpx.Client, sandbox: Sandbox
) -> None:
    if not target.startswith("postgresql://"):
        pytest.skip("roles are PostgreSQL's")
    token = add_site(store, "taipei", "Asia/Taipei")
    send(local, "taipei", token, shop_cell(TAIPEI_DAY_MS + 10 * HOUR, 6, 40))
    rolled(store, sandbox)
    role = f"bi_{secrets.token_hex(4)}"
    # The grants docs/central-workspace.md gives a BI tool's role.
    with psycopg.connect(target, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} NOLOGIN")
        admin.execute(f"GRANT SELECT ON bi_site_days, bi_sites TO {role}")
        try:
            admin.execute(f"SET ROLE {role}")
            assert admin.execute("SELECT site_name, footfall_in FROM bi_site_days").fetchall() == [
                ("taipei shop", 40)
            ]
            assert admin.execute("SELECT timezone FROM bi_sites").fetchall() == [("Asia/Taipei",)]
            for table in ("identified", "insight_cells", "sites"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    admin.execute(f"SELECT count(*) FROM {table}")  # noqa: S608
        finally:
            admin.execute("RESET ROLE")
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_a_summary_by_day_reads_the_rollup_and_is_never_behind_it(
    store: CentralStore, target: str, local: httpx.Client, sandbox: Sandbox
) -> None:
    tokens = {site: add_site(store, site, "Asia/Taipei", "fair") for site in ("hall-a", "hall-b")}
    # 23:00 UTC on 2026-11-01 is 07:00 on 2026-11-02 in Taipei: the same local day as 10:00.
    send(local, "hall-a", tokens["hall-a"], shop_cell(TAIPEI_DAY_MS + 7 * HOUR, 6, 40, 2))
    send(local, "hall-b", tokens["hall-b"], shop_cell(TAIPEI_DAY_MS + 7 * HOUR, 9, 20, 3))
    send(local, "hall-b", tokens["hall-b"], shop_cell(TAIPEI_DAY_MS + 10 * HOUR, 7, 30, 1))
    day = {"from": "2026-11-02", "to": "2026-11-02"}
    fresh = get(local, "/v1/insights", **day, venue="fair")
    rolled(store, sandbox)
    from_rollup = get(local, "/v1/insights", **day, venue="fair")
    assert from_rollup == fresh
    (row,) = from_rollup["rows"]
    assert (row["period"], row["sites"], row["visitors"], row["footfall_in"]) == (
        "2026-11-02",
        2,
        9,
        90,
    )
    by_site = get(local, "/v1/insights", **day, site="hall-b")
    # With the hour cells gone, the days still answer: they come from the rollup.
    with store.write() as tx:
        tx.run("DELETE FROM insight_cells")
    assert get(local, "/v1/insights", **day, venue="fair") == from_rollup
    assert get(local, "/v1/insights", **day, site="hall-b") == by_site
    # A late hour is queued: its day is made from the hours until the rollup catches up.
    send(local, "hall-a", tokens["hall-a"], shop_cell(TAIPEI_DAY_MS + 12 * HOUR, 8, 10, 1))
    (late,) = get(local, "/v1/insights", **day, venue="fair")["rows"]
    assert late["footfall_in"] == 10
    rolled(store, sandbox)
    (caught_up,) = get(local, "/v1/insights", **day, venue="fair")["rows"]
    assert caught_up["footfall_in"] == 10


def test_a_summary_too_large_for_one_answer_is_refused_saying_how_to_ask(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = add_site(store, "taipei", "Asia/Taipei")
    send(local, "taipei", token, *(shop_cell(TAIPEI_DAY_MS + h * HOUR, 6, 40) for h in range(3)))
    rolled(store, sandbox)
    monkeypatch.setattr(insights, "MAX_ROWS", 0)
    monkeypatch.setattr(insights, "MAX_CELLS", 2)

    def read_anyway(*_: object) -> None:
        pytest.fail("a refused summary read the rolled-up days it refused")

    # Counted, not read: a fleet's quarter of days refused costs no memory.
    monkeypatch.setattr(store, "rolled_days", read_anyway)
    day = {"from": "2026-11-02", "to": "2026-11-02"}
    for asked, what in (({}, "1 rows"), ({"by": "hour"}, "3 hour cells")):
        answer = local.get("/v1/insights", params={**day, **asked}, headers=ADMIN)
        assert answer.status_code == 422, answer.text
        assert f"would take {what}" in answer.json()["detail"]
        assert "one venue" in answer.json()["detail"]


ZONES = ("Asia/Taipei", "UTC", "America/New_York")


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.data())
def test_rolled_up_days_equal_the_days_merged_from_their_hours(
    store: CentralStore, local: httpx.Client, sandbox: Sandbox, data: st.DataObject
) -> None:
    # Each example is a venue of its own on the same database: nothing carries over.
    venue = f"fair-{secrets.token_hex(4)}"
    zones = data.draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=3), label="zones")
    sites = [f"{venue}-{i}" for i in range(len(zones))]
    tokens = {s: add_site(store, s, tz, venue) for s, tz in zip(sites, zones, strict=True)}
    sent = data.draw(
        st.lists(
            st.tuples(
                st.integers(0, len(sites) - 1),
                st.integers(0, 47),  # the hour, over two UTC days and the local days around
                st.integers(0, 12),  # visitors: under k = 5 the hour is suppressed
                st.integers(0, 60),
                st.integers(0, 4),
            ),
            min_size=1,
            max_size=10,
        ),
        label="hours",
    )
    # A later send of the same hour replaces it (its revision is higher), as an agent's does.
    for revision, (i, hour, visitors, door_in, orders) in enumerate(sent, 1):
        cell = shop_cell(TAIPEI_DAY_MS + hour * HOUR, visitors, door_in, min(orders, visitors))
        send(local, sites[i], tokens[sites[i]], cell, revision=revision)
    span = {"from": "2026-10-31", "to": "2026-11-04"}
    asks = [{"venue": venue}, *({"site": s} for s in sites)]
    # Every hour is still queued: each day is merged from its stored hours on the request.
    from_hours = [get(local, "/v1/insights", **span, **ask) for ask in asks]
    rolled(store, sandbox)
    assert [get(local, "/v1/insights", **span, **ask) for ask in asks] == from_hours
