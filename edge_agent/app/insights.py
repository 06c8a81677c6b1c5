"""Insights: the hour cells computed from stored events, and a day's release (k-suppressed,
optionally with differential-privacy noise)."""

from __future__ import annotations

from datetime import date

from edge_agent.app.clock import now_ms
from edge_agent.app.site import existing_store
from edge_agent.config import Settings
from edge_agent.core.aggregate import (
    DWELL_LOOKBACK_HOURS,
    HOUR_MS,
    Cell,
    Release,
    compute_hour,
    for_central,
    from_document,
    hour_of,
    release,
    to_document,
)
from edge_agent.core.localtime import day_hours, hour_of_day, zone
from edge_agent.core.money import Money
from edge_agent.core.noise import Refusal, budget_day, noisy
from edge_agent.errors import BudgetSpent
from edge_agent.store.database import Store


def compute_due(settings: Settings, now_ms: int) -> int:
    """Compute the closed hours that have new events, on a connection of its own (what the
    scheduler runs every ``[insights] every_s``); returns how many were computed.

    Raises:
        StorageError: the database cannot be opened, read or written.
    """
    with Store.open(settings.database, settings.store.synchronous) as store:
        return compute_insights(store, settings, now_ms)


def compute_insights(store: Store, settings: Settings, now_ms: int) -> int:
    """Compute the cells of closed hours that have new events; returns how many were computed.

    An hour is recomputed from its stored events (ingest marks the hours an event can change:
    its own, and for zone events the next ones), so a late event's cost is bounded by those
    hours, not the history.

    Raises:
        StorageError: the database cannot be read or written.
    """
    current = hour_of(now_ms)
    computed = 0
    for hour, marked in store.insights.dirty_hours(current):
        cell, events = hour_cell(store, hour, settings.site.money)
        outgoing = for_central(cell, settings.insights.k) if settings.sync.url else None
        store.insights.save_cell(to_document(cell), events, marked, now_ms, outgoing)
        computed += 1
    return computed


def hour_cell(store: Store, hour: int, money: Money) -> tuple[Cell, int]:
    """The cell of the hour starting at ``hour`` from the stored events, and how many there were.

    Raises:
        StorageError: the database cannot be read.
    """
    facts = store.events.facts(hour, hour + HOUR_MS)
    earlier = store.events.facts(hour - DWELL_LOOKBACK_HOURS * HOUR_MS, hour, zones_only=True)
    quality = store.insights.quality(hour)
    return compute_hour(hour, facts, earlier, quality=quality, money=money), len(facts)


def insights(
    settings: Settings, day: date, hour: int | None, k: int, private: bool = False
) -> dict[str, object]:
    """The released insights of one of the site's days (``[site] timezone``: 23, 24 or 25
    hours), or of its hour(s) starting at local ``hour`` o'clock (two on the night the
    clocks go back, none on the one they go forward): computes closed hours that have new
    events first, and adds the current hour, marked open, when asked for.

    With ``private``, every released cell gets Laplace noise (OpenDP) and costs
    ``[insights] epsilon_per_cell`` from the day's ``epsilon_per_day``, kept in a ledger.

    Raises:
        StorageError: there is no database, or it cannot be read or written.
        BudgetSpent: the day's epsilon budget cannot pay for this release.
    """
    tz = zone(settings.site.timezone)
    slots = day_hours(day, tz)
    wanted = [s for s in slots if hour is None or hour_of_day(s, tz) == hour]
    store, _ = existing_store(settings)
    now = now_ms()
    with store:
        compute_insights(store, settings, now)
        cells = [from_document(d) for d in store.insights.cells(slots[0], slots[-1] + HOUR_MS)]
        current = hour_of(now)
        open_hour = current in wanted
        if open_hour:
            cells.append(hour_cell(store, current, settings.site.money)[0])
        # The day's earlier hours only set where occupancy starts.
        start = wanted[0] if wanted else slots[-1] + HOUR_MS
        released = release(
            [c for c in cells if c.start_ms in wanted],
            k,
            earlier=[c for c in cells if c.start_ms < start],
        )
        document = released.document()
        document["open_hour_ms"] = current if open_hour else None
        if private:
            _add_noise(store, settings, released, document, slots[0], now)
    return document


def _add_noise(
    store: Store,
    settings: Settings,
    released: Release,
    document: dict[str, object],
    day_start_ms: int,
    now: int,
) -> None:
    eps = settings.insights.epsilon_per_cell
    hours, total = released.hours, released.total
    shown = [h for h in hours if not h.get("suppressed")] + ([total] if total else [])
    day = budget_day(day_start_ms, zone(settings.site.timezone))
    spent = store.insights.spend_epsilon(
        day, eps * len(shown), settings.insights.epsilon_per_day, "insights release", now
    )
    if isinstance(spent, Refusal):
        raise BudgetSpent(spent.reason)
    document["hours"] = [h if h.get("suppressed") else noisy(h, eps) for h in hours]
    document["total"] = noisy(total, eps) if total else None
    document["epsilon_spent_today"] = spent
