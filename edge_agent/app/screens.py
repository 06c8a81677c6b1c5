"""What a staff screen shows, as plain JSON-ready dicts: the visitor in front of its device with
their lists, and the site's figures today.

Nothing here identifies anyone: no id, pseudonym, e-mail or phone; a first name only when the
person granted personalization and gave one. Site figures are released like any insight (hours
seen by fewer than ``k`` distinct visitors are suppressed, and said to be).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from edge_agent.app import schedule as jobs
from edge_agent.core.aggregate import HOUR_MS, from_document, hour_of, release
from edge_agent.serving.recommend import Recommender, in_front
from edge_agent.store.database import Store
from edge_agent.store.screens import Screen

DAY_MS = 24 * HOUR_MS
#: The hourly figures a screen charts, and the day's totals it shows.
_HOURLY = ("footfall_in", "occupancy", "orders", "conversion")
_TOTALS = (
    "footfall_in",
    "footfall_out",
    "visits",
    "occupancy",
    "occupancy_peak",
    "orders",
    "revenue",
    "conversion",
    "nps",
    "nps_answers",
)


def _named(item: str, names: Mapping[str, str]) -> dict[str, str]:
    return {"item": item, "name": names.get(item, "")}


def visitor(
    recommender: Recommender,
    screen: Screen,
    k: int,
    stocked: Mapping[str, str],
    now_ms: int,
) -> dict[str, object]:
    """The visitor at ``screen``'s device (or in its zone) and up to ``k`` picks per list, among the
    ``stocked`` items (item -> name), each with its name and reason.

    Raises:
        StorageError: the database or a serving model cannot be read.
    """
    front = in_front(recommender.store, screen.kind, screen.device, now_ms)
    lists = recommender.recommend(front.person, front.basket, k, frozenset(stocked))
    names = {**stocked, **{item: name for item, name in front.names.items() if name}}
    return {
        "screen": {
            "id": screen.id,
            "kind": screen.kind,
            "device": screen.device,
            "place": screen.place,
            "label": screen.label,
        },
        "visitor": {
            "present": front.present,
            "first_name": recommender.first_name(front.person) if front.person else None,
        },
        "basket": [_named(item, names) for item in front.basket],
        "lists": {
            source: [{**_named(p.item, names), "reason": p.reason} for p in picks]
            for source, picks in lists.items()
        },
    }


def site_today(store: Store, k: int, stocked: Mapping[str, str], now_ms: int) -> dict[str, object]:
    """Today's (UTC) figures: the closed hours as the insights job stored them, and the hour
    under way computed from its events so far.

    Raises:
        StorageError: the database cannot be read.
    """
    day = now_ms - now_ms % DAY_MS
    current = hour_of(now_ms)
    cells = [from_document(d) for d in store.insights.cells(day, current)]
    cells.append(jobs.hour_cell(store, current)[0])
    released = release(cells, k)
    hours = [
        {
            "start_ms": h["start_ms"],
            "suppressed": bool(h.get("suppressed")),
            **{name: h.get(name) for name in _HOURLY},
        }
        for h in cast("list[dict[str, object]]", released["hours"])
    ]
    total = released["total"]
    figures: dict[str, object] | None = None
    if isinstance(total, dict):
        figures = {name: total.get(name) for name in _TOTALS}
        figures["top_products"] = [
            {**_named(str(item), stocked), "count": count}
            for item, count in cast("list[tuple[str, int]]", total.get("top_products", []))
        ]
    return {
        "day_start_ms": day,
        "open_hour_ms": current,
        "k": k,
        "hours": hours,
        "total": figures,
        "suppressed_hours": released["suppressed_hours"],
    }
