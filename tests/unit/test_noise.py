"""The epsilon budget and the noised figures."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_agent.core.noise import COUNTS, Refusal, charge, noisy


@given(st.lists(st.floats(0.01, 0.5), max_size=50), st.floats(0.1, 3.0))
def test_the_daily_budget_is_never_exceeded(costs: list[float], per_day: float) -> None:
    spent = 0.0
    for cost in costs:
        after = charge(spent, cost, per_day, "2026-11-26")
        if isinstance(after, Refusal):
            assert spent + cost > per_day
            assert "2026-11-26" in after.reason
        else:
            spent = after
        assert spent <= per_day + 1e-9


def test_noised_figures_are_counts_and_keep_their_shape() -> None:
    figures = {
        "start_ms": 0,
        "hours": 1,
        "footfall_in": 40,
        "footfall_out": 38,
        "visits": 30,
        "visitors": 29,
        "orders": 6,
        "nps_answers": 4,
        "revenue": 600.0,
        "revenue_clamped": 600.0,
        "top_products": [("a", 3)],
        "basket_value_median": 100.0,
    }
    out = noisy(figures, 1.0)
    assert out["epsilon"] == 1.0
    for name in ("footfall_in", "footfall_out", "visits", "visitors", "orders", "nps_answers"):
        value = out[name]
        assert isinstance(value, int)
        assert value >= 0
    assert isinstance(out["revenue"], float)
    assert "top_products" not in out  # not noised, so not released under DP
    assert "basket_value_median" not in out
    visits, orders = out["visits"], out["orders"]
    assert isinstance(visits, int)
    assert isinstance(orders, int)
    assert out["visit_conversion"] == (round(orders / visits, 4) if visits else None)
    footfall = out["footfall_in"]
    assert isinstance(footfall, int)
    assert out["conversion"] == (round(orders / footfall, 4) if footfall else None)


@settings(max_examples=50, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "start_ms": st.just(0),
            "hours": st.just(1),
            **{name: st.integers(0, 10**6) for name in COUNTS},
            "revenue_clamped": st.integers(0, 4 * 10**6).map(lambda quarters: quarters / 4),
        }
    )
)
def test_as_the_noise_vanishes_the_figures_are_exact(figures: dict[str, object]) -> None:
    """The mechanism is centred on the true figure: calibrated, not biased."""
    out = noisy(figures, 1e12)
    for name in COUNTS:
        assert out[name] == figures[name]
    assert out["revenue"] == figures["revenue_clamped"]
