"""Differential privacy for released insight figures: OpenDP's Laplace mechanism and a daily
epsilon budget.

Sensitivities (how much one person can change a figure in one cell), by design of the metrics:
a visit adds at most 1 to ``visits``/``visitors``/``orders`` (one checkout per visit) and to
``nps_answers``; a passage through a door adds 1 to footfall; an order adds at most
``REVENUE_BOUND`` to ``revenue``, larger totals are clamped first. Each released cell spends
``epsilon_per_cell``, split evenly over the noised figures (sequential composition).
Noise is drawn by OpenDP's own secure sampler: no hand-written mechanism.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from edge_agent.core.aggregate import REVENUE_BOUND
from edge_agent.core.localtime import day_of

#: Figure name -> sensitivity (L1) of one person's contribution to it.
COUNTS: Mapping[str, int] = {
    "footfall_in": 1,
    "footfall_out": 1,
    "visits": 1,
    "visitors": 1,
    "orders": 1,
    "nps_answers": 1,
}
SUMS: Mapping[str, float] = {"revenue_clamped": REVENUE_BOUND}


def budget_day(at_ms: int, tz: ZoneInfo) -> str:
    """The site's day (YYYY-MM-DD, in its zone) whose epsilon budget a release of figures
    from ``at_ms`` spends."""
    return day_of(at_ms, tz).isoformat()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a release was refused."""

    reason: str


def charge(spent: float, cost: float, per_day: float, day: str) -> float | Refusal:
    """The day's spending after a release costing ``cost``, or why it cannot happen."""
    if cost <= 0:
        return spent
    if spent + cost > per_day + 1e-12:
        return Refusal(
            f"the differential-privacy budget of {day} is spent: {spent:g} of {per_day:g} "
            f"epsilon used, this release needs {cost:g}; the next day (site time) has its own"
        )
    return spent + cost


def noisy(figures: Mapping[str, object], epsilon: float) -> dict[str, object]:
    """The figures with Laplace noise on every count and sum, spending ``epsilon`` in all.

    Ratios derived from noised figures (conversion, means) are recomputed from them, so they
    spend nothing more; quantiles and top lists are left out of a noised release.
    """
    # Imported here: OpenDP is large, and the ingest path never needs it.
    import opendp.prelude as dp

    dp.enable_features("contrib")
    names = [n for n in (*COUNTS, *SUMS) if isinstance(figures.get(n), int | float)]
    share = epsilon / len(names)
    out: dict[str, object] = {
        k: v
        for k, v in figures.items()
        if k in ("start_ms", "hours", "suppressed", "reason", "currency") or k in names
    }
    for name in names:
        value = figures[name]
        if name in COUNTS:
            scale = COUNTS[name] / share
            mechanism = dp.m.make_laplace(
                dp.atom_domain(T=int), dp.absolute_distance(T=int), scale=scale
            )
            out[name] = max(0, int(mechanism(int(value))))  # type: ignore[call-overload]
        else:
            scale = SUMS[name] / share
            mechanism = dp.m.make_laplace(
                dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float), scale=scale
            )
            out[name] = max(0.0, round(float(mechanism(float(value))), 2))  # type: ignore[arg-type]
    visits = out.get("visits")
    orders = out.get("orders")
    footfall = out.get("footfall_in")
    if isinstance(visits, int) and isinstance(orders, int):
        out["visit_conversion"] = round(orders / visits, 4) if visits else None
    if isinstance(footfall, int) and isinstance(orders, int):
        out["conversion"] = round(orders / footfall, 4) if footfall else None
    if "revenue_clamped" in out:
        out["revenue"] = out.pop("revenue_clamped")
    out["epsilon"] = epsilon
    return out
