"""The simulated demo site's stream: deterministic, valid, realistic, selling real baskets."""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter, defaultdict
from itertools import islice, pairwise
from typing import Any, cast

import pytest

from edge_agent import schemas
from edge_agent.core.events import Inbound, Limits, Schemas, parse_payload
from edge_agent.core.topics import SiteId, parse_topic
from edge_agent.demo.catalogue import Catalogue, load_sales
from edge_agent.demo.simulate import (
    EVENTS_PER_VISIT,
    ZONES,
    Publication,
    SimulatorOptions,
    iso_timestamp,
    site_stream,
)
from edge_agent.errors import ConfigError

SITE = "demo-site"
START_MS = 1_764_150_000_000  # 2025-11-26T09:40:00Z
VENUE_EVENTS = {"Ticket Scanned", "Badge Scanned"}

Event = dict[str, Any]


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_sales()


@pytest.fixture(scope="module")
def compiled() -> Schemas:
    return schemas.load()


def stream(catalogue: Catalogue, seed: int, count: int, **kwargs: Any) -> list[Publication]:
    return list(
        islice(site_stream(random.Random(seed), START_MS, SITE, catalogue, **kwargs), count)
    )


@pytest.fixture(scope="module")
def long_stream(catalogue: Catalogue) -> list[Publication]:
    return stream(catalogue, seed=7, count=40_000)


def event(publication: Publication) -> Event:
    return cast(Event, publication.payload)


def name(publication: Publication) -> str:
    return str(publication.payload.get("event", publication.payload["type"]))


def test_same_seed_same_stream_other_seed_other_stream(catalogue: Catalogue) -> None:
    first = stream(catalogue, seed=42, count=2000)
    assert stream(catalogue, seed=42, count=2000) == first
    assert stream(catalogue, seed=43, count=2000) != first


def test_5000_publications_all_pass_the_inbound_checks(
    catalogue: Catalogue, compiled: Schemas
) -> None:
    limits = Limits(site=SiteId(SITE))
    for publication in stream(catalogue, seed=1, count=5000):
        inbound = Inbound(
            publication.topic, json.dumps(publication.payload).encode(), publication.at_ms
        )
        parsed = parse_payload(inbound, limits, compiled)
        assert parsed.rejections == ()
        assert len(parsed.events) == 1


def test_events_come_in_time_order_stamped_with_their_time(
    long_stream: list[Publication],
) -> None:
    assert long_stream[0].at_ms == START_MS
    assert all(a.at_ms <= b.at_ms for a, b in pairwise(long_stream))
    assert all(event(p)["timestamp"] == iso_timestamp(p.at_ms) for p in long_stream)


def test_message_ids_are_unique_uuid4(long_stream: list[Publication]) -> None:
    ids = [event(p)["messageId"] for p in long_stream]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 36 and i[14] == "4" for i in ids)


def test_each_device_publishes_under_its_own_topic(long_stream: list[Publication]) -> None:
    devices = set()
    for publication in long_stream:
        where = parse_topic(publication.topic)
        assert where.site == SITE
        assert event(publication)["context"] == {"device": {"id": where.device}}
        devices.add(where.device)
    expected = {"door-1", "kiosk-1", "loyalty-1", "till-1", "till-2"}
    assert devices == expected | {f"zone-{zone}" for zone in ZONES}


def test_every_in_store_event_name_appears(
    long_stream: list[Publication], compiled: Schemas
) -> None:
    wanted = set(compiled.events) - VENUE_EVENTS | {"identify"}
    assert wanted <= {name(p) for p in long_stream}


def test_every_order_sells_a_real_basket(
    long_stream: list[Publication], catalogue: Catalogue
) -> None:
    real = {
        (tuple((line.product.product_id, line.quantity) for line in basket.lines), basket.total)
        for basket in catalogue.baskets
    }
    orders = [event(p)["properties"] for p in long_stream if name(p) == "Order Completed"]
    assert len(orders) > 800
    for order in orders:
        sold = tuple((item["product_id"], item["quantity"]) for item in order["products"])
        assert (sold, order["total"]) in real
        assert order["currency"] == "GBP"
        fields = {"product_id", "sku", "name", "price", "quantity"}
        assert all(set(item) == fields for item in order["products"])


def test_till_scans_add_up_to_the_order(long_stream: list[Publication]) -> None:
    carts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for publication in long_stream:
        properties = event(publication).get("properties", {})
        if name(publication) == "Product Added":
            carts[properties["cart_id"]][properties["product_id"]] += properties["quantity"]
        elif name(publication) == "Product Removed":
            carts[properties["cart_id"]][properties["product_id"]] -= properties["quantity"]
        elif name(publication) == "Order Completed":
            scanned = +carts.pop(properties["cart_id"])
            # A receipt may hold the same product on two lines.
            lines: Counter[str] = Counter()
            for item in properties["products"]:
                lines[item["product_id"]] += item["quantity"]
            assert scanned == lines


def test_zone_visits_enter_before_they_exit_with_realistic_dwell(
    long_stream: list[Publication],
) -> None:
    inside: dict[tuple[str, str], int] = {}
    dwell: defaultdict[str, list[float]] = defaultdict(list)
    for publication in long_stream:
        if name(publication) in ("Zone Entered", "Zone Exited"):
            key = (event(publication)["anonymousId"], event(publication)["properties"]["zone"])
            if name(publication) == "Zone Entered":
                assert key not in inside
                inside[key] = publication.at_ms
            else:
                dwell[key[1]].append((publication.at_ms - inside.pop(key)) / 1000)
    assert set(dwell) == set(ZONES)
    assert 3 < statistics.median(dwell["entrance"]) < 20
    for zone in ("homeware", "lighting", "kitchen", "gifts", "checkout"):
        assert 30 < statistics.median(dwell[zone]) < 300


def test_door_counts_people_in_and_out_without_an_id(long_stream: list[Publication]) -> None:
    doors = [event(p) for p in long_stream if name(p) == "Door Counted"]
    assert all("anonymousId" not in door and "userId" not in door for door in doors)
    ins = sum(d["properties"]["count"] for d in doors if d["properties"]["direction"] == "in")
    outs = sum(d["properties"]["count"] for d in doors if d["properties"]["direction"] == "out")
    assert 0 < ins - outs < ins * 0.05


def test_loyalty_check_ins_link_a_visit_and_people_return(long_stream: list[Publication]) -> None:
    visits = {event(p)["anonymousId"] for p in long_stream if name(p) == "Zone Entered"}
    identifies = [event(p) for p in long_stream if name(p) == "identify"]
    assert all(i["anonymousId"] in visits for i in identifies)
    assert all(i["userId"].startswith("loyalty-") and i["traits"]["first_name"] for i in identifies)
    people = Counter(i["userId"] for i in identifies)
    assert people.most_common(1)[0][1] > 2


def test_receipts_are_sold_in_the_order_rung_up_and_known_customers_check_in(
    long_stream: list[Publication], catalogue: Catalogue
) -> None:
    orders = [event(p) for p in long_stream if name(p) == "Order Completed"]
    receipts = catalogue.baskets

    # Visits overlap, so orders complete a little out of sequence, but the first round sells
    # each receipt once before any is sold again.
    sold = Counter(
        tuple([i["product_id"] for i in o["properties"]["products"]])
        for o in orders[: len(receipts)]
    )
    real = Counter(tuple(line.product.product_id for line in b.lines) for b in receipts)
    assert sum((sold - real).values()) < 20
    # The loyalty app names the export's own customer, with the same first name every time.
    names: defaultdict[str, set[str]] = defaultdict(set)
    for p in long_stream:
        if name(p) == "identify":
            names[event(p)["userId"]].add(event(p)["traits"]["first_name"])
    known = {f"loyalty-{b.customer}" for b in receipts if b.customer is not None}
    assert set(names) <= known
    assert all(len(first) == 1 for first in names.values())


def test_history_replays_the_first_days_before_the_start_then_sells_the_rest(
    catalogue: Catalogue,
) -> None:
    publications = list(
        islice(site_stream(random.Random(5), START_MS, SITE, catalogue, history_days=3), 40_000)
    )
    replayed = [p for p in publications if p.replayed]
    live = publications[len(replayed) :]
    assert replayed
    assert not any(p.replayed for p in live)
    assert all(a.at_ms <= b.at_ms for a, b in pairwise(replayed))
    day_ms = 86_400_000
    today = START_MS - START_MS % day_ms
    assert today - 3 * day_ms <= replayed[0].at_ms
    assert replayed[-1].at_ms < today
    assert live[0].at_ms == START_MS
    orders = [
        event(p)["properties"]["products"] for p in publications if name(p) == "Order Completed"
    ]
    first_days = sorted({b.at.date() for b in catalogue.baskets})[:3]
    history = [b for b in catalogue.baskets if b.at.date() in first_days]
    replayed_orders = sum(1 for p in replayed if name(p) == "Order Completed")
    assert replayed_orders == len(history)
    # The first live order is the first receipt after the replayed days.
    after = catalogue.baskets[len(history)]
    assert [i["product_id"] for i in orders[replayed_orders]] == [
        line.product.product_id for line in after.lines
    ]
    with pytest.raises(ValueError, match="trading days"):
        next(site_stream(random.Random(5), START_MS, SITE, catalogue, history_days=4))


def test_consents_are_a_realistic_mix(long_stream: list[Publication]) -> None:
    answers = Counter(
        tuple(sorted(k for k, v in event(p)["properties"]["purposes"].items() if v))
        for p in long_stream
        if name(p) == "Consent Updated"
    )
    assert answers[("analytics", "crm_sync", "personalization")] > answers[("analytics",)] > 0
    assert answers[()] > 0
    assert all(
        event(p)["properties"]["source"] == "loyalty-app"
        for p in long_stream
        if name(p) in ("Consent Updated", "Erasure Requested")
    )


def test_feedback_skews_towards_promoters_and_low_effort(long_stream: list[Publication]) -> None:
    answers = [event(p)["properties"] for p in long_stream if name(p) == "Feedback Submitted"]
    nps = [a["nps"] for a in answers if "nps" in a]
    ces = [a["ces"] for a in answers if "ces" in a]
    assert sum(score >= 9 for score in nps) > sum(score <= 6 for score in nps) > 0
    assert statistics.mean(ces) < 3


def test_events_per_visit_constant_keeps_simulated_time_near_real_time(
    catalogue: Catalogue,
) -> None:
    rate = 20.0
    publications = stream(
        catalogue, seed=3, count=30_000, visits_per_hour=rate * 3600 / EVENTS_PER_VISIT
    )
    # Past the first visits' length the site is in steady state: visits start and end alike.
    steady = publications[5000:]
    span_s = (steady[-1].at_ms - steady[0].at_ms) / 1000
    assert len(steady) / span_s == pytest.approx(rate, rel=0.1)


@pytest.mark.parametrize(
    ("site", "kwargs"),
    [
        pytest.param("a/b", {}, id="slash-in-site"),
        pytest.param("", {}, id="empty-site"),
        pytest.param(SITE, {"visits_per_hour": 0.0}, id="zero-rate"),
    ],
)
def test_bad_stream_arguments_raise(
    catalogue: Catalogue, site: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match=r"site|visits_per_hour"):
        next(site_stream(random.Random(0), START_MS, site, catalogue, **kwargs))


def test_iso_timestamp_is_utc_with_milliseconds() -> None:
    assert iso_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert iso_timestamp(START_MS + 123) == "2025-11-26T09:40:00.123Z"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"port": 0}, "port must be 1-65535", id="port"),
        pytest.param({"rate": 0.0}, "rate must be a positive", id="rate"),
        pytest.param({"rate": float("nan")}, "rate must be a positive", id="rate-nan"),
        pytest.param({"duration": -1.0}, "duration must be 0", id="duration"),
        pytest.param({"site": "a+b"}, "site 'a\\+b' cannot be used", id="site"),
        pytest.param({"history_days": 4}, "history must be 0-3 days", id="history"),
    ],
)
def test_simulator_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SimulatorOptions(**options)


def test_simulator_options_hide_the_password() -> None:
    options = SimulatorOptions(username="sim", password="s3cret")  # noqa: S106 (a test value)
    assert "s3cret" not in repr(options)
