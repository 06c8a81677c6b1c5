"""Insight cells equal a brute-force computation over the raw events, and merge correctly."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.aggregate import (
    DWELL_LOOKBACK_HOURS,
    HOUR_MS,
    Cell,
    Fact,
    compute_hour,
    for_central,
    from_document,
    merge,
    release,
    to_document,
)
from edge_agent.core.cellcheck import CellLimits, bounds_problem, figures_problem

START = 1_800_000_000_000 - 1_800_000_000_000 % HOUR_MS
VISITS = [f"v{i}" for i in range(12)]
ZONES = ["produce", "dairy", "bakery"]


@st.composite
def facts(draw: st.DrawFn, hours: int = 1) -> list[Fact]:
    out: list[Fact] = []
    for _ in range(draw(st.integers(0, 60))):
        ts = START + draw(st.integers(0, hours * HOUR_MS - 1))
        visit = draw(st.sampled_from(VISITS))
        person = draw(st.sampled_from([None, "p1", "p2"]))
        kind = draw(st.sampled_from(["door", "enter", "exit", "order", "nps", "zone-less"]))
        props: dict[str, Any]
        name: str
        if kind == "door":
            name, props = (
                "Door Counted",
                {
                    "direction": draw(st.sampled_from(["in", "out"])),
                    "count": draw(st.integers(1, 5)),
                },
            )
        elif kind in ("enter", "exit"):
            name = "Zone Entered" if kind == "enter" else "Zone Exited"
            props = {"zone": draw(st.sampled_from(ZONES))}
        elif kind == "order":
            lines = [
                {
                    "product_id": draw(st.sampled_from(["a", "b", "c"])),
                    "category": draw(st.sampled_from(["x", "y"])),
                    "quantity": draw(st.integers(1, 4)),
                }
                for _ in range(draw(st.integers(1, 3)))
            ]
            name, props = (
                "Order Completed",
                {"total": draw(st.integers(1, 500)) / 4, "products": lines},
            )
        elif kind == "nps":
            name, props = (
                "Feedback Submitted",
                {"nps": draw(st.integers(0, 10)), "ces": draw(st.integers(1, 5))},
            )
        else:
            name, props = "Product Viewed", {"product_id": "a"}
        out.append(Fact(ts, name, visit, person or visit, person is not None, props))
    return out


qualities = st.dictionaries(
    st.sampled_from(["duplicates", "dead_letter/bad_json", "dead_letter/clock_skew"]),
    st.integers(0, 50),
)


def assert_quality(cell: Cell, quality: list[dict[str, int]]) -> None:
    assert cell.duplicates == sum(q.get("duplicates", 0) for q in quality)
    for reason in ("bad_json", "clock_skew"):
        expected = sum(q.get(f"dead_letter/{reason}", 0) for q in quality)
        assert cell.dead_letters.get(reason, 0) == expected
    assert cell.figures()["dead_letters"] == sum(
        n for q in quality for kind, n in q.items() if kind.startswith("dead_letter/")
    )


def props(fact: Fact) -> dict[str, Any]:
    return dict(fact.properties)


def brute(all_facts: list[Fact]) -> dict[str, Any]:
    ordered = sorted(all_facts, key=lambda f: f.ts_ms)
    opened: dict[tuple[str, str], int] = {}
    last: dict[str, str] = {}
    dwell: dict[str, list[float]] = {}
    paths: Counter[str] = Counter()
    unmatched = 0
    for f in ordered:
        if f.name == "Zone Entered":
            zone = str(props(f)["zone"])
            if f.visit in last and last[str(f.visit)] != zone:
                paths[f"{last[str(f.visit)]}>{zone}"] += 1
            last[str(f.visit)] = zone
            opened[(str(f.visit), zone)] = f.ts_ms
        elif f.name == "Zone Exited":
            entered = opened.pop((str(f.visit), str(props(f)["zone"])), None)
            if entered is None:
                unmatched += 1
            else:
                dwell.setdefault(str(props(f)["zone"]), []).append((f.ts_ms - entered) / 1000)
    orders = [props(f) for f in all_facts if f.name == "Order Completed"]
    nps = [int(props(f)["nps"]) for f in all_facts if f.name == "Feedback Submitted"]
    products: Counter[str] = Counter()
    for o in orders:
        for line in o["products"]:
            products[line["product_id"]] += line["quantity"]
    return {
        "footfall_in": sum(
            int(props(f)["count"])
            for f in all_facts
            if f.name == "Door Counted" and props(f)["direction"] == "in"
        ),
        "footfall_out": sum(
            int(props(f)["count"])
            for f in all_facts
            if f.name == "Door Counted" and props(f)["direction"] == "out"
        ),
        "visits": len({f.visit for f in all_facts}),
        "visitors": len({f.visitor for f in all_facts}),
        "identified": len({f.visit for f in all_facts if f.identified}),
        "orders": len(orders),
        "revenue": sum(float(o["total"]) for o in orders),
        "items": sum(line["quantity"] for o in orders for line in o["products"]),
        "unmatched_exits": unmatched,
        "dwell": {zone: sorted(values) for zone, values in dwell.items()},
        "paths": dict(paths),
        "products": dict(products),
        "promoters": sum(n >= 9 for n in nps),
        "detractors": sum(n <= 6 for n in nps),
    }


def assert_matches(cell: Cell, expected: dict[str, Any]) -> None:
    for name in (
        "footfall_in",
        "footfall_out",
        "orders",
        "items",
        "unmatched_exits",
        "promoters",
        "detractors",
    ):
        assert getattr(cell, name) == expected[name], name
    assert math.isclose(cell.revenue, expected["revenue"], abs_tol=1e-6)
    # HLL in this range keeps exact coupons: the estimate is the count to within rounding.
    for sketch, key in (
        (cell.visits, "visits"),
        (cell.visitors, "visitors"),
        (cell.identified_visits, "identified"),
    ):
        assert sketch.get_lower_bound(3) <= expected[key] <= sketch.get_upper_bound(3), key
        assert round(sketch.get_estimate()) == expected[key], key
    assert set(cell.dwell) == set(expected["dwell"])
    for zone, values in expected["dwell"].items():
        sketch = cell.dwell[zone]
        assert sketch.n == len(values)
        # Fewer items than k: KLL holds them all, so quantiles are exact (inclusive rank).
        for rank in (0.5, 0.9):
            expected_value = values[max(0, math.ceil(rank * len(values)) - 1)]
            assert sketch.get_quantile(rank, True) == expected_value
    for item, weight in expected["paths"].items():
        assert cell.paths.get_estimate(item) == weight
    for item, weight in expected["products"].items():
        assert cell.products.get_estimate(item) == weight


@settings(max_examples=300, deadline=None)
@given(facts(), qualities)
def test_an_hour_equals_brute_force(hour: list[Fact], quality: dict[str, int]) -> None:
    cell = compute_hour(START, hour, quality=quality)
    assert_matches(cell, brute(hour))
    assert_quality(cell, [quality])


@settings(max_examples=300, deadline=None)
@given(facts(), st.integers(2, 4), st.randoms(use_true_random=False))
def test_agents_of_one_venue_merge_into_the_whole(hour: list[Fact], agents: int, rng: Any) -> None:
    # Each agent owns some devices; a visit's zone events stay on one agent (DESIGN.md).
    owner = {visit: rng.randrange(agents) for visit in VISITS}
    parts = [[f for f in hour if owner[str(f.visit)] == n] for n in range(agents)]
    merged = merge(compute_hour(START, part) for part in parts)
    assert_matches(merged, brute(hour))
    assert merged.start_ms == START
    assert merged.hours == 1


@settings(max_examples=200, deadline=None)
@given(facts(hours=3), st.lists(qualities, min_size=3, max_size=3))
def test_hours_roll_up_into_the_period(period: list[Fact], quality: list[dict[str, int]]) -> None:
    cells = []
    for h in range(3):
        start = START + h * HOUR_MS
        inside = [f for f in period if start <= f.ts_ms < start + HOUR_MS]
        before = [
            f for f in period if f.ts_ms < start and f.name in ("Zone Entered", "Zone Exited")
        ]
        cells.append(compute_hour(start, inside, before, quality=quality[h]))
    rolled = merge(cells)
    assert rolled.hours == 3
    assert_matches(rolled, brute(period))
    assert_quality(rolled, quality)
    assert from_document(to_document(rolled)).figures() == rolled.figures()
    direct = compute_hour(START, period, hours=3, quality=sum(map(Counter, quality), Counter()))
    assert rolled.figures() == direct.figures()


@settings(max_examples=100, deadline=None)
@given(facts())
def test_cells_survive_their_storage_form(hour: list[Fact]) -> None:
    cell = compute_hour(START, hour)
    assert from_document(to_document(cell)).figures() == cell.figures()


@settings(max_examples=200, deadline=None)
@given(facts(hours=3), st.integers(1, 8))
def test_no_released_figure_comes_from_fewer_than_k_visitors(period: list[Fact], k: int) -> None:
    cells = [
        compute_hour(START + h * HOUR_MS, [f for f in period if h == (f.ts_ms - START) // HOUR_MS])
        for h in range(3)
    ]
    released = release(cells, k)
    hours = released.hours
    assert isinstance(hours, list)
    assert len(hours) == 3  # suppressed hours are marked, never absent
    kept = [c for c in cells if c.visitors.get_estimate() >= k]
    for cell, shown in zip(cells, hours, strict=True):
        if cell.visitors.get_estimate() < k:
            assert shown == {
                "start_ms": cell.start_ms,
                "hours": 1,
                "suppressed": True,
                "reason": f"fewer than {k} distinct visitors",
            }
        else:
            for zone, dwell in cast("dict[str, dict[str, object]]", shown["dwell_s"]).items():
                assert ("suppressed" in dwell) == (cell.zone_visitors(zone) < k)
    # Differencing: the total minus the released hours leaves nothing of a suppressed hour.
    total = released.total
    if kept:
        assert isinstance(total, dict)
        for name in ("footfall_in", "footfall_out", "orders", "nps_answers"):
            assert total[name] == sum(getattr(c, name) for c in kept)
    else:
        assert total is None
    assert released.suppressed_hours == 3 - len(kept)
    # Occupancy: the running balance of the doors over the released hours, never negative.
    occupancy, peak = 0, None
    for cell, shown in zip(cells, hours, strict=True):
        if cell.visitors.get_estimate() >= k:
            occupancy = max(0, occupancy + cell.footfall_in - cell.footfall_out)
            peak = occupancy if peak is None else max(peak, occupancy)
            assert shown["occupancy"] == occupancy
    if isinstance(total, dict):
        assert (total["occupancy"], total["occupancy_peak"]) == (occupancy, peak)


@settings(max_examples=200, deadline=None)
@given(facts(hours=4), st.integers(1, 8), st.integers(0, 3))
def test_what_is_released_does_not_depend_on_suppressed_hours(
    period: list[Fact], k: int, first_asked: int
) -> None:
    """Whatever a suppressed hour held, every released figure is the same as if it held
    nothing: no combination of released figures (differencing included) can reveal it."""
    cells = [
        compute_hour(START + h * HOUR_MS, [f for f in period if h == (f.ts_ms - START) // HOUR_MS])
        for h in range(4)
    ]
    blanked = [c if c.visitors.get_estimate() >= k else Cell(c.start_ms) for c in cells]
    assert release(cells[first_asked:], k, earlier=cells[:first_asked]) == release(
        blanked[first_asked:], k, earlier=blanked[:first_asked]
    )


@given(facts(hours=DWELL_LOOKBACK_HOURS + 1), qualities, st.integers(1, 8))
def test_every_cell_a_site_computes_passes_centrals_checks(
    period: list[Fact], quality: dict[str, int], k: int
) -> None:
    # Central refuses what a site could not have computed: nothing a site computes, with the
    # dwell of visits that began in the earlier hours, may be refused.
    last = START + DWELL_LOOKBACK_HOURS * HOUR_MS
    earlier = [f for f in period if f.ts_ms < last and f.name in ("Zone Entered", "Zone Exited")]
    cell = compute_hour(last, [f for f in period if f.ts_ms >= last], earlier, quality=quality)
    document = for_central(cell, k)
    if document.get("suppressed"):
        return
    assert bounds_problem(document, CellLimits()) is None
    assert figures_problem(from_document(document), CellLimits()) is None
