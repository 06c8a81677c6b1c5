"""Money in different currencies is never added together: not in an hour, not when hours or
sites merge; a configured rate converts, anything else is counted apart, per currency."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.core.aggregate import (
    HOUR_MS,
    Cell,
    Fact,
    compute_hour,
    from_document,
    merge,
    to_document,
)
from edge_agent.core.cellcheck import CellLimits, figures_problem
from edge_agent.core.money import Money

START = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS
CODES = ["TWD", "EUR", "USD"]
RATES = {"EUR": 34.5}


@st.composite
def orders(draw: st.DrawFn, hours: int = 1) -> list[Fact]:
    return [
        Fact(
            START + draw(st.integers(0, hours * HOUR_MS - 1)),
            "Order Completed",
            f"v{n}",
            None,
            False,
            {
                "total": draw(st.integers(1, 4000)) / 4,
                "currency": draw(st.sampled_from(CODES)),
                "products": [{"product_id": "a", "quantity": 1}],
            },
        )
        for n in range(draw(st.integers(0, 30)))
    ]


moneys = st.sampled_from([Money(), Money("TWD"), Money("TWD", RATES), Money("EUR")])


Sums = defaultdict[str, float]


def _held(cell: Cell) -> Sums:
    """How much money of each currency a cell holds, its revenue included."""
    held: Sums = defaultdict(float, cell.other_revenue)
    held[cell.currency] += cell.revenue
    return held


def _close(a: Sums, b: Sums) -> bool:
    return all(math.isclose(a[c], b[c], abs_tol=1e-6) for c in set(a) | set(b) if c)


@given(orders(), moneys)
def test_an_hour_adds_up_each_currency_apart(hour: list[Fact], money: Money) -> None:
    cell = compute_hour(START, hour, money=money)
    ordered = sorted(hour, key=lambda f: f.ts_ms)
    currency = money.currency or (str(ordered[0].properties["currency"]) if ordered else "")
    assert cell.currency == currency
    expected: Sums = defaultdict(float)
    unpriced = 0
    for fact in hour:
        code, total = str(fact.properties["currency"]), float(fact.properties["total"])  # type: ignore[arg-type]
        if code == currency:
            expected[code] += total
        elif code in money.rates and money.currency:
            expected[currency] += total * money.rates[code]
        else:
            expected[code] += total
            unpriced += 1
    assert _close(_held(cell), expected)
    assert cell.unpriced_orders == unpriced
    assert cell.orders == len(hour)
    assert currency not in cell.other_revenue
    assert figures_problem(cell, CellLimits()) is None
    # What leaves the site and what central reads back keep the currencies apart too.
    back = from_document(to_document(cell))
    assert back.currency == cell.currency
    assert back.other_revenue == cell.other_revenue


@given(st.lists(st.tuples(orders(), moneys), min_size=1, max_size=4))
def test_merging_cells_moves_money_between_currencies_never(
    cells: list[tuple[list[Fact], Money]],
) -> None:
    parts = [compute_hour(START, hour, money=money) for hour, money in cells]
    merged = merge(parts)
    held: Sums = defaultdict(float)
    for part in parts:
        for code, amount in _held(part).items():
            held[code] += amount
    assert _close(_held(merged), held)
    priced = Counter({p.currency: 0 for p in parts if p.currency})
    for p in parts:
        if p.currency:
            priced[p.currency] += p.orders - p.unpriced_orders
    if priced:
        assert priced[merged.currency] == max(priced.values())
    assert merged.orders == sum(p.orders for p in parts)
    assert merged.unpriced_orders <= merged.orders
    assert merged.basket_value.n == merged.orders - merged.unpriced_orders


def test_a_site_in_one_currency_with_a_till_in_another() -> None:
    till = [
        Fact(START + n, "Order Completed", f"v{n}", None, False, p)
        for n, p in enumerate(
            [
                {"total": 100.0, "currency": "TWD", "products": []},
                {"total": 10.0, "currency": "EUR", "products": []},
                {"total": 5.0, "currency": "USD", "products": []},
            ]
        )
    ]
    plain = compute_hour(START, till, money=Money("TWD")).figures()
    assert (plain["revenue"], plain["currency"], plain["unpriced_orders"]) == (100.0, "TWD", 2)
    assert plain["other_revenue"] == {"EUR": 10.0, "USD": 5.0}
    assert plain["basket_value_mean"] == 100.0
    converted = compute_hour(START, till, money=Money("TWD", RATES)).figures()
    assert converted["revenue"] == 445.0
    assert converted["other_revenue"] == {"USD": 5.0}
