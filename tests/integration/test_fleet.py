"""Fleet health at central, on SQLite and PostgreSQL: sites check in (``POST /v1/checkin``),
admins read the verdicts (``GET /v1/fleet``, the ``fleet`` command), monitoring scrapes
``/metrics``; and an agent's own check-in against a collector under uvicorn."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.app.checkin import CheckIns
from edge_agent.collector import fleet
from edge_agent.collector.app import create_app
from edge_agent.collector.cli import main as collector_main
from edge_agent.collector.store import products
from edge_agent.collector.store.central import CentralStore
from edge_agent.config import Secret, load_settings
from edge_agent.core.catalogue import Entry
from edge_agent.core.fleet import HOUR_MS, MINUTE_MS, CheckIn
from edge_agent.core.wireform import MAX_CHECKIN_BYTES
from edge_agent.store.database import Store
from tests.collector_helpers import ADMIN_TOKEN, Server, count, rows
from tests.helpers import SITE
from tests.inprocess import in_process

pytestmark = pytest.mark.integration

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
NO_MODEL = "no model serving: staff screens show no recommendations"


def add_site(store: CentralStore, site: str, venue: str = "mall-a") -> str:
    token = secrets.token_urlsafe(32)
    store.add_site(site, venue, hashlib.sha256(token.encode()).hexdigest())
    return token


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def report(site: str, **changes: Any) -> CheckIn:
    """A healthy check-in of ``site`` sent now, with ``changes``."""
    at = changes.pop("sent_ms", now_ms())
    healthy = CheckIn(
        site=site,
        sent_ms=at,
        version="1.0.0",
        uptime_s=86_400,
        name=f"Store {site}",
        timezone="Europe/Helsinki",
        currency="EUR",
        broker="connected",
        broker_since_ms=at - HOUR_MS,
        outbox_items=0,
        outbox_oldest_ms=None,
        dead_letters_last_hour=0,
        duplicates_last_hour=0,
        disk_free_bytes=50 * 10**9,
        disk_free_share=0.5,
        models={"next_basket": "2026.11.01"},
        last_sync_ms=at - 5 * MINUTE_MS,
        clock_offset_s=0.0,
    )
    return dataclasses.replace(healthy, **changes)


def check_in(
    client: httpx.Client, token: str | None, body: object, **headers: str
) -> httpx.Response:
    """POST a check-in as the agent does (plain JSON)."""
    sent = {"Content-Type": "application/json", **headers}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post("/v1/checkin", content=content, headers=sent)


def fleet_of(client: httpx.Client) -> dict[str, Any]:
    answer = client.get("/v1/fleet", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


@pytest.fixture
def local(store: CentralStore) -> Iterator[httpx.Client]:
    """An httpx client of the collector app over ``store``, in this process."""
    with in_process(create_app(store, ADMIN_TOKEN)) as http:
        yield http


def test_a_check_in_is_stored_and_names_the_site(
    local: httpx.Client, store: CentralStore, target: str
) -> None:
    token = add_site(store, "shop-a")
    sent = report("shop-a", name="Café Ünïcode 台北")
    before = now_ms()
    answer = check_in(local, token, sent.as_document())
    assert answer.status_code == 200, answer.text
    assert before <= answer.json()["received_ms"] <= now_ms()

    assert count(target, "check_ins") == 1
    (kept,) = rows(target, "SELECT site, sent_ms, report FROM check_ins")
    assert kept[:2] == ("shop-a", sent.sent_ms)
    assert orjson.loads(kept[2]) == sent.as_document()
    (site,) = local.get("/v1/sites", headers=ADMIN).json()["sites"]
    assert (site["name"], site["timezone"], site["currency"]) == (
        "Café Ünïcode 台北",
        "Europe/Helsinki",
        "EUR",
    )
    assert site["last_seen_ms"] == answer.json()["received_ms"]

    # Gzipped, as the sync's bodies are, is taken too.
    again = dataclasses.replace(sent, sent_ms=sent.sent_ms + 1, currency="")
    gz = check_in(
        local,
        token,
        gzip.compress(orjson.dumps(again.as_document())),
        **{"Content-Encoding": "gzip"},
    )
    assert gz.status_code == 200, gz.text
    # An empty currency is "not said": NULL, as for a site that never checked in.
    assert local.get("/v1/sites", headers=ADMIN).json()["sites"][0]["currency"] is None


def test_refused_check_ins_store_nothing(
    local: httpx.Client, store: CentralStore, target: str
) -> None:
    token = add_site(store, "shop-a")
    add_site(store, "shop-b")
    good = report("shop-a").as_document()
    padded = orjson.dumps(good)[:-1] + b" " * MAX_CHECKIN_BYTES + b"}"
    # (status, what the detail must say, the answer)
    refusals: list[tuple[int, str, httpx.Response]] = [
        (401, "site token", check_in(local, None, good)),
        (401, "site token", check_in(local, "not-a-token", good)),
        (403, "'shop-b'", check_in(local, token, good | {"site": "shop-b"})),
        (
            422,
            "sent_ms",
            check_in(local, token, good | {"sent_ms": now_ms() + 2 * HOUR_MS}),
        ),
        (413, f"at most {MAX_CHECKIN_BYTES}", check_in(local, token, padded)),
        (413, "at most 65536", check_in(local, token, b"{" + b" " * (1024 * 1024) + b"}")),
        (400, "not valid UTF-8 JSON", check_in(local, token, b'{"protocol": 1, ')),
        (422, "unknown field 'uptime'", check_in(local, token, good | {"uptime": 3})),
        (422, "broker", check_in(local, token, good | {"broker": "flaky"})),
        (422, "NUL", check_in(local, token, good | {"version": "1\x00"})),
        (422, "timezone", check_in(local, token, good | {"timezone": ""})),
        (422, "name", check_in(local, token, good | {"name": "x\x1b[2J"})),
        (422, "", check_in(local, token, [good])),
        (415, "Content-Type", check_in(local, token, good, **{"Content-Type": "text/plain"})),
        (415, "only gzip", check_in(local, token, good, **{"Content-Encoding": "br"})),
    ]
    for status, says, response in refusals:
        assert response.status_code == status, (status, says, response.text)
        answer = response.json()
        assert set(answer) == {"error", "detail"}
        assert says in answer["detail"], answer
    assert count(target, "check_ins") == 0
    assert (
        rows(target, "SELECT name, timezone, last_seen_ms FROM sites") == [(None, None, None)] * 2
    )
    # And a good one is still taken.
    assert check_in(local, token, good).status_code == 200


def test_the_fleet_shows_each_sites_verdict_with_its_reasons(
    local: httpx.Client, store: CentralStore
) -> None:
    tokens = {site: add_site(store, site) for site in ("fine", "full", "gone", "never")}
    assert check_in(local, tokens["fine"], report("fine").as_document()).status_code == 200
    full = report("full", disk_free_share=0.04, disk_free_bytes=400 * 10**6, name="")
    assert check_in(local, tokens["full"], full.as_document()).status_code == 200
    # Last heard from an hour ago, at 10:15 in Helsinki (08:15 UTC in winter).
    an_hour_ago = now_ms() - HOUR_MS
    store.record_check_in("gone", report("gone", sent_ms=an_hour_ago), an_hour_ago)

    listed = fleet_of(local)
    assert listed["counts"] == {"healthy": 1, "degraded": 1, "silent": 2}
    assert listed["silent_after_s"] == fleet.SILENT_AFTER_S
    by_site = {s["site"]: s for s in listed["sites"]}
    assert [s["site"] for s in listed["sites"]] == ["fine", "full", "gone", "never"]
    assert (by_site["fine"]["health"], by_site["fine"]["reasons"]) == ("healthy", [])
    assert by_site["fine"]["name"] == "Store fine"
    assert by_site["fine"]["report"]["models"] == {"next_basket": "2026.11.01"}
    assert by_site["fine"]["check_in"]["age_s"] < 60
    assert (by_site["full"]["health"], by_site["full"]["reasons"]) == (
        "degraded",
        ["disk 96% full (400 MB free)"],
    )
    assert by_site["full"]["name"] is None
    gone = by_site["gone"]
    assert gone["health"] == "silent"
    (reason,) = gone["reasons"]
    assert reason.startswith("silent: no check-in for 1 h (last at ")
    assert reason.endswith(" site time)")
    assert gone["check_in"]["received_ms"] == an_hour_ago
    assert by_site["never"] == {
        "site": "never",
        "venue": "mall-a",
        "name": None,
        "health": "silent",
        "reasons": ["never heard from: no check-in and no sync yet"],
        "last_seen_ms": None,
        "check_in": None,
        "report": None,
    }

    # Silence is the collector's choice (serve --silent-after-s): two hours, and "gone" is
    # fresh again; a second, and the fresh ones turn silent as soon as a second has passed.
    fleet.configure(local_app(local), fleet.Options(silent_after_s=2 * 3600))
    assert fleet_of(local)["counts"] == {"healthy": 2, "degraded": 1, "silent": 1}
    fleet.configure(local_app(local), fleet.Options(silent_after_s=0.001))
    time.sleep(0.01)  # more than the bound: the verdict is taken against central's clock
    assert fleet_of(local)["counts"] == {"healthy": 0, "degraded": 0, "silent": 4}

    refused = local.get("/v1/fleet", headers={"Authorization": f"Bearer {tokens['fine']}"})
    assert refused.status_code == 401
    assert local.get("/v1/fleet").status_code == 401


def local_app(client: httpx.Client) -> Any:
    """The app behind an `in_process` client."""
    return client._transport.app  # type: ignore[attr-defined]


def test_a_newer_check_in_replaces_an_older_one_but_not_the_reverse(
    local: httpx.Client, store: CentralStore, target: str
) -> None:
    token = add_site(store, "shop-a")
    at = now_ms()
    first = report("shop-a", sent_ms=at, outbox_items=1, name="First")
    late = report("shop-a", sent_ms=at - MINUTE_MS, outbox_items=2, name="Late")
    newer = report("shop-a", sent_ms=at + 1, outbox_items=3, name="Newer")

    def kept() -> tuple[int, str]:
        (site,) = fleet_of(local)["sites"]
        return site["report"]["outbox_items"], site["name"]

    assert check_in(local, token, first.as_document()).status_code == 200
    assert kept() == (1, "First")
    # Delayed on the way: older than what central has, so taken (200) and not kept.
    answer = check_in(local, token, late.as_document())
    assert answer.status_code == 200
    assert kept() == (1, "First")
    # It was heard from, though.
    assert rows(target, "SELECT last_seen_ms FROM sites") == [(answer.json()["received_ms"],)]
    assert check_in(local, token, newer.as_document()).status_code == 200
    assert kept() == (3, "Newer")
    assert count(target, "check_ins") == 1


def _metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_need_the_admin_token_unless_open(local: httpx.Client, store: CentralStore) -> None:
    tokens = {site: add_site(store, site) for site in ("a", "b", "c")}
    assert (
        check_in(local, tokens["a"], report("a", outbox_items=7).as_document()).status_code == 200
    )
    waiting = report("b", dead_letters_last_hour=12, outbox_items=40)
    waiting = dataclasses.replace(waiting, outbox_oldest_ms=waiting.sent_ms - 90_000)
    assert check_in(local, tokens["b"], waiting.as_document()).status_code == 200

    assert local.get("/metrics").status_code == 401
    assert (
        local.get("/metrics", headers={"Authorization": f"Bearer {tokens['a']}"}).status_code == 401
    )
    answer = local.get("/metrics", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    assert answer.headers["cache-control"] == "no-store"
    found = _metrics(answer.text)
    assert found[("edge_collector_sites", (("state", "healthy"),))] == 1
    assert found[("edge_collector_sites", (("state", "degraded"),))] == 1
    assert found[("edge_collector_sites", (("state", "silent"),))] == 1
    assert found[("edge_collector_outbox_items_max", ())] == 40
    assert found[("edge_collector_outbox_oldest_seconds_max", ())] == 90
    assert found[("edge_collector_dead_letters_last_hour_sum", ())] == 12
    assert found[("edge_collector_check_in_age_seconds_max", ())] < 60
    assert ("edge_collector_build_info", (("version", _version()),)) in found
    # No series per site: a fleet of thousands is still a few series.
    assert not any(dict(labels).get("site") for _, labels in found)

    fleet.configure(local_app(local), fleet.Options(metrics_open=True))
    assert local.get("/metrics").status_code == 200


def _version() -> str:
    from edge_agent import __version__

    return __version__


def test_the_fleet_command_prints_a_table_worst_first(
    store: CentralStore, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    add_site(store, "never")
    add_site(store, "fine")
    add_site(store, "full")
    store.record_check_in("fine", report("fine"), now_ms())
    store.record_check_in("full", report("full", disk_free_share=0.01, models={}), now_ms())

    assert collector_main(["fleet", "--db", target]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SITE", "NAME", "HEALTH", "CHECK-IN", "REASON"]
    assert [line.split()[0] for line in lines[1:]] == ["never", "full", "fine"]
    assert "silent" in lines[1]
    assert "never heard from" in lines[1]
    assert "Store full" in lines[2]
    assert "disk 99% full" in lines[2]
    assert "(+1 more)" in lines[2]
    assert " s ago" in lines[3]

    assert collector_main(["fleet", "--db", target, "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["counts"] == {"healthy": 1, "degraded": 1, "silent": 1}
    time.sleep(0.01)  # past the bound below on central's clock
    quick = ["fleet", "--db", target, "--silent-after-s", "0.001", "--format", "json"]
    assert collector_main(quick) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["silent"] == 3


def test_an_agents_check_in_reaches_a_real_collector(
    store: CentralStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    token = add_site(store, SITE, "venue-1")
    with Server(create_app(store, ADMIN_TOKEN)) as server:
        config = tmp_path / "agent.toml"
        config.write_text(
            f'[site]\nid = "{SITE}"\nvenue = "venue-1"\nname = "Test store"\n'
            f'data_dir = "{tmp_path / "data"}"\ncurrency = "EUR"\n'
            f'[sync]\nurl = "{server.url}"\ntoken = "{token}"\n'
        )
        settings = load_settings(config, environ={})
        Store.open(settings.database).close()  # the agent made its database at start-up
        started = now_ms()
        check_ins = CheckIns(settings, started)

        assert check_ins.check_in(now_ms()) is None
        assert check_ins.failing_since_ms is None
        # Central's Date header measured the clocks: the next report says how far apart.
        assert check_ins.clock_offset_s is not None
        assert abs(check_ins.clock_offset_s) < 5

        with httpx.Client(base_url=server.url, timeout=30) as admin:
            (site,) = fleet_of(admin)["sites"]
        assert site["site"] == SITE
        assert site["name"] == "Test store"
        assert site["report"]["currency"] == "EUR"
        assert site["report"]["timezone"] == "UTC"
        # A fresh site: no model yet, the broker not seen, no sync yet (but it just started).
        assert site["health"] == "degraded"
        assert site["reasons"] == [NO_MODEL]

        # A wrong token: the check-in fails, saying why, logged once for the outage; once
        # the token is right again the next check-in goes through and says so.
        wrong = dataclasses.replace(
            settings,
            sync=dataclasses.replace(settings.sync, token=Secret("not-the-token")),
        )
        failing = CheckIns(wrong, started)
        with caplog.at_level(logging.INFO, logger="edge_agent.app.checkin"):
            problems = [failing.check_in(now_ms()) for _ in range(2)]
            failing.settings = settings
            assert failing.check_in(now_ms()) is None
        assert all(p is not None and "token" in p for p in problems), problems
        assert failing.failing_since_ms is None
        said = [getattr(r, "event", "") for r in caplog.records]
        assert said == ["check_in_failed", "check_in_resumed"]


def test_a_site_names_the_top_products_central_asks_for(
    store: CentralStore, tmp_path: Path
) -> None:
    token = add_site(store, SITE, "venue-1")
    with store.write() as tx:
        # As the rollup marks them: products a rolled-up day lists among its top ones.
        products.seen(tx, SITE, ["tea", "ghost"], now_ms())
    with Server(create_app(store, ADMIN_TOKEN)) as server:
        config = tmp_path / "agent.toml"
        config.write_text(
            f'[site]\nid = "{SITE}"\nvenue = "venue-1"\ndata_dir = "{tmp_path / "data"}"\n'
            f'[sync]\nurl = "{server.url}"\ntoken = "{token}"\n'
        )
        settings = load_settings(config, environ={})
        with Store.open(settings.database) as agent_store:
            agent_store.catalogue.imported(
                [Entry("tea", name="Jasmine tea 50 g"), Entry("cake", name="Carrot cake")],
                now_ms(),
            )
        check_ins = CheckIns(settings, now_ms())
        # The first check-in carries no names: central's answer asks for two.
        assert check_ins.report(now_ms()).products == {}
        assert check_ins.check_in(now_ms()) is None
        # The next one names what the catalogue knows ("" for what it does not).
        assert check_ins.report(now_ms()).products == {"tea": "Jasmine tea 50 g", "ghost": ""}
        assert check_ins.check_in(now_ms()) is None
        assert store.product_names([SITE], {"tea", "ghost", "cake"}) == {"tea": "Jasmine tea 50 g"}
        # Named, they are not asked again; nor is a name central never asked for kept.
        assert check_ins.report(now_ms()).products == {}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            forced = report(SITE, timezone="UTC", products={"cake": "<b>cake</b>"})
            answer = check_in(client, token, forced.as_document())
        assert answer.status_code == 200, answer.text
        assert answer.json()["products_wanted"] == []
        assert store.product_names([SITE], {"cake"}) == {}


@pytest.mark.parametrize(
    ("products", "problem"),
    [
        ({str(i): "x" for i in range(51)}, "products"),
        ({"tea": "x" * 201}, "products"),
        ({"": "x"}, "products"),
        ({"tea": 5}, "products"),
    ],
)
def test_product_names_beyond_the_bounds_are_refused(
    local: httpx.Client, store: CentralStore, products: object, problem: str
) -> None:
    token = add_site(store, "s1")
    body = {**report("s1").as_document(), "products": products}
    answer = check_in(local, token, body)
    assert answer.status_code == 422, answer.text
    assert problem in answer.text
