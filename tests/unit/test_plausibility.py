"""Plausibility bounds: figures a schema allows and no real site produces."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent import schemas
from edge_agent.core.events import Inbound, Limits, Reason, parse_payload
from edge_agent.core.plausibility import Plausibility
from edge_agent.core.topics import SiteId
from tests.helpers import SITE, encode, topic, track

SCHEMAS = schemas.load()
LIMITS = Limits(site=SiteId(SITE))
NOW_MS = 1_800_000_000_000


def _event(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {**track(name, properties, "till-1"), "timestamp": "2027-01-15T08:00:00.000Z"}


def _order(lines: list[tuple[float, int]], total: float, **extra: Any) -> dict[str, Any]:
    products = [
        {"product_id": f"p{n}", "price": p, "quantity": q} for n, (p, q) in enumerate(lines)
    ]
    return _event(
        "Order Completed",
        {"order_id": "o1", "total": total, "currency": "EUR", "products": products, **extra},
    )


def _reasons(payload: object, limits: Limits = LIMITS) -> list[Reason]:
    parsed = parse_payload(Inbound(topic("till-1"), encode(payload), NOW_MS), limits, SCHEMAS)
    return [r.reason for r in parsed.rejections]


def _door(count: int) -> dict[str, Any]:
    return _event("Door Counted", {"direction": "in", "count": count})


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_door(10_000), id="ten-thousand-through-one-door"),
        pytest.param([_door(100) for _ in range(21)], id="a-message-of-2100-people"),
        pytest.param(_order([(10.0, 100_000)] * 3, 3_000_000.0), id="100000-of-a-line"),
        pytest.param(_order([(1.0, 1)] * 201, 201.0), id="201-lines"),
        pytest.param(_order([(1.0, 900)] * 6, 5400.0), id="5400-units"),
        pytest.param(_order([(2.5, 4)] * 500, 0.0), id="500-lines-for-nothing"),
        pytest.param(_order([(12.0, 2)], 0.0), id="priced-lines-total-zero"),
        pytest.param(_order([(12.0, 2)], 250.0), id="total-over-ten-times-the-lines"),
        pytest.param(_order([(120.0, 2)], 20.0), id="total-under-a-tenth-of-the-lines"),
        pytest.param(_order([(600_000.0, 2)], 1_200_000.0), id="total-over-a-million"),
    ],
)
def test_implausible_figures_are_dead_letters(payload: object) -> None:
    assert set(_reasons(payload)) == {Reason.IMPLAUSIBLE}


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_door(100), id="a-hundred-at-once"),
        pytest.param([_door(99) for _ in range(20)], id="a-message-of-1980"),
        pytest.param(_order([(12.0, 2), (3.5, 1)], 27.5), id="lines-add-up"),
        pytest.param(_order([(12.0, 2)], 20.4, discount=4.8, tax=1.2), id="discount-and-tax"),
        pytest.param(_order([(12.0, 2)], 29.0), id="with-shipping"),
        pytest.param(_order([(10.0, 1)], 20.0), id="twice-the-lines"),
        pytest.param(
            _event(
                "Order Completed",
                {
                    "order_id": "o",
                    "total": 7.0,
                    "currency": "EUR",
                    "products": [{"product_id": "p", "quantity": 2}],
                },
            ),
            id="unpriced-lines-any-total",
        ),
    ],
)
def test_believable_figures_pass(payload: object) -> None:
    assert _reasons(payload) == []


def test_the_bounds_are_the_sites_to_set() -> None:
    wide = Limits(site=SiteId(SITE), plausibility=Plausibility(door_count_max=20_000))
    assert _reasons(_door(10_000), wide) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=50))
def test_no_message_adds_more_people_than_the_bounds_allow(counts: list[int]) -> None:
    payload = [_door(c) for c in counts]
    parsed = parse_payload(Inbound(topic("till-1"), encode(payload), NOW_MS), LIMITS, SCHEMAS)
    taken = sum(json.loads(e.body)["properties"]["count"] for e in parsed.events)
    assert taken <= LIMITS.plausibility.door_count_per_message_max
    assert all(json.loads(e.body)["properties"]["count"] <= 100 for e in parsed.events)
    # Nothing is dropped: each event is stored or refused with a reason.
    assert len(parsed.events) + len(parsed.rejections) in (len(counts), 1)
