"""Insight cells computed from a store on disk: closed hours, late events, the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.app import clock
from edge_agent.app.insights import compute_insights
from edge_agent.config import Settings, load_settings
from edge_agent.core.aggregate import HOUR_MS, from_document, hour_of
from edge_agent.store.database import Store
from tests.helpers import SITE, cli, ingest, migrated_store, track

NOW = clock.now_ms()
LAST_HOUR = hour_of(NOW) - HOUR_MS


def _at(event: dict[str, Any], ms: int) -> dict[str, Any]:
    return {**event, "timestamp": datetime.fromtimestamp(ms / 1000, UTC).isoformat()}


def _site(tmp_path: Path) -> Settings:
    config = tmp_path / "agent.toml"
    config.write_text(f'[site]\nid = "{SITE}"\ndata_dir = "{tmp_path / "data"}"\n')
    return load_settings(config, environ={})


def _store(settings: Settings, events: list[dict[str, Any]], junk: Sequence[bytes] = ()) -> None:
    # Junk is received in the closed hour, so its dead letters count there.
    assert ingest(settings, events, NOW) == 0
    if junk:
        assert ingest(settings, [], LAST_HOUR, junk) == len(junk)


def _visit(n: int, at: int) -> list[dict[str, Any]]:
    visit = f"visit-{n}"
    product = {"product_id": "p1", "price": 5.0, "quantity": 2, "category": "c1"}
    return [
        _at(track("Zone Entered", {"zone": "dairy"}, anonymousId=visit), at),
        _at(track("Zone Exited", {"zone": "dairy"}, anonymousId=visit), at + 60_000),
        _at(
            track(
                "Order Completed",
                {"order_id": f"o{n}", "total": 10.0, "currency": "TWD", "products": [product]},
                anonymousId=visit,
            ),
            at + 90_000,
        ),
    ]


def test_closed_hours_are_computed_once_and_again_after_a_late_event(tmp_path: Path) -> None:
    settings = _site(tmp_path)
    _store(settings, [e for n in range(6) for e in _visit(n, LAST_HOUR + n * 1000)])
    with Store.open(settings.database) as store:
        assert compute_insights(store, settings, NOW) == 1
        assert compute_insights(store, settings, NOW) == 0  # nothing new: nothing recomputed
        (document,) = store.insights.cells(LAST_HOUR, LAST_HOUR + HOUR_MS)
    cell = from_document(document)
    assert (cell.orders, cell.items, round(cell.visits.get_estimate())) == (6, 12, 6)
    assert cell.dwell["dairy"].get_quantile(0.5, True) == 60.0
    _store(settings, _visit(7, LAST_HOUR + 30 * 60_000))  # late events for the closed hour
    with Store.open(settings.database) as store:
        assert compute_insights(store, settings, NOW) == 1
        (document,) = store.insights.cells(LAST_HOUR, LAST_HOUR + HOUR_MS)
    assert from_document(document).orders == 7


def test_the_cli_prints_sane_figures_and_suppresses_small_hours(tmp_path: Path) -> None:
    settings = _site(tmp_path)
    _store(settings, [e for n in range(6) for e in _visit(n, LAST_HOUR + n * 1000)])
    config = tmp_path / "agent.toml"
    day = time.strftime("%Y-%m-%d", time.gmtime(LAST_HOUR / 1000))
    done = cli("--config", str(config), "insights", "--day", day, "--format", "json")
    assert done.returncode == 0, done.stderr
    released = json.loads(done.stdout)
    (hour,) = [h for h in released["hours"] if h["start_ms"] == LAST_HOUR]
    # No door counted anyone in: no conversion, only the tracked visits' one.
    assert hour["conversion"] is None
    assert 0 <= hour["visit_conversion"] <= 1
    assert hour["orders"] == 6
    assert "pseudonym" not in done.stdout
    strict = cli("--config", str(config), "insights", "--day", day, "--k", "50")
    assert "suppressed: fewer than 50 distinct visitors" in strict.stdout


def test_private_releases_spend_the_budget_then_are_refused(tmp_path: Path) -> None:
    settings = _site(tmp_path)
    _store(settings, [e for n in range(6) for e in _visit(n, LAST_HOUR + n * 1000)])
    config = tmp_path / "agent.toml"
    config.write_text(
        config.read_text() + "[insights]\nepsilon_per_day = 0.5\nepsilon_per_cell = 0.1\n"
    )
    day = time.strftime("%Y-%m-%d", time.gmtime(LAST_HOUR / 1000))
    hour = str(time.gmtime(LAST_HOUR / 1000).tm_hour)
    outcomes = []
    for _ in range(4):
        done = cli(
            "--config",
            str(config),
            "insights",
            "--day",
            day,
            "--hour",
            hour,
            "--dp",
            "--format",
            "json",
        )
        outcomes.append(done)
    # Each release shows the hour and its total: 0.2 epsilon, so two fit in 0.5.
    assert [o.returncode for o in outcomes] == [0, 0, 2, 2]
    assert "budget" in outcomes[2].stderr
    assert json.loads(outcomes[1].stdout)["epsilon_spent_today"] == 0.4
    with Store.open(load_settings(config, environ={}).database) as store:
        spent = store.db.execute("SELECT sum(epsilon) FROM dp_ledger").fetchone()[0]
    assert spent <= 0.5


def test_duplicates_and_dead_letters_are_counted_in_their_hours(tmp_path: Path) -> None:
    settings = _site(tmp_path)
    events = [e for n in range(6) for e in _visit(n, LAST_HOUR + n * 1000)]
    _store(settings, events)
    _store(settings, events[:4], junk=[b"{oops", b"[]", b"{oops"])  # re-sent, and rejected
    with Store.open(settings.database) as store:
        compute_insights(store, settings, NOW)
        (document,) = store.insights.cells(LAST_HOUR, LAST_HOUR + HOUR_MS)
    figures = from_document(document).figures()
    assert figures["duplicates"] == 4
    assert figures["dead_letters"] == 3  # a redelivered rejection counts again
    assert figures["orders"] == 6  # duplicates change nothing else


def test_without_noise_the_figures_are_exact_and_spend_nothing(tmp_path: Path) -> None:
    settings = _site(tmp_path)
    _store(settings, [e for n in range(9) for e in _visit(n, LAST_HOUR + n * 1000)])
    day = time.strftime("%Y-%m-%d", time.gmtime(LAST_HOUR / 1000))
    hour = str(time.gmtime(LAST_HOUR / 1000).tm_hour)
    config = str(tmp_path / "agent.toml")
    for _ in range(3):
        done = cli("--config", config, "insights", "--day", day, "--hour", hour, "--format", "json")
        assert done.returncode == 0, done.stderr
        (shown,) = json.loads(done.stdout)["hours"]
        assert (shown["orders"], shown["revenue"], shown["visits"]) == (9, 90.0, 9)
        assert shown["dwell_s"]["dairy"] == {"count": 9, "median": 60.0, "p90": 60.0}
    with Store.open(settings.database) as store:
        assert store.db.execute("SELECT count(*) FROM dp_ledger").fetchone()[0] == 0


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["2026-11-25", "2026-11-26"]), st.floats(0.01, 0.6)),
        max_size=25,
    ),
    st.floats(0.1, 2.0),
)
def test_the_ledger_never_lets_a_day_overspend(
    tmp_path_factory: pytest.TempPathFactory, releases: list[tuple[str, float]], per_day: float
) -> None:
    path = tmp_path_factory.mktemp("ledger") / "edge-agent.db"
    with migrated_store(path) as store:
        for day, cost in releases:
            store.insights.spend_epsilon(day, cost, per_day, "test", NOW)
        spent = dict(store.db.execute("SELECT day, sum(epsilon) FROM dp_ledger GROUP BY day"))
    assert all(total <= per_day + 1e-9 for total in spent.values())


@pytest.mark.parametrize(
    ("day", "first_utc", "hours"),
    [
        pytest.param("2026-03-29", datetime(2026, 3, 28, 22, tzinfo=UTC), 23, id="clocks-forward"),
        pytest.param("2026-10-25", datetime(2026, 10, 24, 21, tzinfo=UTC), 25, id="clocks-back"),
    ],
)
def test_a_day_is_the_sites_own_across_a_clock_change(
    tmp_path: Path, day: str, first_utc: datetime, hours: int
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[site]\nid = "{SITE}"\ndata_dir = "{tmp_path / "data"}"\ntimezone = "Europe/Helsinki"\n'
    )
    settings = load_settings(config, environ={})
    first = int(first_utc.timestamp() * 1000)
    # One visit in every hour from the hour before the site's day to the hour after it.
    for n in range(-1, hours + 1):
        hour = first + n * HOUR_MS
        assert ingest(settings, _visit(n + 1, hour + 600_000), hour + 1_200_000) == 0
    done = cli("--config", str(config), "insights", "--day", day, "--k", "1", "--format", "json")
    assert done.returncode == 0, done.stderr
    released = json.loads(done.stdout)
    starts = [h["start_ms"] for h in released["hours"]]
    assert starts == [first + n * HOUR_MS for n in range(hours)]
    assert all(h["orders"] == 1 for h in released["hours"])
    assert released["total"]["orders"] == hours  # the hours either side belong to other days
    table = cli("--config", str(config), "insights", "--day", day, "--k", "1").stdout
    assert f"{day} (Europe/Helsinki)" in table
    if hours == 25:
        assert "03:00 EEST" in table
        assert "03:00 EET " in table
        repeated = cli(
            "--config", str(config), "insights", "--day", day, "--hour", "3", "--k", "1",
            "--format", "json",
        )  # fmt: skip
        assert len(json.loads(repeated.stdout)["hours"]) == 2
    else:
        assert "03:00" not in table  # the hour the clocks skip
        assert "04:00 EEST" in table


def test_the_screens_today_is_the_sites_day(tmp_path: Path) -> None:
    from edge_agent.app.screens import site_today

    settings = _site(tmp_path)
    midnight = int(datetime(2026, 10, 24, 21, tzinfo=UTC).timestamp() * 1000)  # Helsinki 25 Oct
    for n, hour in enumerate((midnight - HOUR_MS, midnight, midnight + 5 * HOUR_MS)):
        assert ingest(settings, _visit(n, hour + 600_000), hour + 1_200_000) == 0
    now = midnight + 10 * HOUR_MS
    with Store.open(settings.database) as store:
        compute_insights(store, settings, now)
        helsinki = site_today(store, 1, {}, now, "Europe/Helsinki")
        utc = site_today(store, 1, {}, now, "UTC")
    assert (helsinki["day_start_ms"], helsinki["day_end_ms"]) == (midnight, midnight + 25 * HOUR_MS)
    assert len(cast("list[int]", helsinki["slots"])) == 25
    assert cast("dict[str, Any]", helsinki["total"])["orders"] == 2  # not the hour before
    # At UTC the same moment's day began at 00:00 UTC: after the two visits of the 24th.
    assert cast("dict[str, Any]", utc["total"])["orders"] == 1


def test_orders_in_another_currency_are_converted_or_counted_apart(tmp_path: Path) -> None:
    settings = _site(tmp_path)
    config = tmp_path / "agent.toml"
    config.write_text(config.read_text() + 'currency = "TWD"\nexchange_rates = "EUR=34.5"\n')
    events = [e for n in range(6) for e in _visit(n, LAST_HOUR + n * 1000)]
    for event, currency in zip(
        [e for e in events if e["event"] == "Order Completed"][:2], ["EUR", "USD"], strict=True
    ):
        event["properties"]["currency"] = currency
    _store(settings, events)
    day = time.strftime("%Y-%m-%d", time.gmtime(LAST_HOUR / 1000))
    done = cli("--config", str(config), "insights", "--day", day, "--format", "json")
    assert done.returncode == 0, done.stderr
    total = json.loads(done.stdout)["total"]
    # Four TWD orders, one EUR order at 34.5; the USD one has no rate: kept apart, not added.
    assert (total["revenue"], total["currency"]) == (4 * 10.0 + 345.0, "TWD")
    assert (total["orders"], total["unpriced_orders"]) == (6, 1)
    assert total["other_revenue"] == {"USD": 10.0}
    assert total["basket_value_mean"] == round(385.0 / 5, 4)
    table = cli("--config", str(config), "insights", "--day", day)
    assert "revenue and basket in TWD" in table.stdout
    assert "not in the revenue: 1 order(s) in other currencies (USD 10.00)" in table.stdout
