"""Three agents of one venue on one real Mosquitto, each with its own database and devices:
their shared cells give every agent the view one agent would have of the whole venue; an
agent that stops is shown stale with its last cells kept, and fresh again once it is back."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.app.clock import now_ms
from edge_agent.app.venue import venue_today
from edge_agent.config import Settings, load_settings
from edge_agent.mqtt.broker import Mosquitto
from edge_agent.ops import keyfile
from edge_agent.store.database import Store
from tests.conftest import AgentProcess
from tests.helpers import SITE, Publisher, encode, ingest, query, topic, track, wait_for

VENUE = "expo"
SITES = ["hall-a", "hall-b", "hall-c"]
K = 5
#: Figures that are distinct counts (sketch estimates) or ratios over one.
DISTINCT = frozenset(
    {"visits", "visitors", "holders", "badges", "identified_share", "visit_conversion"}
)


def _env(site: str) -> dict[str, str]:
    return {
        "EDGE_AGENT_SITE__ID": site,
        "EDGE_AGENT_SITE__VENUE": VENUE,
        "EDGE_AGENT_MQTT__TOPIC": "sites/{site}/devices/+/events",
        "EDGE_AGENT_VENUE__SHARE": "true",
        "EDGE_AGENT_VENUE__SHARE_EVERY_S": "1",
        "EDGE_AGENT_VENUE__STALE_AFTER_S": "2",
        "EDGE_AGENT_INSIGHTS__K": str(K),
    }


def _events(n: int) -> list[tuple[str, dict[str, Any]]]:
    """Agent ``n``'s devices' events: (device, event). Visits of the door and the tickets
    recur at every agent (one person seen by several partitions), zone visits stay on one."""
    door, zones, gate, till = (f"{kind}-{n}" for kind in ("door", "zone", "gate", "till"))
    out: list[tuple[str, dict[str, Any]]] = []
    for v in range(12):
        shared, own, zone = f"visit-{v}", f"visit-{n}-{v}", {"zone": f"z{v % 3}"}
        scan = {"ticket_id": f"T-{v}", "gate": gate, **({"hall": "h1"} if n else {})}
        out += [
            (
                door,
                track("Door Counted", {"direction": "in", "count": 1}, door, anonymousId=shared),
            ),
            (zones, track("Zone Entered", zone, zones, anonymousId=own)),
            (zones, track("Zone Exited", zone, zones, anonymousId=own)),
            (gate, track("Ticket Scanned", scan, gate, anonymousId=shared)),
        ]
    product = {"product_id": "p1", "price": 5.0, "quantity": 1}
    order = {"order_id": f"o{n}", "total": 5.0, "currency": "EUR", "products": [product]}
    out.append((till, track("Order Completed", order, till, anonymousId=f"visit-{n}-0")))
    return out


def _view(settings: Settings) -> dict[str, Any]:
    with Store.open(settings.database, readonly=True) as store:
        return venue_today(store, settings.site, settings.venue, K, now_ms())


def _close(got: object, want: object, where: str = "") -> None:
    """``got`` equals ``want``, distinct counts within the sketches' error (3 % + 2)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        assert sorted(got) == sorted(want), where
        for key in want:
            _close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list), where
        assert len(got) == len(want), where
        for n, (g, w) in enumerate(zip(got, want, strict=True)):
            _close(g, w, f"{where}[{n}]")
    elif where.rsplit(".", 1)[-1] in DISTINCT and isinstance(want, int | float):
        assert isinstance(got, int | float), where
        assert abs(got - want) <= 0.03 * abs(want) + 2, (where, got, want)
    else:
        assert got == want, (where, got, want)


def _figures(view: dict[str, Any]) -> dict[str, Any]:
    return {k: view[k] for k in ("hours", "total", "suppressed_hours")}


def _agents(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["site"]: a for a in view["agents"]}


def _stored(settings: Settings, events: int) -> Callable[[], bool]:
    return lambda: query(settings.database, "SELECT count(*) FROM events")[0][0] == events


def _heard_all(settings: Settings, since_ms: int) -> Callable[[], bool]:
    """Whether ``settings``' agent holds a fresh share of every agent computed after
    ``since_ms``."""

    def check() -> bool:
        agents = _view(settings)["agents"]
        return len(agents) == len(SITES) and all(
            not a["stale"] and a["computed_ms"] > since_ms for a in agents
        )

    return check


def _stale(settings: Settings, site: str) -> Callable[[], bool]:
    return lambda: bool(_agents(_view(settings))[site]["stale"])


def test_three_agents_share_one_venue_view(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    # One key for the venue: a ticket scanned at two agents' gates is one pseudonym, so the
    # venue's distinct holders count it once.
    key = tmp_path / "venue.key"
    keyfile.load_or_create(key)
    agents, settings = [], []
    for site in SITES:
        agent = agent_factory(broker.port, env=_env(site))
        (agent.folder / "data").mkdir()
        shutil.copy(key, agent.folder / "data" / "site.key")
        agent.spawn(own_session=True)
        agents.append(agent)
        settings.append(load_settings(agent.config, environ=_env(site)))
    for agent in agents:
        agent.wait_log("broker_connected")
        agent.wait_log("venue_connected")

    streams = [_events(n) for n in range(len(SITES))]
    publisher = Publisher(broker.port)
    # A stranger on the venue's topics is refused by every agent, and changes nothing.
    publisher.publish(f"venues/{VENUE}/agents/rogue/today", b"not a share", retain=True)
    publisher.publish_all(
        (topic(device, site), encode(event))
        for site, stream in zip(SITES, streams, strict=True)
        for device, event in stream
    )
    for s, stream in zip(settings, streams, strict=True):
        wait_for(_stored(s, len(stream)), 15, f"{s.site.id} storing its devices' events")
    stored_ms = now_ms()

    # The one agent that got the whole stream.
    whole = load_settings(
        None, {"EDGE_AGENT_SITE__ID": SITE, "EDGE_AGENT_SITE__DATA_DIR": str(tmp_path / "whole")}
    )
    (tmp_path / "whole").mkdir()
    shutil.copy(key, whole.site_key)
    for stream in streams:
        for device, event in stream:
            assert ingest(whole, [event], device=device) == 0
    with Store.open(whole.database, readonly=True) as store:
        want: dict[str, Any] = venue_today(store, whole.site, whole.venue, K, now_ms())
    total: dict[str, Any] = want["total"]
    assert total["footfall_in"] == 36
    assert total["orders"] == 3

    for s in settings:
        wait_for(_heard_all(s, stored_ms), 15, f"{s.site.id} hearing every agent")
        _close(_figures(_view(s)), _figures(want), s.site.id)
    for agent in agents:
        assert agent.logged("venue_document_refused") >= 1

    # hall-c stops: the others show it stale and keep its cells.
    stopped, stopped_settings = agents[2], settings[2]
    assert stopped.stop() == 0
    for s in settings[:2]:
        wait_for(_stale(s, "hall-c"), 10, "hall-c shown stale")
        _close(_figures(_view(s)), _figures(want), f"{s.site.id} without hall-c")

    restarted_ms = now_ms()
    stopped.start_subscribed(own_session=True)
    for s in settings:
        wait_for(_heard_all(s, restarted_ms), 10, f"{s.site.id} hearing hall-c again")
        _close(_figures(_view(s)), _figures(want), f"{s.site.id} with hall-c back")
    assert _agents(_view(stopped_settings)).keys() == set(SITES)
    publisher.close()


def test_an_agent_with_another_site_key_is_refused_with_what_to_do(
    broker: Mosquitto, agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    # hall-a and hall-b hold the venue's key; hall-c was started without it and made its own,
    # so its people would be counted twice: the others refuse it and name the fix.
    key = tmp_path / "venue.key"
    keyfile.load_or_create(key)
    agents, settings = {}, {}
    for site in SITES:
        agent = agent_factory(broker.port, env=_env(site))
        if site != "hall-c":
            (agent.folder / "data").mkdir()
            shutil.copy(key, agent.folder / "data" / "site.key")
        agent.spawn(own_session=True)
        agents[site], settings[site] = agent, load_settings(agent.config, environ=_env(site))
    for site in ("hall-a", "hall-b"):
        agents[site].wait_log("venue_key_mismatch", timeout_s=15)
        log = agents[site].log_text()
        assert "copy the venue's site.key into the data folder of agent 'hall-c'" in log
        assert agents[site].logged("venue_key_mismatch") == 1  # said once, not every round
    agents["hall-c"].wait_log("venue_key_mismatch", 2, timeout_s=15)  # both others refused
    agents["hall-c"].wait_log("broker_connected")
    publisher = Publisher(broker.port)
    publisher.publish_all((topic(device, "hall-c"), encode(event)) for device, event in _events(2))
    wait_for(_stored(settings["hall-c"], len(_events(2))), 15, "hall-c storing its events")
    # hall-c shares its cells within a second: two rounds of hall-b later, they were refused.
    later = now_ms() + 2000

    def a_hears_b_only() -> bool:
        view = _view(settings["hall-a"])
        b = _agents(view).get("hall-b")
        return (
            set(_agents(view)) == {"hall-a", "hall-b"}
            and b is not None
            and b["computed_ms"] > later
            and [r["site"] for r in view["refused"]] == ["hall-c"]
        )

    wait_for(a_hears_b_only, 15, "hall-a taking hall-b and refusing hall-c")
    refused = _view(settings["hall-a"])["refused"][0]
    assert "another site key" in refused["reason"]
    assert not query(settings["hall-a"].database, "SELECT * FROM peer_cells WHERE site = 'hall-c'")
    assert agents["hall-a"].logged("venue_key_mismatch") == 1
    publisher.close()
