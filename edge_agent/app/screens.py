"""The staff screens' use cases: registering, listing and revoking screens, and what a screen
shows, as plain JSON-ready dicts: the visitor in front of its device with their lists, and the
site's figures today.

Nothing here identifies anyone: no id, pseudonym, e-mail or phone; a first name only when the
person granted personalization and gave one. Site figures are released like any insight (hours
seen by fewer than ``k`` distinct visitors are suppressed, and said to be).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from edge_agent.app.clock import now_ms
from edge_agent.app.insights import hour_cell
from edge_agent.config import Settings
from edge_agent.core.aggregate import from_document, hour_of, release
from edge_agent.core.catalogue import names_of, shown_name
from edge_agent.core.identity import pseudonym
from edge_agent.core.localtime import day_bounds, day_hours, day_of, zone
from edge_agent.core.money import UNSAID, Money
from edge_agent.core.recommend import Pick, why_missing
from edge_agent.ops import keyfile
from edge_agent.serving.recommend import Recommender, in_front
from edge_agent.store.database import Store
from edge_agent.store.screens import PAIRING_TTL_MS, Kind, Screen, Screens

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
    "currency",
    "other_revenue",
    "conversion",
    "nps",
    "nps_answers",
)


def _named(item: str, names: Mapping[str, str]) -> dict[str, str]:
    return {"item": item, "name": shown_name(item, names.get(item))}


def visitor(
    recommender: Recommender,
    screen: Screen,
    k: int,
    stocked: Mapping[str, str],
    catalogue: Mapping[str, str],
    now_ms: int,
) -> dict[str, object]:
    """The visitor at ``screen``'s device (or in its zone) and up to ``k`` picks per list, among the
    ``stocked`` items (item -> the tills' name), each with its name and reason: the
    ``catalogue``'s name, else the one the tills gave, else said to be missing.

    Raises:
        StorageError: the database or a serving model cannot be read.
    """
    front = in_front(recommender.store, screen.kind, screen.device, now_ms)
    # The catalogue's names are the site's word; the tills' name the rest.
    names = names_of(catalogue, stocked, front.names)
    available = frozenset(stocked)
    lists = recommender.recommend(front.person, front.basket, k, available, names)
    missing = (
        why_missing(recommender.situation(front.person, front.basket, available), lists)
        if front.present
        else {}
    )
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
        "missing": missing,
    }


def site_today(
    store: Store,
    k: int,
    names: Mapping[str, str],
    now_ms: int,
    timezone: str = "UTC",
    money: Money = UNSAID,
) -> dict[str, object]:
    """Today's figures, today being the site's (``timezone``): the closed hours as the
    insights job stored them, and the hour under way computed from its events so far
    (its revenue by ``money``'s rule, as the job's).

    Raises:
        StorageError: the database cannot be read.
    """
    tz = zone(timezone)
    today = day_of(now_ms, tz)
    slots = day_hours(today, tz)
    day, day_end = day_bounds(today, tz)
    current = hour_of(now_ms)
    cells = [from_document(d) for d in store.insights.cells(slots[0], current)]
    cells.append(hour_cell(store, current, money)[0])
    released = release(cells, k)
    hours = [
        {
            "start_ms": h["start_ms"],
            "suppressed": bool(h.get("suppressed")),
            **{name: h.get(name) for name in _HOURLY},
        }
        for h in released.hours
    ]
    total = released.total
    figures: dict[str, object] | None = None
    if total is not None:
        figures = {name: total.get(name) for name in _TOTALS}
        figures["top_products"] = [
            {**_named(str(item), names), "count": count}
            for item, count in cast("list[tuple[str, int]]", total.get("top_products", []))
        ]
    return {
        "day_start_ms": day,
        "day_end_ms": day_end,
        "slots": slots,
        "timezone": timezone,
        "open_hour_ms": current,
        "k": k,
        "hours": hours,
        "total": figures,
        "suppressed_hours": released.suppressed_hours,
    }


@dataclass(frozen=True, slots=True)
class Added:
    """A screen registered and waiting for its one-time pairing code."""

    id: int
    place: str
    kind: Kind
    code: str
    url: str
    expires_in_min: int


#: The place a gate screen is registered at: it shows the venue's gates, not one device's.
GATES = "gates"


def add_screen(settings: Settings, kind: Kind, place: str, label: str | None) -> Added:
    """Register a screen at a device (a till, a kiosk), in a zone, or (``kind`` gate, at
    `GATES`) at the venue's gates, and make its pairing code; a gate screen's address opens
    the gate page.

    Raises:
        StorageError: the database cannot be written.
    """
    with Store.open(settings.database, settings.store.synchronous) as store:
        screen_id, code = Screens(store).add(place, label or place, now_ms(), kind)
    page = "/gate" if kind == "gate" else "/"
    return Added(
        screen_id,
        place,
        kind,
        code,
        f"{settings.http.base_url()}{page}#pair={code}",
        PAIRING_TTL_MS // 60000,
    )


def registered(settings: Settings) -> list[Screen]:
    """Every screen registered, revoked ones included.

    Raises:
        StorageError: the database cannot be read.
    """
    with Store.open(settings.database, settings.store.synchronous) as store:
        return Screens(store).all()


def revoke(settings: Settings, screen_id: int) -> bool:
    """Lock a screen out at once; False when there is no such screen to revoke.

    Raises:
        StorageError: the database cannot be written.
    """
    with Store.open(settings.database, settings.store.synchronous) as store:
        return Screens(store).revoke(screen_id, now_ms())


def recommend(
    settings: Settings, user_id: str | None, basket: tuple[str, ...], k: int
) -> tuple[dict[str, list[Pick]], dict[str, str]]:
    """What a staff screen would show for a visitor (their raw ``userId``, pseudonymised at
    once) and a basket: the serving models' lists after the business rules, and why each
    list left empty is.

    Raises:
        StorageError: the database or a serving model cannot be read.
    """
    from edge_agent.serving.models import Models
    from edge_agent.serving.recommend import stocked_items

    visitor = pseudonym(keyfile.load_or_create(settings.site_key), user_id) if user_id else None
    with Store.open(settings.database, settings.store.synchronous) as store:
        sold = stocked_items(store, now_ms())[0]
        names = names_of(store.catalogue.names(), sold)
        recommender = Recommender(store, Models(store, settings.models_folder))
        available = frozenset(sold)
        lists = recommender.recommend(visitor, basket, k, available, names)
        return lists, why_missing(recommender.situation(visitor, basket, available), lists)
